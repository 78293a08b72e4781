"""Gradio adapter (``pip install 'genq[gradio]'``): run genq jobs behind a Gradio UI.

``as_gradio(client, "render", inputs=["prompt", "size"])`` turns a genq function into a
function Gradio can call. Each call submits a job, relays its events into
``gr.Progress`` (queue position, fraction, description, counts) and yields partial
outputs as chunks arrive: the accumulated text for text chunks (what a ``gr.Textbox`` or
``gr.ChatInterface`` wants), the latest chunk otherwise (an image per step), then the
result. Binary results (``genq.Image``, ``genq.File``) become file paths in the temp
directory, which every Gradio media component accepts.

``client`` is any genq client: a ``genq.Client`` (``with app.local()`` or
``genq.Client(url)``; used from worker threads, so any loop may call it), a
``genq.AsyncClient`` (``async with app.local()`` or ``genq.AsyncClient(url)``) that
belongs to the loop Gradio runs on (for instance created in the lifespan of the app you
mount Gradio into), or a server URL.

The job belongs to genq, not to the Gradio connection
------------------------------------------------------
What happens, each tested in a real browser (tests/adapters/test_gradio_browser.py):

* **Reload** (or a tab that comes back): the new page's ``fn.resume`` (wire it to
  ``demo.load``) finds the visitor's job and follows its log from the start, replaying
  what was missed, then streams live to the end. Its progress text says how old the
  job is (``· job age 42 s``, refreshed every second), since Gradio's own timer counts
  from the page load. The job itself never noticed the reload.
* **Stop**: ``fn.cancel`` (wire it to a Stop button; ``chat_interface`` wires the
  chat's own stop button, shown while a resumed reply streams too) cancels the
  visitor's remembered job, also from a reloaded page, and forgets it (a later reload
  has nothing to resume). The page following the job then ends with a ``gr.Error``
  titled "Cancelled", shown until closed (what was streamed stays on screen).
* **A page that goes away** (closed tab, reload, navigation) does **not** cancel its
  job: it runs on, its event log keeps everything. The Gradio call that page made stops
  following at once (Gradio's ``unload`` event tells the adapter), so it gives back its
  slot in Gradio's queue: a new Run is not held up behind a call nobody watches.

The adapter remembers the latest job of each *visitor* (``memory``, in this process).
Who is a visitor, i.e. the key jobs are remembered under (``key=`` overrides it):

1. the logged-in user (``request.username``), when the app uses auth;
2. else the ``genq_session`` cookie, set once per browser by a little JS run on page
   load; a reload keeps it;
3. else Gradio's ``session_hash``, which lasts one page load: a dropped connection is
   still survived by the job, but a reload cannot find it again.

Nothing to set up for this: ``as_gradio`` called inside ``with gr.Blocks() as demo:``
(and ``chat_interface``) adds the cookie JS and the ``unload`` watch to ``demo``
itself, once. An adapter made outside any Blocks needs ``remember_visitors(demo)``.

``iterate_in_thread`` is re-exported here for people who only want the streaming fix:
``async for piece in iterate_in_thread(blocking_generator())`` inside an ``async def``
Gradio function streams each item as it is produced while the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

import anyio
import anyio.to_thread

from genq.bridge import iterate_in_thread
from genq.client import Artifact, AsyncClient, Client
from genq.client.attempts import AttemptWatch
from genq.errors import GenqError, JobCancelled, JobExpired, JobFailed
from genq.models import Event, EventType

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["SESSION_COOKIE", "SESSION_JS", "GradioFunction", "JobMemory", "as_gradio",
           "chat_interface", "history_pairs", "iterate_in_thread", "remember_visitors"]

SESSION_COOKIE = "genq_session"
# Run on page load (installed by ``remember_visitors``): gives this
# browser a random id in a cookie, sent with every request Gradio makes, reloads included.
SESSION_JS = """() => {
  const name = "genq_session";
  if (!document.cookie.split("; ").some((c) => c.startsWith(name + "="))) {
    const id = (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
      : Math.random().toString(36).slice(2) + Date.now().toString(36);
    document.cookie = name + "=" + id + "; path=/; max-age=31536000; SameSite=Lax";
  }
}"""

T = TypeVar("T")
_PROGRESS_EVENTS = frozenset({EventType.QUEUED, EventType.STARTED, EventType.RETRYING,
                              EventType.PROGRESS})
Stream = Literal["auto", "accumulate", "latest"]
KeyFn = Callable[[Any], "str | None"]


# -- remembered jobs ----------------------------------------------------------------------
@dataclass(slots=True)
class Remembered:
    """The latest job a visitor started through one adapted function."""

    job_id: str
    function: str
    inputs: dict[str, Any] = field(default_factory=dict)
    # this submission's own hold on the job: Stop lets go of it alone, so a visitor whose
    # identical submission joined another's job (dedupe) never cancels theirs
    ticket: str | None = None


class JobMemory:
    """visitor key -> their latest job, per adapted function; bounded (oldest dropped).

    In the Gradio server's memory: the jobs themselves are durable in genq, this only
    lets a returning visitor find theirs. Share one between adapters if you like.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._jobs: OrderedDict[tuple[str, str], Remembered] = OrderedDict()

    def remember(self, key: str, entry: Remembered) -> None:
        self._jobs[(key, entry.function)] = entry
        self._jobs.move_to_end((key, entry.function))
        while len(self._jobs) > self.max_entries:
            self._jobs.popitem(last=False)

    def get(self, key: str, function: str) -> Remembered | None:
        return self._jobs.get((key, function))

    def forget(self, key: str, function: str) -> None:
        self._jobs.pop((key, function), None)

    def __len__(self) -> int:
        return len(self._jobs)


def default_key(request: Any) -> str | None:
    """The visitor's key: logged-in user, else the ``genq_session`` cookie, else the
    page's session hash (see the module docs)."""
    if request is None:
        return None
    username = getattr(request, "username", None)
    if username:
        return f"user:{username}"
    with contextlib.suppress(Exception):
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return f"cookie:{cookie}"
    session = getattr(request, "session_hash", None)
    return f"session:{session}" if session else None


class _Pages:
    """Gradio pages (session hashes) following a job, and a way to stop them: set when
    Gradio's ``unload`` event says the page went away. One per process: session hashes
    are unique, and a Blocks may hold several adapters."""

    def __init__(self) -> None:
        self._gone: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watching(self, session: str | None) -> Iterator[asyncio.Event]:
        gone = asyncio.Event()
        if session is None:
            yield gone
            return
        self._gone.setdefault(session, set()).add(gone)
        try:
            yield gone
        finally:
            watchers = self._gone.get(session)
            if watchers is not None:
                watchers.discard(gone)
                if not watchers:
                    del self._gone[session]

    def closed(self, session: str | None) -> None:
        for gone in self._gone.get(session or "", ()):
            gone.set()


_PAGES = _Pages()
_INSTALLED: weakref.WeakSet[Any] = weakref.WeakSet()


async def _page_closed(request: gr.Request) -> None:
    """Gradio's ``unload`` event: the page's calls stop following (their jobs run on)."""
    _PAGES.closed(getattr(request, "session_hash", None))


def remember_visitors(blocks: gr.Blocks) -> gr.Blocks:
    """Set ``blocks`` up for the adapters in it (once; ``as_gradio`` inside a Blocks and
    ``chat_interface`` do it themselves): each browser gets a lasting ``genq_session``
    cookie (set on page load by JS), so ``fn.resume`` and ``fn.cancel`` find a visitor's
    job after a reload; and a page that goes away (Gradio's ``unload``) ends the calls it
    made, so they free their slots in Gradio's queue. Returns ``blocks``."""
    import gradio as gr

    if blocks in _INSTALLED:
        return blocks
    # Gradio passes the request to a parameter annotated with the class itself.
    _page_closed.__annotations__ = {"request": gr.Request, "return": None}
    # Entered only when not being built already: entering a Blocks inside its own
    # ``with`` renders its children a second time.
    building = _current_blocks() is blocks
    with contextlib.nullcontext() if building else blocks:
        blocks.load(None, None, None, js=SESSION_JS)
        blocks.unload(_page_closed)
    _INSTALLED.add(blocks)
    return blocks


def _current_blocks() -> gr.Blocks | None:
    """The Blocks being built (``with gr.Blocks() as demo:``), if any."""
    from gradio.context import Context

    return Context.root_block


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncGenerator[AsyncIterator[T], None]:
    """Close an async generator when the block ends: a nested generator is otherwise
    left to the garbage collector when its consumer is closed (as Gradio closes ours)."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


_TICK = object()  # ``_until_gone`` waited ``tick`` seconds without an event


async def _until_gone(events: AsyncIterator[T], gone: asyncio.Event,
                      tick: float | None = None) -> AsyncIterator[T | object]:
    """``events`` until the page goes away (``gone``), and ``_TICK`` every ``tick`` s
    without one. ``events`` is iterated in a task of its own, start to end, so waiting
    for the next one can be abandoned the moment the page goes: a Gradio generator
    otherwise only learns that at its next yield, which may be minutes away."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async with _closing(events) as source:
                async for event in source:
                    await queue.put((True, event))
        except Exception as exc:  # re-raised on the consuming side
            await queue.put((False, exc))
        else:
            await queue.put((False, None))

    producer = asyncio.ensure_future(pump())
    page_gone: asyncio.Future[Any] = asyncio.ensure_future(gone.wait())
    getter: asyncio.Future[Any] | None = None
    try:
        while True:
            if getter is None:
                getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, page_gone}, timeout=tick,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                more, value = getter.result()
                getter = None
                if not more:
                    if value is not None:
                        raise value
                    return
                yield value
            elif page_gone in done:
                return
            else:
                yield _TICK
    finally:
        for task in (getter, page_gone, producer):
            if task is not None:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


