"""One error hierarchy, rendered as RFC 9457 `application/problem+json`.

Services raise `TradeOSError` subclasses; the handlers installed by `install_error_handlers`
turn those, FastAPI's validation errors and Starlette's routing errors into problem
documents: `type`, `title`, `status`, `detail`, `request_id` and, for field errors, `errors`.
Nothing from a traceback ever reaches a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

PROBLEM_CONTENT_TYPE = "application/problem+json"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Problem types are URNs: stable identifiers that do not pretend to be web pages.
PROBLEM_TYPE_BASE = "urn:tradeos:problem:"

logger = structlog.get_logger("tradeos.errors")


def current_request_id() -> str | None:
    """The correlation id bound by the request middleware (see core.logging), if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def field_error(field: str, message: str, kind: str = "value_error") -> dict[str, str]:
    """One entry of a problem's `errors`: `field` is a dotted path such as `body.email`."""
    return {"field": field, "message": message, "type": kind}


class TradeOSError(Exception):
    """Base of every error TradeOS reports to a client."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(TradeOSError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(TradeOSError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="tradeos"')


class Forbidden(TradeOSError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(TradeOSError):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(TradeOSError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class Conflict(TradeOSError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(TradeOSError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(TradeOSError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class ValidationFailed(TradeOSError):
    status, slug, title = 422, "validation-error", "Validation failed"


class RateLimited(TradeOSError):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(
        self, detail: str | None = None, *, retry_after: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(detail, **kwargs)
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(retry_after))


class ServiceUnavailable(TradeOSError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class InternalError(TradeOSError):
    status, slug, title = 500, "internal-error", "Internal server error"


_BY_STATUS: dict[int, type[TradeOSError]] = {
    cls.status: cls
    for cls in (
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
        PayloadTooLarge, UnsupportedMediaType, ValidationFailed, RateLimited,
        ServiceUnavailable, InternalError,
    )
}  # fmt: skip


def problem_response(
    status: int,
    *,
    slug: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """Build one problem+json response; the only place the document's shape is decided."""
    known = _BY_STATUS.get(status)
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or (known.slug if known else f"http-{status}")),
        "title": title or (known.title if known else phrase),
        "status": status,
        "detail": detail or title or phrase,
        "request_id": current_request_id(),
    }
    if errors:
        body["errors"] = list(errors)
    if extra:
        body.update({key: value for key, value in extra.items() if key not in body})
    return Response(
        content=orjson.dumps(body, default=str),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def error_response(error: TradeOSError) -> Response:
    return problem_response(
        error.status,
        slug=error.slug,
        title=error.title,
        detail=error.detail,
        errors=error.errors,
        headers=error.headers,
        extra=error.extra,
    )


def field_errors(raw_errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as `{field, message, type}`; `field` is a dotted path: `body.legs.0`."""
    out = []
    for item in raw_errors:
        location = [str(part) for part in item.get("loc", ())]
        out.append(
            {
                "field": ".".join(location),
                # Our own validators' messages read as plain sentences, without Pydantic's tag.
                "message": str(item.get("msg", "invalid")).removeprefix("Value error, "),
                "type": item.get("type"),
            }
        )
    return out


async def _tradeos_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TradeOSError)
    if exc.status >= 500:
        logger.error("request_failed", status=exc.status, detail=exc.detail)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(item.get("type") == "json_invalid" for item in raw):
        # A body that is not JSON at all is a malformed request, not a field error.
        return problem_response(
            400,
            slug="malformed-json",
            title="Malformed JSON body",
            detail="The request body is not valid JSON.",
            errors=field_errors(raw),
        )
    count = len(raw)
    return problem_response(
        422,
        detail=f"{count} field{'s' if count != 1 else ''} failed validation.",
        errors=field_errors(raw),
    )


def _methods_for_path(request: Request) -> list[str]:
    """Every method some route answers at this path. Starlette's own Allow names only the
    first route that matched the path, which is wrong when GET and PATCH are two routes;
    so each method is tried against the routes, the way routing itself would."""
    allowed = set()
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    if "GET" in allowed:
        allowed.add("HEAD")  # HEAD is answered wherever GET is
    return sorted(allowed)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No resource at this URL."
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        detail = "This URL does not accept that method."
        allowed = _methods_for_path(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return problem_response(exc.status_code, detail=detail, headers=headers)


# SQLSTATE classes (PostgreSQL) and messages (SQLite) of a clash with stored data.
_CONFLICT_SQLSTATES = {"23505": "duplicate", "23503": "missing or still referenced"}
_CONFLICT_SQLITE_MESSAGES = {
    "UNIQUE constraint failed": "duplicate",
    "FOREIGN KEY": "missing or still referenced",
}


def _conflict_kind(exc: IntegrityError) -> str | None:
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate in _CONFLICT_SQLSTATES:
        return _CONFLICT_SQLSTATES[sqlstate]
    message = str(exc.orig)
    return next((kind for text, kind in _CONFLICT_SQLITE_MESSAGES.items() if text in message), None)


async def _integrity_error(_request: Request, exc: Exception) -> Response:
    # The safety net under services, which should raise Conflict with a precise message. Only
    # a unique or foreign-key clash is the client's conflict; NOT NULL or CHECK violations are
    # our bugs, so they go on to the error boundary as a 500 with a logged trace.
    assert isinstance(exc, IntegrityError)
    kind = _conflict_kind(exc)
    if kind is None:
        raise exc
    logger.info("integrity_conflict", kind=kind)
    return problem_response(409, detail=f"The change conflicts with stored data ({kind} record).")


def _is_refused_value(exc: DBAPIError) -> bool:
    """A value the database cannot store: SQLAlchemy's DataError, or, as asyncpg reports it,
    any error of SQLSTATE class 22 ("data exception": out of range, NUL in text, ...)."""
    if isinstance(exc, DataError):
        return True
    return str(getattr(exc.orig, "sqlstate", "") or "").startswith("22")


async def _data_error(_request: Request, exc: Exception) -> Response:
    # The database refused a value that validation let through (a number out of its column's
    # range, a character PostgreSQL text cannot hold). The client sent it, so it is a 422, but
    # validation should have caught it: logged with its trace, so it gets fixed there. Any
    # other database error is ours: on to the error boundary as a 500.
    assert isinstance(exc, DBAPIError)
    if not _is_refused_value(exc):
        raise exc
    logger.warning("database_refused_value", exc_info=exc)
    return problem_response(
        422, detail="A value in the request cannot be stored (out of range or not allowed)."
    )


async def _database_unavailable(_request: Request, exc: Exception) -> Response:
    # Locked (SQLite busy past its timeout), no connection free in time, unreachable or
    # restarting: try again shortly.
    logger.error("database_unavailable", exc_info=exc)
    return problem_response(
        503,
        detail="The database is busy or unreachable; try again shortly.",
        headers={"Retry-After": "2"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TradeOSError, _tradeos_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _data_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
