"""OpenAI request bodies checked and turned into what a model's mapping takes.

Each check names the field it refuses (OpenAI's ``param``), so a client learns which
of its arguments genq cannot serve rather than getting a silently different answer.
"""

from __future__ import annotations

import math
from typing import Any

from genq.openai_models import ChatRequest, ExposedModel, ImageRequest, Kind, openai_models
from genq.server.openai.access import OpenAIError

MAX_STOP = 4  # OpenAI's own limit on stop sequences


def bad(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, message, code="invalid_value", param=param)


def model_for(state_app: Any, body: dict[str, Any], kind: Kind) -> ExposedModel:
    """The exposed model the body names, of this kind; 404 ``model_not_found`` else."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise OpenAIError(400, "'model' is required: one of GET /v1/models", code="missing",
                          param="model")
    model = openai_models(state_app).by_name.get(name)
    if model is None or model.kind != kind:
        known = [m.name for m in openai_models(state_app).by_name.values() if m.kind == kind]
        raise OpenAIError(404, f"The model '{name}' does not exist or is not a {kind} model "
                          f"here (known: {', '.join(known) or 'none'})",
                          code="model_not_found", param="model")
    return model


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in (
                    "text", "input_text", "output_text") or not isinstance(part.get("text"), str):
                raise bad(where, "only text content is supported (parts of type 'text')")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(where, "a message's content must be a string or a list of text parts")


def messages_of(raw: Any, param: str = "messages") -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise bad(param, f"'{param}' must be a non-empty list of messages")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in (
                "system", "developer", "user", "assistant"):
            raise bad(f"{param}[{i}]", "each message needs a role of system, developer, "
                      "user or assistant (tool messages are not supported)")
        messages.append({"role": m["role"], "content": _text(m.get("content", ""),
                                                             f"{param}[{i}].content")})
    return messages


def _optional_int(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise bad(name, f"'{name}' must be an integer of at least {low}")
    return value


def _temperature(body: dict[str, Any]) -> float | None:
    value = body.get("temperature")
    if value is None:
        return None
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or not 0 <= value <= 2):
        raise bad("temperature", "'temperature' must be a number between 0 and 2")
    return float(value)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (not isinstance(stops, list) or len(stops) > MAX_STOP
            or not all(isinstance(s, str) and s for s in stops)):
        raise bad("stop", f"'stop' must be a non-empty string or a list of up to {MAX_STOP}")
    return tuple(stops)


def _n(body: dict[str, Any], most: int) -> int:
    n = _optional_int(body, "n", 1)
    if n is not None and n > most:
        raise bad("n", f"'n' must be at most {most} here")
    return n or 1


def chat_request(body: dict[str, Any]) -> ChatRequest:
    """A /v1/chat/completions body; refuses what genq does not serve (tools, n > 1)."""
    for unsupported in ("tools", "functions", "tool_choice", "response_format", "audio",
                        "logprobs", "prediction"):
        if body.get(unsupported) not in (None, False, [], {"type": "text"}):
            raise bad(unsupported, f"'{unsupported}' is not supported by genq's chat models")
    _n(body, 1)
    max_tokens = _optional_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens", 1)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad("stream_options", "'stream_options' must be an object")
    return ChatRequest(messages_of(body.get("messages")), max_tokens, _temperature(body),
                       _stop(body), body)


def responses_request(body: dict[str, Any]) -> ChatRequest:
    """A /v1/responses body: ``input`` (text or messages) after ``instructions``."""
    for unsupported in ("tools", "tool_choice", "previous_response_id", "conversation",
                        "reasoning", "prompt"):
        if body.get(unsupported) not in (None, [], "auto", "none"):
            raise bad(unsupported, f"'{unsupported}' is not supported by genq's responses")
    raw = body.get("input")
    if isinstance(raw, str):
        if not raw:
            raise bad("input", "'input' must not be empty")
        messages = [{"role": "user", "content": raw}]
    else:
        messages = messages_of(raw, "input")
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise bad("instructions", "'instructions' must be a string")
        messages.insert(0, {"role": "system", "content": instructions})
    return ChatRequest(messages, _optional_int(body, "max_output_tokens", 1),
                       _temperature(body), (), body)


def image_request(body: dict[str, Any], most: int) -> tuple[ImageRequest, int]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise bad("prompt", "'prompt' must be a non-empty string")
    size = body.get("size")
    dims = None
    if size not in (None, "auto"):
        try:
            width, height = (int(x) for x in str(size).lower().split("x"))
        except ValueError:
            raise bad("size", "'size' must be 'WIDTHxHEIGHT', such as '256x256'") from None
        dims = (width, height)
    if body.get("response_format") not in (None, "b64_json", "url"):
        raise bad("response_format", "'response_format' must be 'b64_json' or 'url'")
    return ImageRequest(prompt, dims, body), _n(body, most)


def embedding_inputs(body: dict[str, Any], most: int) -> list[str]:
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad("input", "'input' must be a string or a non-empty list of strings "
                  "(token arrays are not supported)")
    if len(texts) > most:
        raise bad("input", f"at most {most} inputs per request")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise bad("encoding_format", "'encoding_format' must be 'float' or 'base64'")
    if body.get("dimensions") is not None:
        raise bad("dimensions", "'dimensions' is not supported: the model's vectors are "
                  "returned whole")
    return texts
