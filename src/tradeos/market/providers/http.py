"""HTTP plumbing shared by the REST market data clients (CoinGecko, CoinMarketCap).

One `JsonApiClient` per provider client: it spaces requests with a `RateLimiter`, retries with
exponential backoff and jitter on 429, 408, 5xx, timeouts and dropped connections, honours
`Retry-After`, and turns every failure into a `ProviderError` subclass. API keys travel only in
request headers: they never appear in a URL, a log line, an exception message or a repr.

Also here: the helpers that turn third-party JSON values into the port's values (exact
`Decimal`, aware UTC `datetime`), because both clients need the same rules.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Self

import httpx
import structlog

from tradeos import __version__
from tradeos.market.providers.base import ProviderError

logger = structlog.get_logger("tradeos.market.providers")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Jitter = Callable[[float], float]
QueryParams = Mapping[str, str | int]

CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 15.0
# httpx applies the first value to read, write and pool; connect gets its own.
TIMEOUT: Final = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
USER_AGENT: Final = f"TradeOS/{__version__}"
REDACTED: Final = "***"

_RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
_AUTH_STATUS: Final = frozenset({401, 402, 403})
_MAX_DETAIL: Final = 300


# --- errors -------------------------------------------------------------------------------


class ProviderHTTPError(ProviderError):
    """A provider's HTTP API failed. `status` is the last HTTP status seen (None: no answer)."""

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class RequestRejected(ProviderHTTPError):
    """The provider refused the request (4xx): retrying the same request will not help."""


class ApiKeyRefused(RequestRejected):
    """401 / 402 / 403: the API key is missing, wrong, unpaid or its plan lacks the endpoint."""


class ProviderUnavailable(ProviderHTTPError):
    """No good answer after every retry: 5xx, timeouts, dropped connections."""


class RateLimited(ProviderUnavailable):
    """429 after every retry, a `Retry-After` longer than we wait, or the quota is spent."""


class MalformedResponse(ProviderHTTPError):
    """The provider answered 2xx, but not with the JSON we expect."""


# --- rate limiting ------------------------------------------------------------------------


