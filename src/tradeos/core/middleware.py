"""The ASGI middleware of create_app(), each answering in problem+json where it answers at all.

Order, outermost first (see app.py): request context -> error boundary -> HEAD -> CORS ->
GZip -> metrics -> body limit -> error boundary -> routing. The inner error boundary sits
inside CORS and metrics, so a 500 is counted and readable by a browser; the outer one is the
last resort should a middleware itself fail. HEAD sits outside GZip so its headers are the
very ones GET would send.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradeos.core.errors import problem_response

logger = structlog.get_logger("tradeos.errors")


class ErrorBoundaryMiddleware:
    """An exception nothing handled: its trace goes to the log, the client gets a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled_error", method=scope.get("method"), path=scope.get("path"))
            if response_started:
                return  # too late for another response; the server closes the connection
            detail = "An unexpected error occurred; it has been logged."
            await problem_response(500, detail=detail)(scope, receive, send)


class HeadAsGetMiddleware:
    """HEAD is answered wherever GET is (RFC 9110): run the GET, send its headers, no body.

    FastAPI routes declare GET only; doing it here keeps HEAD out of the OpenAPI document.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        body_sent = False

        async def headers_only(message: Message) -> None:
            nonlocal body_sent
            if message["type"] == "http.response.body":
                if body_sent:
                    return
                body_sent = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, but a refused preflight is a problem document, not plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        passthrough = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in ("content-type", "content-length")
        }
        return problem_response(
            response.status_code, detail=bytes(response.body).decode(), headers=passthrough
        )


class BodyLimitMiddleware:
    """Refuse bodies over `max_body_bytes` (413), or over the limit of the exact path in
    `path_limits` (uploads that are allowed to be larger)."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        too_large = f"The request body exceeds the limit of {limit} bytes."
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await problem_response(413, detail=too_large)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched and is
                    # rendered by the problem handlers; any other error would become a 400.
                    raise HTTPException(413, detail=too_large)
            return message

        await self.app(scope, counting_receive, send)
