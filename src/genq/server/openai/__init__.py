"""genq's OpenAI-compatible API under ``/v1``: chat completions, Responses (with
background responses resumable from a sequence number), embeddings, images and the
model list, over the same job service, keys and rate limits as the native API.

Which functions it serves, and under which model names, is declared with
``genq.openai_models`` (docs/openai.md). The package is ``genq.server.openai``, never a
top-level ``genq.openai``, so it is not confused with the ``openai`` SDK.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from genq.openai_models import ExposedModel, openai_models
from genq.server.caller import authenticate
from genq.server.openai.access import (
    OpenAIError,
    json_response,
    openai_endpoint,
)
from genq.server.openai.chat import chat_completions
from genq.server.openai.media import embeddings, image_generations
from genq.server.openai.responses import cancel_response, create_response, get_response


def _entry(model: ExposedModel) -> dict[str, object]:
    return {"id": model.name, "object": "model", "created": model.created,
            "owned_by": "genq", "genq": {"function": model.function, "kind": model.kind}}


@openai_endpoint
async def list_models(request: Request) -> Response:
    state, _ = authenticate(request)
    return json_response({"object": "list", "data": [
        _entry(m) for m in openai_models(state.app).by_name.values()]})


@openai_endpoint
async def get_model(request: Request) -> Response:
    state, _ = authenticate(request)
    name = request.path_params["model"]
    model = openai_models(state.app).by_name.get(name)
    if model is None:
        raise OpenAIError(404, f"The model '{name}' does not exist", code="model_not_found",
                          param="model")
    return json_response(_entry(model))


def openai_routes() -> list[BaseRoute]:
    return [
        Route("/v1/models", list_models),
        Route("/v1/models/{model:path}", get_model),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", get_response),
        Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/images/generations", image_generations, methods=["POST"]),
    ]


__all__ = ["openai_routes"]