class RateLimiter:
    """Spaces the requests of one client: at most `requests_per_minute`, `burst` at once.

    A token bucket in its GCRA form (one "theoretical arrival time" instead of a token count),
    so with `burst=1` it is a minimum interval of 60 / requests_per_minute seconds between
    requests. `acquire` reserves the next free slot before it sleeps, so concurrent callers
    queue up in order without a lock. `hold` keeps every caller out until a moment the
    provider named (`Retry-After`). In-process: each process of a cluster has its own.
    """

    def __init__(
        self,
        requests_per_minute: float,
        *,
        burst: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not requests_per_minute > 0:
            raise ValueError("requests_per_minute must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.interval = 60.0 / requests_per_minute
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._arrival = -math.inf  # theoretical arrival time of the next request
        self._held_until = -math.inf

    async def acquire(self) -> float:
        """Wait for this request's slot; returns the seconds waited."""
        now = self._clock()
        arrival = max(self._arrival, now)
        start = max(now, arrival - (self.burst - 1) * self.interval, self._held_until)
        self._arrival = max(arrival, start) + self.interval
        wait = start - now
        if wait > 0:
            await self._sleep(wait)
        return max(wait, 0.0)

    def hold(self, seconds: float) -> None:
        """No request starts in the next `seconds` (the provider asked us to wait)."""
        self._held_until = max(self._held_until, self._clock() + max(seconds, 0.0))


# --- retries ------------------------------------------------------------------------------


def equal_jitter(delay: float) -> float:
    """Half the delay fixed, half random: spreads retries of many clients, never waits 0."""
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - timing, not cryptography


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def default_error_detail(response: httpx.Response) -> str | None:
    """The provider's own words about an error, from the usual JSON error shapes."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    status = body.get("status")
    candidates = [
        status.get("error_message") if isinstance(status, dict) else None,
        body.get("error_message"),
        body.get("error"),
        body.get("message"),
    ]
    for candidate in candidates:
        if isinstance(candidate, dict):  # CoinGecko: {"error": {"status": {...}}}
            nested = candidate.get("status")
            candidate = nested.get("error_message") if isinstance(nested, dict) else None
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()[:_MAX_DETAIL]
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_json(content: bytes) -> Any:
    """JSON with every non-integer number as an exact `Decimal` (no float in between)."""
    return json.loads(content, parse_float=Decimal, parse_constant=_reject_constant)


class ClosedOnExit:
    """`async with client:` closes it on the way out; the class defines `aclose()`."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class JsonApiClient:
    """GET JSON from one provider: rate limited, retried, errors made `ProviderError`s.

    `headers` may hold the API key; `secrets` lists every value that must never be shown
    (they are masked in every message this client builds). `should_retry` lets a provider
    say a retryable status is final (CoinMarketCap's 429 "monthly quota spent").
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        client: httpx.AsyncClient | None = None,
        requests_per_minute: float = 30,
        burst: int = 1,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        jitter: Jitter = equal_jitter,
        error_detail: Callable[[httpx.Response], str | None] = default_error_detail,
        should_retry: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.limiter = RateLimiter(requests_per_minute, burst=burst, clock=clock, sleep=sleep)
        self._headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            **(headers or {}),
        }
        self._secrets = tuple(secret for secret in secrets if secret)
        self._sleep = sleep
        self._jitter = jitter
        self._error_detail = error_detail
        self._should_retry = should_retry
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)

    def __repr__(self) -> str:
        key = "set" if self._secrets else "none"
        return f"JsonApiClient(provider={self.provider!r}, base_url={self.base_url!r}, key={key})"

    @property
    def has_key(self) -> bool:
        return bool(self._secrets)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def backoff(self, attempt: int) -> float:
        """The pause before retry number `attempt + 1`: base * 2**attempt, capped, jittered."""
        nominal = min(self.backoff_max, self.backoff_base * 2**attempt)
        return max(0.0, self._jitter(nominal))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    async def get_json(self, path: str, params: QueryParams | None = None) -> Any:
        """GET base_url/path?params and return the decoded JSON (floats as `Decimal`)."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        attempt = 0
        while True:
            await self.limiter.acquire()
            try:
                response = await self._client.get(
                    url, params=dict(params or {}), headers=self._headers, timeout=TIMEOUT
                )
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if attempt >= self.max_retries:
                    raise ProviderUnavailable(
                        self.provider,
                        self.redact(
                            f"{self.provider} did not answer GET {path}: {type(exc).__name__} "
                            f"after {attempt + 1} attempts"
                        ),
                    ) from exc
                delay = self.backoff(attempt)
                self._log_retry(path, type(exc).__name__, attempt, delay)
                await self._sleep(delay)
                attempt += 1
                continue

            status = response.status_code
            if status in _RETRYABLE_STATUS:
                final = self._should_retry is not None and not self._should_retry(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if final or attempt >= self.max_retries:
                    raise self._gave_up(path, response, attempt + 1, final=final)
                if retry_after is not None and retry_after > self.max_retry_after:
                    raise self._error(
                        RateLimited if status == 429 else ProviderUnavailable,
                        path,
                        response,
                        f"asks to wait {retry_after:.0f} s, more than {self.max_retry_after:.0f} s",
                    )
                if retry_after is not None or status == 429:
                    # The provider's clock, or a 429: every request of this client waits.
                    delay = retry_after if retry_after is not None else self.backoff(attempt)
                    self._log_retry(path, f"HTTP {status}", attempt, delay)
                    self.limiter.hold(delay)
                else:
                    delay = self.backoff(attempt)
                    self._log_retry(path, f"HTTP {status}", attempt, delay)
                    await self._sleep(delay)
                attempt += 1
                continue
            if status in _AUTH_STATUS:
                raise self._auth_error(path, response)
            if 400 <= status < 500:
                raise self._error(RequestRejected, path, response, "rejected the request")
            if not 200 <= status < 300:
                raise self._error(MalformedResponse, path, response, "answered unexpectedly")
            try:
                return parse_json(response.content)
            except ValueError as exc:
                content_type = response.headers.get("Content-Type", "no content type")
                raise MalformedResponse(
                    self.provider,
                    self.redact(
                        f"{self.provider} GET {path} answered HTTP {status} with a body that is "
                        f"not valid JSON ({content_type}, {len(response.content)} bytes)"
                    ),
                    status=status,
                ) from exc

    def _log_retry(self, path: str, reason: str, attempt: int, delay: float) -> None:
        logger.warning(
            "market_provider_retry",
            provider=self.provider,
            path=path,
            reason=reason,
            retry=attempt + 1,
            max_retries=self.max_retries,
            delay_seconds=round(delay, 3),
        )

    def _message(self, path: str, response: httpx.Response, what: str) -> str:
        detail = self._error_detail(response)
        text = f"{self.provider} {what} (GET {path}: HTTP {response.status_code})"
        if detail:
            text += f": {detail}"
        return self.redact(text)

    def _error(
        self,
        kind: type[ProviderHTTPError],
        path: str,
        response: httpx.Response,
        what: str,
    ) -> ProviderHTTPError:
        return kind(self.provider, self._message(path, response, what), status=response.status_code)

    def _gave_up(
        self, path: str, response: httpx.Response, attempts: int, *, final: bool
    ) -> ProviderHTTPError:
        status = response.status_code
        if status == 429:
            what = "rate limit or quota is exhausted" if final else "kept rate limiting us"
            kind: type[ProviderHTTPError] = RateLimited
        else:
            what = "is unavailable"
            kind = ProviderUnavailable
        if not final:
            what += f" after {attempts} attempts"
        return self._error(kind, path, response, what)

    def _auth_error(self, path: str, response: httpx.Response) -> ProviderHTTPError:
        status = response.status_code
        if not self.has_key:
            what = "requires an API key for this request (none is configured)"
        elif status == 401:
            what = "refused the API key"
        elif status == 402:
            what = "refused the API key: its plan is unpaid or expired"
        else:
            what = "refused the API key for this request: its plan may not include it"
        return self._error(ApiKeyRefused, path, response, what)


# --- JSON values -> port values -----------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_decimal(value: object) -> Decimal | None:
    """An exact `Decimal`, or None for null, empty, booleans, NaN, infinities and junk.

    Floats go through `str` (the shortest repr), never through float arithmetic; decoding with
    `parse_json` avoids floats in the first place.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(str(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def to_int(value: object) -> int | None:
    number = to_decimal(value)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 string ("2024-03-14T07:10:36.635Z") as an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def from_millis(value: object) -> datetime | None:
    """Unix milliseconds as an aware UTC datetime (integer arithmetic, no float rounding)."""
    number = to_decimal(value)
    if number is None:
        return None
    microseconds = int(number * 1000)
    return _EPOCH + timedelta(microseconds=microseconds)


def text_or_none(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text or None


def as_dict(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (absent blocks read as nulls)."""
    return value if isinstance(value, dict) else {}