# -- the transports -----------------------------------------------------------------------
class _Backend(Protocol):
    async def submit(self, function: str, data: dict[str, Any]) -> tuple[str, str | None]:
        """The new job's id and this submission's ticket."""

    def events(self, job_id: str, after: int) -> AsyncIterator[Event]: ...

    async def outcome(self, job_id: str) -> Any: ...

    async def cancel(self, job_id: str, ticket: str | None) -> None: ...


class _AsyncBackend:
    """An async genq client on the loop Gradio runs on."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def submit(self, function: str, data: dict[str, Any]) -> tuple[str, str | None]:
        job = await self.client.submit(function, data)
        return job.id, job.ticket

    def events(self, job_id: str, after: int) -> AsyncIterator[Event]:
        return self.client.job(job_id).events(after)

    async def outcome(self, job_id: str) -> Any:
        return await self.client.result(job_id)

    async def cancel(self, job_id: str, ticket: str | None) -> None:
        await self.client.cancel(job_id, ticket=ticket)


class _ThreadBackend:
    """A sync genq client (its own loop in a thread), called from worker threads so the
    Gradio loop never blocks; events cross over through ``iterate_in_thread``."""

    def __init__(self, client: Client | Callable[[], Client]) -> None:
        self._client = client if isinstance(client, Client) else None
        self._make = None if isinstance(client, Client) else client

    @property
    def client(self) -> Client:
        if self._client is None:
            assert self._make is not None
            self._client = self._make()
        return self._client

    async def submit(self, function: str, data: dict[str, Any]) -> tuple[str, str | None]:
        job = await anyio.to_thread.run_sync(lambda: self.client.submit(function, data))
        return job.id, job.ticket

    async def events(self, job_id: str, after: int) -> AsyncIterator[Event]:
        client = await anyio.to_thread.run_sync(lambda: self.client)
        async with _closing(iterate_in_thread(client.job(job_id).events(after))
                                       ) as events:
            async for event in events:
                yield event

    async def outcome(self, job_id: str) -> Any:
        return await anyio.to_thread.run_sync(self.client.result, job_id)

    async def cancel(self, job_id: str, ticket: str | None) -> None:
        await anyio.to_thread.run_sync(lambda: self.client.cancel(job_id, ticket=ticket))


def _backend(client: AsyncClient | Client | str) -> _Backend:
    if isinstance(client, AsyncClient):
        return _AsyncBackend(client)
    if isinstance(client, Client):
        return _ThreadBackend(client)
    if isinstance(client, str):
        url = client

        def connect() -> Client:
            return Client(url)

        return _ThreadBackend(connect)
    raise TypeError(f"expected a genq client or a server URL, got {type(client).__name__}")


# -- conversions --------------------------------------------------------------------------
def history_pairs(history: Sequence[Any] | None) -> list[list[str]]:
    """Gradio chat history (openai-style message dicts, or legacy [user, bot] pairs) as
    ``[[user, assistant], ...]``, the history format of genq's chat functions."""
    pairs: list[list[str]] = []
    for item in history or []:
        if isinstance(item, (list, tuple)):
            user, bot = [*item, None, None][:2]
            pairs.append([_text(user), _text(bot)])
            continue
        if isinstance(item, Mapping):
            role, text = item.get("role"), _text(item.get("content"))
        else:  # gr.ChatMessage and the like
            role, text = getattr(item, "role", None), _text(getattr(item, "content", None))
        if role == "user":
            pairs.append([text, ""])
        elif role == "assistant":
            if pairs and not pairs[-1][1]:
                pairs[-1][1] = text
            else:
                pairs.append(["", text])
    return pairs


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(_text(part) for part in content)
    return str(content)


