"""The route class every TradeOS router uses: JSON bodies must say they are JSON.

FastAPI hands a non-JSON body to validation as raw bytes and answers 422; a client that sent
the wrong media type deserves 415 and a sentence saying what to send instead.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import APIRouter as FastAPIRouter
from fastapi import Request, Response, params
from fastapi.routing import APIRoute

from tradeos.core.errors import UnsupportedMediaType


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
        handler = super().get_route_handler()
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


class APIRouter(FastAPIRouter):
    """`fastapi.APIRouter` with `JSONRoute` as its route class; domain routers use this one."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("route_class", JSONRoute)
        super().__init__(**kwargs)
