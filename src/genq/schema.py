"""Input schemas from function signatures: the one definition the API, UI and clients use."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from genq.errors import InvalidInput
from genq.progress import Progress
from genq.serving.model import Model


def progress_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of the parameter genq injects a Progress into, if any."""
    hints = _hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        if hints.get(name) is Progress or isinstance(param.default, Progress):
            return name
    return None


def model_parameters(fn: Callable[..., Any]) -> dict[str, Model]:
    """The parameters genq injects a loaded model into: ``Annotated[T, some_model]``."""
    found: dict[str, Model] = {}
    for pname, hint in _hints(fn).items():
        if get_origin(hint) is Annotated:
            models = [m for m in hint.__metadata__ if isinstance(m, Model)]
            if len(models) > 1:
                raise TypeError(f"{fn.__name__}: parameter {pname!r} names several models")
            if models:
                found[pname] = models[0]
    return found


def input_model(fn: Callable[..., Any], name: str, *, batched: bool = False) -> type[BaseModel]:
    """A pydantic model of ``fn``'s parameters (without the Progress one and those a model
    is injected into); extra keys fail.

    A batched function takes one list per parameter (``prompt: list[str]``) while each
    job's input is one item, so its schema is made of the lists' item types."""
    hints = _hints(fn)
    skip = {progress_parameter(fn), *model_parameters(fn)}
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if pname in skip:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{name}: *args and **kwargs cannot form an input schema")
        annotation = hints.get(pname, Any)
        if batched:
            annotation = _item_type(name, pname, annotation)
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, default)
    return create_model(
        f"{name}_input", __config__=ConfigDict(extra="forbid"), **fields
    )


def validate_input(model: type[BaseModel], function: str, data: dict[str, Any]) -> BaseModel:
    """Validate, or raise InvalidInput whose message names each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(input)",
             "message": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidInput(f"invalid input for {function!r}: {summary}",
                           function=function, errors=errors) from None


def _item_type(function: str, parameter: str, annotation: Any) -> Any:
    if get_origin(annotation) is not list:
        raise TypeError(f"{function}: a batched function takes a list per parameter; "
                        f"annotate {parameter!r} as list[...]")
    args = get_args(annotation)
    return args[0] if args else Any


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn, include_extras=True)
    except (NameError, TypeError):
        return dict(getattr(fn, "__annotations__", {}))
