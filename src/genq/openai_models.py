"""Which genq functions the OpenAI-compatible API serves, under which model names, and
how an OpenAI request becomes the function's input.

A function stays a genq function (its queue, limits, batching, jobs and events are the
native API's); exposing it only names it for OpenAI clients and maps their request onto
its parameters. The routes that serve ``/v1`` are in ``genq.server.openai``; this module
is the declaration only, so an app declares its model names without importing the server.

    models = openai_models(app)
    models.chat("smollm2", chat, to_input=...)         # POST /v1/chat/completions, /v1/responses
    models.embeddings("minilm", embed)                 # POST /v1/embeddings
    models.images("fractal", render, to_input=...)     # POST /v1/images/generations

Default mappings (used when ``to_input`` is not given, checked at declaration):

* chat: the function takes ``messages`` (OpenAI's list of ``{"role", "content"}``, the
  content flattened to text); ``max_tokens``, ``temperature`` and ``stop`` are passed
  too when the function has parameters of those names and the request sets them.
* embeddings: the function has one required parameter; each input text is one job with
  that parameter set to the text (a batched function gets them batched).
* images: the function takes ``prompt``; ``size`` ("WxH") is passed as the side when
  the function has a ``size`` parameter and the image is square.

The registry is kept per ``App`` here rather than on ``App`` itself, so genq's core
knows nothing of OpenAI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from weakref import WeakKeyDictionary

from genq.app import App
from genq.functions import FunctionSpec

Kind = Literal["chat", "embeddings", "images"]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion (or a Responses call) as a function's mapping sees it."""

    messages: list[dict[str, str]]  # {"role", "content"}, the content as plain text
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    body: dict[str, Any] = field(default_factory=dict)  # the whole request, as sent


@dataclass(frozen=True, slots=True)
class ImageRequest:
    prompt: str
    size: tuple[int, int] | None = None  # (width, height) from "WxH"
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExposedModel:
    """One OpenAI model name: the function behind it and its request mapping."""

    name: str
    kind: Kind
    function: str
    to_input: Callable[[Any], dict[str, Any]]
    created: int = field(default_factory=lambda: int(time.time()))


class OpenAIModels:
    """An app's OpenAI model names (``openai_models(app)``)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.by_name: dict[str, ExposedModel] = {}

    def chat(self, name: str, function: str | Callable[..., Any], *,
             to_input: Callable[[ChatRequest], dict[str, Any]] | None = None) -> ExposedModel:
        """Serve a (streaming or not) text function as chat model ``name``."""
        spec = self._spec(function)
        return self._add(name, "chat", spec, to_input or _default_chat(spec))

    def embeddings(self, name: str, function: str | Callable[..., Any], *,
                   to_input: Callable[[str], dict[str, Any]] | None = None) -> ExposedModel:
        """Serve a function returning one vector (a list of floats) per text."""
        spec = self._spec(function)
        return self._add(name, "embeddings", spec, to_input or _default_embeddings(spec))

    def images(self, name: str, function: str | Callable[..., Any], *,
               to_input: Callable[[ImageRequest], dict[str, Any]] | None = None
               ) -> ExposedModel:
        """Serve a function returning one image (``genq.Image``, bytes or PIL)."""
        spec = self._spec(function)
        return self._add(name, "images", spec, to_input or _default_images(spec))

    def for_function(self, function: str) -> ExposedModel | None:
        """The first chat model name a function is exposed as (a response's ``model``)."""
        return next((m for m in self.by_name.values()
                     if m.function == function and m.kind == "chat"), None)

    def _spec(self, function: str | Callable[..., Any]) -> FunctionSpec:
        if isinstance(function, str):
            return self.app.get_function(function)
        for spec in self.app.functions.values():
            if spec.fn is function:
                return spec
        raise ValueError(f"{getattr(function, '__name__', function)!r} is not a function of "
                         "this app: declare it with @app.function first")

    def _add(self, name: str, kind: Kind, spec: FunctionSpec,
             to_input: Callable[[Any], dict[str, Any]]) -> ExposedModel:
        if not name or name in self.by_name:
            raise ValueError(f"OpenAI model name {name!r} is empty or already declared")
        model = ExposedModel(name, kind, spec.name, to_input)
        self.by_name[name] = model
        return model


_REGISTRY: WeakKeyDictionary[App, OpenAIModels] = WeakKeyDictionary()


def openai_models(app: App) -> OpenAIModels:
    """The app's OpenAI model names, created empty on first use."""
    models = _REGISTRY.get(app)
    if models is None:
        models = _REGISTRY[app] = OpenAIModels(app)
    return models


def split_turns(messages: list[dict[str, str]]) -> tuple[str, list[tuple[str, str]], str]:
    """(the last user message, the earlier [user, assistant] pairs, the system text):
    what a function taking ``(message, history)`` in the Gradio style wants. A user turn
    without a reply pairs with ""; system messages are joined into the third value."""
    system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the last message must be the user's")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for turn in turns[:-1]:
        if turn["role"] == "user":
            if pending is not None:
                pairs.append((pending, ""))
            pending = turn["content"]
        else:
            pairs.append((pending or "", turn["content"]))
            pending = None
    if pending is not None:
        pairs.append((pending, ""))
    return turns[-1]["content"], pairs, system


def _params(spec: FunctionSpec) -> dict[str, bool]:
    """The function's input parameters, each with whether it is required."""
    return {name: info.is_required() for name, info in spec.input_model.model_fields.items()}


def _default_chat(spec: FunctionSpec) -> Callable[[ChatRequest], dict[str, Any]]:
    params = _params(spec)
    if "messages" not in params:
        raise ValueError(f"{spec.name} takes no 'messages' parameter: pass to_input= to map "
                         "a chat request onto its parameters")

    def to_input(request: ChatRequest) -> dict[str, Any]:
        data: dict[str, Any] = {"messages": request.messages}
        for name, value in (("max_tokens", request.max_tokens),
                            ("temperature", request.temperature),
                            ("stop", list(request.stop) or None)):
            if name in params and value is not None:
                data[name] = value
        return data

    return to_input


def _default_embeddings(spec: FunctionSpec) -> Callable[[str], dict[str, Any]]:
    required = [name for name, needed in _params(spec).items() if needed]
    if len(required) != 1:
        raise ValueError(f"{spec.name} must have exactly one required parameter (the text) "
                         "to serve embeddings without to_input=")
    return lambda text: {required[0]: text}


def _default_images(spec: FunctionSpec) -> Callable[[ImageRequest], dict[str, Any]]:
    params = _params(spec)
    if "prompt" not in params:
        raise ValueError(f"{spec.name} takes no 'prompt' parameter: pass to_input= to map "
                         "an image request onto its parameters")

    def to_input(request: ImageRequest) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt": request.prompt}
        if "size" in params and request.size and request.size[0] == request.size[1]:
            data["size"] = request.size[0]
        return data

    return to_input
