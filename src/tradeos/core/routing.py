"""The route class every TradeOS router uses: JSON bodies must say they are JSON. And the
route template of a request, for the access log and the metrics.

FastAPI hands a non-JSON body to validation as raw bytes and answers 422; a client that sent
the wrong media type deserves 415 and a sentence saying what to send instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any, get_args, get_origin

from fastapi import APIRouter as FastAPIRouter
from fastapi import Request, Response, params
from fastapi.routing import APIRoute
from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import HTTPConnection
from starlette.types import Scope

from tradeos.core.errors import UnsupportedMediaType, ValidationFailed, field_error


def is_json_media_type(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "").strip()
    return length not in ("", "0") or "transfer-encoding" in request.headers


class JSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = _refusing_repeated_query_values(super().get_route_handler(), self)
        takes_json = self.body_field is not None and not isinstance(
            self.body_field.field_info, params.Form
        )
        if not takes_json:
            return handler

        async def json_only_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if content_type is None:
                if _has_body(request):
                    raise UnsupportedMediaType("Send the body with Content-Type: application/json.")
            elif not is_json_media_type(content_type):
                media_type = content_type.split(";")[0].strip() or "an empty media type"
                raise UnsupportedMediaType(f"Send the body as application/json, not {media_type}.")
            return await handler(request)

        return json_only_handler


def _scalar_query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters of the route and its dependencies that take one value."""
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        for param in dependant.query_params:
            annotation = param.field_info.annotation
            if annotation not in _SEQUENCES and not _is_sequence(annotation):
                names.add(param.alias)
    return frozenset(names)


_SEQUENCES: tuple[Any, ...] = (list, tuple, set, frozenset)


def _is_sequence(annotation: Any) -> bool:
    if get_origin(annotation) in _SEQUENCES:
        return True
    return any(get_origin(arg) in _SEQUENCES for arg in get_args(annotation))


def _refusing_repeated_query_values(
    handler: Callable[[Request], Coroutine[Any, Any, Response]], route: APIRoute
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """A query parameter that takes one value, given several times, is a 422: FastAPI would
    quietly use the last one, and the client would never learn that the others were ignored."""
    scalars = _scalar_query_names(route)
    if not scalars:
        return handler

    async def checked(request: Request) -> Response:
        repeated = sorted(name for name in scalars if len(request.query_params.getlist(name)) > 1)
        if repeated:
            raise ValidationFailed(
                f"Give {', '.join(repeated)} once.",
                errors=[field_error(f"query.{name}", "given more than once") for name in repeated],
            )
        return await handler(request)

    return checked


class APIRouter(FastAPIRouter):
    """`fastapi.APIRouter` with `JSONRoute` as its route class; domain routers use this one."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("route_class", JSONRoute)
        super().__init__(**kwargs)


# -- route templates ---------------------------------------------------------------------------

# Paths whose template each application remembers: finding one walks every route, and the
# access log and the metrics both want it for every request. Kept small and recently used, as
# paths that carry ids are many.
_TEMPLATES_KEPT = 4096


def route_template(scope: Scope) -> str | None:
    """`/api/v1/orders/{order_id}` for `/api/v1/orders/42`: the route a request's path matches
    (without the root path), or None when none does."""
    app = scope.get("app")
    if app is None:
        return None
    state = app.state
    known: OrderedDict[tuple[str | None, str], str | None] | None = getattr(
        state, "route_templates", None
    )
    if known is None:
        known = state.route_templates = OrderedDict()
    key = (scope.get("method"), scope["path"])
    if key in known:
        known.move_to_end(key)
        return known[key]
    template = get_route_name(HTTPConnection(scope), should_include_root_path=False)
    known[key] = template
    if len(known) > _TEMPLATES_KEPT:
        known.popitem(last=False)
    return template