def _to_gradio(value: Any) -> Any:
    """Artifacts become files in the temp directory (a path is what media components
    take); containers are converted item by item."""
    if isinstance(value, Artifact):
        folder = Path(tempfile.gettempdir()) / "genq-gradio" / value.ref.id
        target = folder / (Path(value.name).name or "artifact")
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(value.data)
            partial.replace(target)
        return str(target)
    if isinstance(value, list):
        return [_to_gradio(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_gradio(v) for k, v in value.items()}
    return value


def _relay_progress(progress: Any, event: Event, note: str | None = None) -> None:
    """One genq event into ``gr.Progress`` (a no-op outside a Gradio event), its
    description followed by ``note`` if given."""
    if progress is None:
        return
    data = event.data
    desc: str | None = None
    value: Any = 0.0
    unit = "steps"
    if event.type is EventType.QUEUED:
        position = data.get("position")
        desc = "queued" if position is None else f"queued (position {position})"
    elif event.type is EventType.STARTED:
        desc = "started"
    elif event.type is EventType.RETRYING:
        desc = f"retrying (attempt {data.get('next_attempt')})"
    elif event.type is EventType.PROGRESS:
        desc = data.get("description")
        current, total = data.get("current"), data.get("total")
        if current is not None and total:
            value, unit = (int(current), int(total)), data.get("unit") or "steps"
        else:
            value = data.get("fraction")
    else:
        return
    if note:
        desc = f"{desc} · {note}" if desc else note
    if isinstance(value, tuple):
        progress(value, desc=desc, unit=unit)
    else:
        progress(value, desc=desc)


def _age_note(since: float | None) -> str | None:
    """How old the job is, for a page that picked it up after it started."""
    if since is None:
        return None
    return f"job age {max(0, round(time.time() - since))} s"


# -- the adapter --------------------------------------------------------------------------
class GradioFunction(Protocol):
    """What ``as_gradio`` returns: a Gradio event function plus its hooks."""

    __name__: str
    function: str
    memory: JobMemory

    def __call__(self, *args: Any) -> AsyncIterator[Any]: ...

    # ``cancel(request)``: cancel the visitor's remembered job (a Stop button's handler).
    cancel: Callable[..., Awaitable[None]]
    # ``resume(request, progress)``: follow the visitor's remembered job from its start.
    resume: Callable[..., AsyncIterator[Any]]
    # ``resume_chat(request, progress)``: the same, as a whole chat history for a Chatbot.
    resume_chat: Callable[..., AsyncIterator[Any]]


def as_gradio(client: AsyncClient | Client | str, function: str, *,
              inputs: Sequence[str] | None = None, chat: bool = False,
              stream: Stream = "auto", transform: Callable[[Any], Any] | None = None,
              key: KeyFn | None = None, memory: JobMemory | None = None) -> GradioFunction:
    """A Gradio function (an async generator) that runs ``function`` as a genq job.

    ``inputs`` names the genq parameters that the Gradio input components fill, in
    order. ``chat=True`` makes it a ``gr.ChatInterface`` function: ``(message, history,
    *inputs)`` with the history converted to ``[[user, assistant], ...]`` pairs.
    ``stream``: "accumulate" yields the text so far, "latest" each chunk as it is,
    "auto" accumulates text chunks and passes others through. ``transform`` maps every
    value before Gradio sees it (e.g. to fill several outputs). ``key`` and ``memory``:
    see the module docs. The returned function has ``cancel``, ``resume`` and
    ``resume_chat`` hooks for Stop buttons and ``demo.load``. Called inside ``with
    gr.Blocks() as demo:``, it sets ``demo`` up with ``remember_visitors``.
    """
    import gradio as gr

    backend = _backend(client)
    jobs = memory if memory is not None else JobMemory()
    key_of = key or default_key
    names = (["message", "history", *(inputs or [])] if chat else list(inputs or []))
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise ValueError(f"inputs must be distinct parameter names, got {names}")
    finish = transform or (lambda value: value)
    blocks = _current_blocks()
    if blocks is not None:  # made inside ``with gr.Blocks()``: set that Blocks up
        remember_visitors(blocks)

    async def follow(job_id: str, progress: Any, request: Any, *,
                     resumed: bool = False) -> AsyncIterator[Any]:
        """Outputs of one job: partial values as chunks arrive, then the result. When the
        job starts over after output, the accumulated text starts over too (shown
        empty at once), as the web UI does: it is never the lost run's text plus the
        new run's. Ends early, quietly, when the page goes away (the job runs on); a
        resumed page's progress notes the job's age, refreshed every second."""
        text: list[str] = []
        streamed = False
        last: Any = None
        shown: Event | None = None  # the last event relayed to the progress bar
        since: float | None = None  # the job's first event: when it was submitted
        attempts = AttemptWatch()
        session = getattr(request, "session_hash", None)
        with _PAGES.watching(session) as gone:
            async with _closing(_until_gone(backend.events(job_id, 0), gone,
                                            tick=1.0 if resumed else None)) as events:
                async for item in events:
                    if not isinstance(item, Event):  # a tick: the job is a second older
                        if shown is not None:
                            _relay_progress(progress, shown, _age_note(since))
                        continue
                    event = item
                    if since is None and resumed:
                        since = event.ts
                    restart = attempts.see(event)
                    if restart is not None:
                        if progress is not None:
                            progress(0.0, desc=restart.notice)
                        if text:
                            text.clear()
                            last = ""
                            yield finish(last)
                    elif event.type is EventType.OUTPUT:
                        chunk = event.data.get("chunk")
                        if stream == "accumulate" or (stream == "auto"
                                                      and isinstance(chunk, str)):
                            text.append(chunk if isinstance(chunk, str) else str(chunk))
                            last = "".join(text)
                        else:
                            last = _to_gradio(await _decode(backend, chunk))
                        streamed = True
                        yield finish(last)
                    elif event.type in _PROGRESS_EVENTS:
                        shown = event
                        _relay_progress(progress, event, _age_note(since))
                    if event.terminal:
                        break
                else:
                    if gone.is_set():
                        return  # the page went away: its job runs on
        try:
            result = await backend.outcome(job_id)
        except JobCancelled:
            # Someone pressed Stop: what was streamed stays on screen, and the page says
            # why it ends here.
            raise gr.Error(f"The {function} job was cancelled.", title="Cancelled",
                           duration=None, print_exception=False) from None
        except (JobFailed, JobExpired) as exc:
            raise gr.Error(exc.message) from None
        if not streamed or (not isinstance(result, list) and result != last):
            yield finish(_to_gradio(result))

    async def run(*args: Any) -> AsyncIterator[Any]:
        values, request, progress = args[:-2], args[-2], args[-1]
        if len(values) != len(names):
            raise ValueError(f"{function}: Gradio passed {len(values)} input values for "
                             f"{len(names)} names {names}; check inputs=")
        data = dict(zip(names, values, strict=True))
        if chat:
            data["history"] = history_pairs(data.get("history"))
        try:
            job_id, ticket = await backend.submit(function, data)
        except GenqError as exc:  # invalid input, queue full...: shown in the UI
            raise gr.Error(exc.message) from None
        visitor = key_of(request)
        if visitor is not None:
            jobs.remember(visitor, Remembered(job_id, function, data, ticket))
        # No cancel on the way out: if Gradio closes this generator (connection reset,
        # reload, its own cancel) or the page goes away, the job runs on and ``resume``
        # can pick it up.
        async with _closing(follow(job_id, progress, request)) as outputs:
            async for value in outputs:
                yield value

    async def cancel(gradio_request: gr.Request) -> None:
        visitor = key_of(gradio_request)
        entry = jobs.get(visitor, function) if visitor is not None else None
        if visitor is None or entry is None:
            return
        # Forgotten too: a later reload has nothing to resume (rather than the cancelled
        # job's "Cancelled" again).
        jobs.forget(visitor, function)
        with contextlib.suppress(Exception):
            await backend.cancel(entry.job_id, entry.ticket)

    async def resume(gradio_request: gr.Request,
                     gradio_progress: gr.Progress = gr.Progress()) -> AsyncIterator[Any]:
        """Follow the visitor's remembered job, if any, from its first event."""
        visitor = key_of(gradio_request)
        entry = jobs.get(visitor, function) if visitor is not None else None
        if entry is None:
            # Outputs left as they are: a generator that yields nothing empties them,
            # and the page may have been used already (a message typed, say).
            yield gr.skip()
            return
        async with _closing(follow(entry.job_id, gradio_progress, gradio_request,
                                   resumed=True)) as values:
            async for value in values:
                yield value

    async def resume_chat(gradio_request: gr.Request,
                          gradio_progress: gr.Progress = gr.Progress()
                          ) -> AsyncIterator[Any]:
        """``resume`` for a Chatbot: the remembered conversation, its reply growing (twice:
        for the Chatbot and for the ChatInterface's history state)."""
        visitor = key_of(gradio_request)
        entry = jobs.get(visitor, function) if visitor is not None else None
        if entry is None:
            yield gr.skip(), gr.skip()  # left as they are, as in ``resume``
            return
        before: list[dict[str, Any]] = []
        for user, bot in entry.inputs.get("history") or []:
            if user:
                before.append({"role": "user", "content": user})
            if bot:
                before.append({"role": "assistant", "content": bot})
        before.append({"role": "user", "content": str(entry.inputs.get("message", ""))})
        async with _closing(follow(entry.job_id, gradio_progress, gradio_request,
                                   resumed=True)) as values:
            async for value in values:
                conversation = [*before, {"role": "assistant", "content": value}]
                yield conversation, conversation

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    params += [
        inspect.Parameter("gradio_request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=gr.Request),
        inspect.Parameter("gradio_progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          default=gr.Progress()),
    ]
    # Gradio reads the signature to pass the inputs, the request and a progress tracker.
    fn: Any = run
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {"gradio_request": gr.Request}
    fn.__name__ = fn.__qualname__ = function
    fn.__doc__ = f"Run the genq function {function!r} as a job and stream its outputs."
    cancel.__annotations__ = {"gradio_request": gr.Request, "return": None}
    for hook in (resume, resume_chat):
        hook.__annotations__ = {"gradio_request": gr.Request}
    fn.function = function
    fn.memory = jobs
    fn.cancel = cancel
    fn.resume = resume
    fn.resume_chat = resume_chat
    return cast(GradioFunction, fn)


async def _decode(backend: _Backend, chunk: Any) -> Any:
    """A stored chunk as the client API returns it (artifact references fetched)."""
    if isinstance(backend, _AsyncBackend):
        return await backend.client.decode(chunk)
    if isinstance(backend, _ThreadBackend):
        client = backend.client
        return await anyio.to_thread.run_sync(client.decode, chunk)
    return chunk


def chat_interface(client: AsyncClient | Client | str, function: str = "chat", *,
                   inputs: Sequence[str] | None = None, key: KeyFn | None = None,
                   memory: JobMemory | None = None, **chat_options: Any) -> gr.ChatInterface:
    """A ``gr.ChatInterface`` over a genq chat function (``message``, ``history`` as
    ``[[user, assistant], ...]``, then ``inputs`` from ``additional_inputs``).

    Its stop button cancels the job; the reply survives dropped connections; a reload
    (with auth or the ``genq_session`` cookie set up here) shows the conversation and
    its reply, still streaming if it is, with the stop button shown until it ends.
    ``chat_options`` go to ``gr.ChatInterface``.
    """
    import gradio as gr

    fn = as_gradio(client, function, inputs=inputs, chat=True, key=key, memory=memory)
    chat_options.setdefault("api_name", function)
    demo = gr.ChatInterface(fn, **chat_options)
    textbox = demo.textbox
    # What ChatInterface shows while its own reply streams, and after it.
    streaming: dict[str, Any] = {"submit_btn": False, "stop_btn": demo.original_stop_btn}
    idle: dict[str, Any] = {"submit_btn": textbox.submit_btn, "stop_btn": False}

    async def resume_chat(gradio_request: gr.Request,
                          gradio_progress: gr.Progress = gr.Progress()
                          ) -> AsyncIterator[Any]:
        """``fn.resume_chat``, with the stop button shown while the reply streams."""
        last: tuple[Any, Any] | None = None
        try:
            async with _closing(fn.resume_chat(gradio_request, gradio_progress)) as values:
                async for chatbot, state in values:
                    if last is None and chatbot == gr.skip():  # nothing to resume
                        yield gr.skip()
                        return
                    update = gr.skip() if last is not None else gr.update(**streaming)
                    last = chatbot, state
                    yield chatbot, state, update
        except gr.Error:  # cancelled or failed: the send button comes back, then the error
            if last is not None:
                yield *last, gr.update(**idle)
            raise
        if last is not None:
            yield *last, gr.update(**idle)

    resume_chat.__annotations__ = {"gradio_request": gr.Request}
    with demo:
        textbox.stop(fn.cancel, None, None, api_name=f"{function}_cancel")
        demo.load(resume_chat, None, [demo.chatbot, demo.chatbot_state, textbox],
                  api_name=f"{function}_resume")
    demo.genq_function = fn  # type: ignore[attr-defined,unused-ignore]
    remember_visitors(demo)
    return demo
