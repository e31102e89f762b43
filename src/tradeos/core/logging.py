"""Logging: structlog everywhere, JSON lines in production, readable console in development.

Every log line written while a request is served carries its correlation id. Secrets
(passwords, tokens, API keys, Authorization and cookie headers) are masked by a processor
that runs last before rendering, so neither our code nor a library can leak them.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import IO, Any
from uuid import UUID

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.typing import EventDict, Processor, WrappedLogger

from tradeos.core.routing import route_template

REDACTED = "[REDACTED]"
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# A key is secret when one of its words is one of these (or starts with password, passwd or
# secret): password_confirm, new_password2, pwd, otp_code, refresh_token, refreshToken,
# client_secret, x-api-key, set-cookie. Words, not substrings: compass, bypass_cache and
# max_tokens stay readable.
_SECRET_KEY_WORDS = frozenset(
    {
        "pass",
        "pwd",
        "otp",
        "token",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "signature",
    }
)
_SECRET_KEY_PREFIXES = ("password", "passwd", "passphrase", "secret")
_SECRET_KEY_JOINED = ("apikey", "privatekey", "accesskey")

# Secrets inside free text (exception messages, library log lines, URLs).
_SENSITIVE_NAME = (
    r"[\w-]*?(?<![a-z])(?:password|passwd|passphrase|pwd|secret|token|api[-_]?key)(?![a-z])[\w-]*"
)
_SECRET_VALUE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header lines: "Authorization: Token x", "X-Api-Key: x", "Cookie: a=b; c=d"
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|cookie|set-cookie)(\s*[:=]\s*)"
            r"[^\n\"',}]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # name=value, name: value, "name": "value" where the name says secret
    (
        re.compile(r"(?i)([\"']?" + _SENSITIVE_NAME + r"[\"']?\s*[:=]\s*[\"']?)[^\"'\s,;&}]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"\btrd_[A-Za-z0-9_-]+"), "trd_" + REDACTED),
    (re.compile(r"\b((?:sk|rk|pk)_(?:live|test)_|whsec_)[A-Za-z0-9]{6,}"), r"\1" + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\$argon2[a-z]*\$[A-Za-z0-9$=,+/.-]+"), REDACTED),  # password hashes
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _SECRET_VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_secret_key(key: object) -> bool:
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if not isinstance(key, str):
        return False
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()  # refreshToken -> refresh_token
    words = [word for word in re.split(r"[^a-z0-9]+", spaced) if word]
    joined = "".join(words)
    return any(
        word in _SECRET_KEY_WORDS or word.startswith(_SECRET_KEY_PREFIXES) for word in words
    ) or any(part in joined for part in _SECRET_KEY_JOINED)


def _redact_value(key: object, value: Any) -> Any:
    if value is None:
        return None
    if key is not None and _is_secret_key(key):
        return REDACTED
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")  # "12.50", not "Decimal('12.50')"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return _redact_value(None, value.value)
    if isinstance(value, bytes):
        return redact_text(value.decode("latin-1"))
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_pair(item) for item in value]
    # Objects (settings, models, exceptions) are logged as text, so their reprs are redacted too.
    return redact_text(str(value))


def _redact_pair(item: Any) -> Any:
    # (name, value) pairs such as ASGI headers: the name says whether the value is secret.
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str | bytes):
        name = item[0].decode("latin-1") if isinstance(item[0], bytes) else item[0]
        return [name, _redact_value(name, item[1])]
    return _redact_value(None, item)


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret keys and secret-looking text anywhere in the event."""
    return {key: _redact_value(key, value) for key, value in event_dict.items()}


def configure_logging(
    level: str = "INFO", *, json: bool = False, sql: bool = False, stream: IO[str] | None = None
) -> None:
    """Route structlog and the stdlib loggers (uvicorn, sqlalchemy, alembic) through one handler.

    `sql=True` logs every SQL statement through that handler (so redaction applies), rather than
    SQLAlchemy's `echo`, which prints past it.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become text before redaction, so secrets in exception messages are masked.
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "sqlalchemy"):
        library_logger = logging.getLogger(name)
        library_logger.handlers = []
        library_logger.propagate = True
    # One access line per request comes from RequestContextMiddleware, not from uvicorn.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("sqlalchemy.engine").setLevel("INFO" if sql else "WARNING")
    # taskiq's receiver logs every task it starts, under its own task id: our job log lines
    # (with the run id) say the same, and that line alone costs more than a no-op job.
    logging.getLogger("taskiq.receiver").setLevel(logging.WARNING)


def _accepted_request_id(scope: Scope) -> str | None:
    candidate = Headers(scope=scope).get(REQUEST_ID_HEADER)
    return candidate if candidate is not None and _REQUEST_ID_PATTERN.match(candidate) else None


class RequestContextMiddleware:
    """Correlation id and one access line per request; the outermost middleware.

    The id comes from a well-formed `X-Request-ID` or is generated; it is echoed in the
    response header and bound to every log line written while the request is served.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logger = structlog.get_logger("tradeos.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _accepted_request_id(scope) or uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_request_id)
            finally:
                if scope["type"] == "http":
                    self._log_access(scope, status, started)

    def _log_access(self, scope: Scope, status: int, started: float) -> None:
        state = scope.get("state") or {}
        self.logger.info(
            "request",
            method=scope.get("method"),
            path=scope.get("path"),
            route=route_template(scope),  # as /metrics names it
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            user_id=state.get("user_id"),
            client=(scope.get("client") or (None,))[0],
        )
