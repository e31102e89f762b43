"""The WebSocket gateway: /api/v1/ws.

A client authenticates, then subscribes to channels and receives their events as JSON frames.

Authentication (never a user id in the URL), one of:

- the `Sec-WebSocket-Protocol` header: `bearer.<jwt>` or `apikey.<trd_…>` (the chosen
  subprotocol is echoed back);
- the first message: `{"op": "auth", "token": "<jwt>"}` or `{"op": "auth", "api_key": "trd_…"}`,
  within AUTH_TIMEOUT_SECONDS.

The server answers `{"type": "authenticated", "user_id": …}`; bad credentials get an error
frame and close 4401, credentials without the `read` scope close 4403.

Client operations: `subscribe` / `unsubscribe` (`{"op": …, "channels": [...]}`), `ping` (answered
`{"type": "pong"}`), `pong` (answer to the server's `{"type": "ping"}`, sent every
PING_INTERVAL_SECONDS). A bad message gets `{"type": "error", "code": …, "message": …}` and the
connection stays open.

Channels: public `tickers:<SYMBOL>`, `candles:<SYMBOL>:<tf>`, `leaderboard` (event topics of the
same name); private `notifications`, `orders`, `positions`, `jobs`, which carry the event topic
`user:<your id>:<channel>` and so only ever your own events. A channel named `user:…` is refused.
A market channel's symbol is taken in any spelling the REST endpoints accept (`btc-usd`,
`BTCUSD`, `BTC/USD`) and stands for the instrument's canonical symbol: the acknowledgement and
the events name the channel canonically (`tickers:BTC-USD`). An instrument that does not exist,
a timeframe that is not one of the candle timeframes (1m 5m 15m 30m 1h 4h 1d 1w) or a malformed
market channel is refused with an error frame, like any unknown channel.

Close codes: 1001 idle (no client message for IDLE_TIMEOUT_SECONDS) or server going away,
1011 event transport lost, 1013 slow consumer (the bounded send queue filled up, or the event
subscription overflowed), 4401 not authenticated, 4403 credentials lack the `read` scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
import structlog
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from tradeos.accounts import service as accounts
from tradeos.accounts.service import Principal
from tradeos.core.errors import NotFound, TradeOSError
from tradeos.core.events import (
    EventBus,
    EventsUnavailable,
    Subscription,
    SubscriptionClosed,
    SubscriptionOverflow,
)
from tradeos.market import service as market
from tradeos.market.timeframes import Timeframe

__all__ = ["routers"]

logger = structlog.get_logger("tradeos.ws")

# Module-level so tests can make them small.
AUTH_TIMEOUT_SECONDS: float = 10.0
PING_INTERVAL_SECONDS: float = 20.0
IDLE_TIMEOUT_SECONDS: float = 60.0
SEND_QUEUE_SIZE: int = 256
MAX_CHANNELS: int = 50
MAX_MESSAGE_CHARS: int = 64 * 1024

CLOSE_GOING_AWAY: Final = 1001
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403

PRIVATE_CHANNELS: Final = frozenset({"notifications", "orders", "positions", "jobs"})
_SYMBOL: Final = r"[A-Za-z0-9][A-Za-z0-9._/-]{0,39}"
_TICKERS = re.compile(rf"tickers:(?P<symbol>{_SYMBOL})")
_CANDLES = re.compile(rf"candles:(?P<symbol>{_SYMBOL}):(?P<timeframe>[^:]*)")
_TIMEFRAMES: Final = tuple(timeframe.value for timeframe in Timeframe)

router = APIRouter(tags=["websocket"])


class _Refused(Exception):
    """A client message that gets an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _AuthFailed(Exception):
    def __init__(self, code: str, message: str, close_code: int = CLOSE_UNAUTHORIZED) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def _unknown_channel(channel: str) -> _Refused:
    return _Refused(
        "unknown-channel",
        f"Unknown channel {channel[:100]!r}: use tickers:<SYMBOL>, candles:<SYMBOL>:<timeframe>, "
        "leaderboard, notifications, orders, positions or jobs.",
    )


def _topic_for(channel: Any, principal: Principal) -> str:
    """The event topic behind `channel` (for a market channel, with its symbol as written:
    `_Connection._channel` makes it canonical), or _Refused."""
    if not isinstance(channel, str) or not channel:
        raise _Refused("invalid-channel", "A channel is a non-empty string.")
    if channel in PRIVATE_CHANNELS:
        return f"user:{principal.user_id}:{channel}"
    if channel.startswith("user:"):
        raise _Refused(
            "forbidden-channel",
            f"{channel!r} is not a channel; private channels are "
            f"{', '.join(sorted(PRIVATE_CHANNELS))} and carry only your own events.",
        )
    if channel == "leaderboard" or _TICKERS.fullmatch(channel):
        return channel
    candles = _CANDLES.fullmatch(channel)
    if candles is not None:
        if candles["timeframe"] not in _TIMEFRAMES:
            raise _Refused(
                "unknown-channel",
                f"Unknown timeframe {candles['timeframe'][:10]!r} in {channel[:100]!r}: "
                f"candles:<SYMBOL>:<timeframe> takes one of {', '.join(_TIMEFRAMES)}.",
            )
        return channel
    raise _unknown_channel(channel)


def _parse(text: str) -> dict[str, Any]:
    if len(text) > MAX_MESSAGE_CHARS:
        raise _Refused("message-too-large", f"Messages are at most {MAX_MESSAGE_CHARS} characters.")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _Refused("malformed-json", "The message is not valid JSON.") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise _Refused("bad-message", 'A message is a JSON object with an "op" string.')
    return message


def _subprotocol_credentials(websocket: WebSocket) -> tuple[str, str, str] | None:
    """(subprotocol, kind, credential) from Sec-WebSocket-Protocol, if one carries credentials."""
    for protocol in websocket.scope.get("subprotocols") or ():
        for prefix, kind in (("bearer.", "token"), ("apikey.", "api_key")):
            if protocol.startswith(prefix):
                return protocol, kind, protocol[len(prefix) :]
    return None


async def _authenticate(websocket: WebSocket, kind: str, credential: Any) -> Principal:
    if not isinstance(credential, str) or not credential:
        raise _AuthFailed("unauthorized", "Send a token or an API key.")
    app = websocket.app
    settings = app.state.settings
    try:
        async with app.state.database.session(write=False) as session:
            if kind == "token":
                principal = await accounts.authenticate_access_token(session, settings, credential)
            else:
                principal = await accounts.authenticate_api_key(session, settings, credential)
    except TradeOSError as exc:
        close_code = CLOSE_FORBIDDEN if exc.status == 403 else CLOSE_UNAUTHORIZED
        slug = "forbidden" if exc.status == 403 else "unauthorized"
        raise _AuthFailed(slug, exc.detail, close_code) from None
    if "read" not in principal.scopes:
        raise _AuthFailed(
            "forbidden",
            "This needs the `read` scope, which these credentials do not have.",
            CLOSE_FORBIDDEN,
        )
    return principal


def _credentials_from_message(message: Mapping[str, Any]) -> tuple[str, Any]:
    has_token, has_key = "token" in message, "api_key" in message
    if has_token == has_key:
        raise _AuthFailed("unauthorized", 'Send either "token" or "api_key", not both or neither.')
    return ("token", message["token"]) if has_token else ("api_key", message["api_key"])


class _Connection:
    """One authenticated client: a receive loop, a sender draining the bounded outbox, a
    heartbeat, and a pump forwarding events from one Subscription (re-created on each change
    of channels)."""

    def __init__(self, websocket: WebSocket, principal: Principal) -> None:
        self.websocket = websocket
        self.principal = principal
        self.bus: EventBus = websocket.app.state.events
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SEND_QUEUE_SIZE)
        self.channels: dict[str, str] = {}  # channel -> topic, in subscription order
        self.subscription: Subscription | None = None
        self.pump: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()
        self.close_code = CLOSE_GOING_AWAY
        self.close_reason = ""
        self.client_gone = False
        self.symbols: dict[str, str] = {}  # symbol as a client wrote it -> canonical symbol

    # -- shutting down --

    def abort(self, code: int, reason: str) -> None:
        if not self.closing.is_set():
            self.close_code, self.close_reason = code, reason
            self.closing.set()

    def offer(self, frame: dict[str, Any]) -> None:
        """Queue a frame without ever waiting; a full outbox disconnects the slow client."""
        if self.closing.is_set():
            return
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            logger.warning("ws_slow_consumer", user_id=self.principal.user_id)
            self.abort(CLOSE_TRY_AGAIN_LATER, "slow consumer")

    # -- the tasks --

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._receive(), name="ws-receive"),
            asyncio.create_task(self._send(), name="ws-send"),
            asyncio.create_task(self._heartbeat(), name="ws-heartbeat"),
            asyncio.create_task(self.closing.wait(), name="ws-closing"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await self._stop_pump()
            # asyncio.wait, not gather/suppress: our own cancellation must still propagate.
            await asyncio.wait(tasks)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    error = task.exception()
                    if not isinstance(error, OSError | RuntimeError):
                        logger.error("ws_task_failed", task=task.get_name(), error=repr(error))
                    self.client_gone = True
                    if not self.closing.is_set():
                        self.abort(CLOSE_INTERNAL_ERROR, "internal error")
            if not self.client_gone:
                with contextlib.suppress(Exception):
                    await self.websocket.close(self.close_code, self.close_reason)

    async def _send(self) -> None:
        while True:
            frame = await self.outbox.get()
            await self.websocket.send_text(orjson.dumps(frame).decode())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_SECONDS)
            self.offer({"type": "ping"})

    async def _receive(self) -> None:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_SECONDS):
                    message = await self.websocket.receive()
            except TimeoutError:
                self.abort(CLOSE_GOING_AWAY, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                self.client_gone = True
                return
            text = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    self.offer(_error("malformed-json", "The message is not valid JSON."))
                    continue
            try:
                await self._handle(_parse(text))
            except _Refused as refused:
                self.offer(_error(refused.code, refused.message))
            except (EventsUnavailable, SubscriptionClosed):
                self.abort(CLOSE_INTERNAL_ERROR, "event transport unavailable")
                return

    async def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ping":
            self.offer({"type": "pong"})
        elif op == "pong":
            pass
        elif op == "auth":
            raise _Refused("already-authenticated", "This connection is already authenticated.")
        elif op in ("subscribe", "unsubscribe"):
            channels = message.get("channels")
            if not isinstance(channels, list) or not channels:
                raise _Refused("bad-message", '"channels" must be a non-empty list of channels.')
            if len(channels) > MAX_CHANNELS:
                raise _Refused(
                    "too-many-channels", f"A connection may hold at most {MAX_CHANNELS} channels."
                )
            wanted = dict([await self._channel(channel) for channel in channels])
            if op == "subscribe":
                await self._subscribe(wanted)
            else:
                await self._unsubscribe(wanted)
        else:
            raise _Refused(
                "unknown-op",
                f"Unknown op {op[:50]!r}: use subscribe, unsubscribe, ping or pong.",
            )

    async def _channel(self, channel: Any) -> tuple[str, str]:
        """(the channel's canonical name, its event topic), or _Refused. A market channel's
        symbol is resolved as the REST endpoints resolve it: BTCUSD, btc-usd -> BTC-USD."""
        topic = _topic_for(channel, self.principal)
        found = _TICKERS.fullmatch(channel) or _CANDLES.fullmatch(channel)
        if found is None:
            return channel, topic
        symbol = await self._symbol(found["symbol"], channel)
        timeframe = found.groupdict().get("timeframe")
        canonical = f"tickers:{symbol}" if timeframe is None else f"candles:{symbol}:{timeframe}"
        return canonical, canonical

    async def _symbol(self, text: str, channel: str) -> str:
        if text not in self.symbols:
            database = self.websocket.app.state.database
            try:
                async with database.session(write=False) as session:
                    instrument = await market.get_instrument(session, text)
            except NotFound:
                raise _Refused(
                    "unknown-channel",
                    f"Unknown channel {channel[:100]!r}: there is no instrument {text!r} "
                    "(GET /api/v1/market/instruments lists them).",
                ) from None
            if len(self.symbols) >= 4 * MAX_CHANNELS:  # bounded, whatever a client sends
                self.symbols.clear()
            self.symbols[text] = instrument.symbol
        return self.symbols[text]

    async def _subscribe(self, wanted: dict[str, str]) -> None:
        new = {**self.channels, **wanted}
        if len(new) > MAX_CHANNELS:
            raise _Refused(
                "too-many-channels", f"A connection may hold at most {MAX_CHANNELS} channels."
            )
        if new.keys() != self.channels.keys():
            await self._resubscribe(new)
        self.offer({"type": "subscribed", "channels": list(wanted)})

    async def _unsubscribe(self, wanted: dict[str, str]) -> None:
        new = {channel: topic for channel, topic in self.channels.items() if channel not in wanted}
        if new.keys() != self.channels.keys():
            await self._resubscribe(new)
        self.offer({"type": "unsubscribed", "channels": list(wanted)})

    async def _resubscribe(self, channels: dict[str, str]) -> None:
        """Open one subscription for the whole new set (before acknowledging, so events
        published after the acknowledgement arrive), then drop the old one."""
        subscription: Subscription | None = None
        if channels:
            subscription = self.bus.subscribe(*channels.values())
            await subscription.__aenter__()
        await self._stop_pump()
        self.channels = channels
        self.subscription = subscription
        if subscription is not None:
            by_topic = {topic: channel for channel, topic in channels.items()}
            self.pump = asyncio.create_task(self._forward(subscription, by_topic), name="ws-pump")

    async def _stop_pump(self) -> None:
        pump, subscription = self.pump, self.subscription
        self.pump, self.subscription = None, None
        if pump is not None:
            pump.cancel()
            await asyncio.wait([pump])  # never swallows a cancellation aimed at us
        if subscription is not None:
            await subscription.aclose()

    async def _forward(self, subscription: Subscription, by_topic: dict[str, str]) -> None:
        try:
            async for event in subscription:
                channel = by_topic.get(event.topic)
                if channel is not None:
                    self.offer({"type": "event", "channel": channel, "data": event.payload})
        except SubscriptionOverflow:
            self.abort(CLOSE_TRY_AGAIN_LATER, "slow consumer")
            return
        except EventsUnavailable:
            self.abort(CLOSE_INTERNAL_ERROR, "event transport unavailable")
            return
        # The iterator ended: the subscription or the bus closed under us (shutdown).
        if self.subscription is subscription:
            self.abort(CLOSE_GOING_AWAY, "server going away")


async def _handshake(websocket: WebSocket) -> Principal | None:
    """Accept and authenticate; None (the socket closed or gone) when that fails."""
    from_header = _subprotocol_credentials(websocket)
    await websocket.accept(subprotocol=from_header[0] if from_header else None)
    try:
        if from_header is not None:
            return await _authenticate(websocket, from_header[1], from_header[2])
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return None
                    text = message.get("text")
                    if text is None:
                        text = (message.get("bytes") or b"").decode(errors="replace")
                    try:
                        parsed = _parse(text)
                    except _Refused as refused:
                        await websocket.send_json(_error(refused.code, refused.message))
                        continue
                    if parsed["op"] == "ping":
                        await websocket.send_json({"type": "pong"})
                        continue
                    if parsed["op"] != "auth":
                        await websocket.send_json(
                            _error("unauthenticated", 'Authenticate first: {"op": "auth", ...}.')
                        )
                        continue
                    kind, credential = _credentials_from_message(parsed)
                    return await _authenticate(websocket, kind, credential)
        except TimeoutError:
            raise _AuthFailed(
                "auth-timeout", f"Authenticate within {AUTH_TIMEOUT_SECONDS:g} seconds."
            ) from None
    except _AuthFailed as failed:
        with contextlib.suppress(Exception):
            await websocket.send_json(_error(failed.code, failed.message))
            await websocket.close(failed.close_code, failed.message[:120])
        return None


@router.websocket("/ws")
async def gateway(websocket: WebSocket) -> None:
    principal = await _handshake(websocket)
    if principal is None:
        return
    websocket.state.user_id = principal.user_id  # the access log names the user
    connection = _Connection(websocket, principal)
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.send_json({"type": "authenticated", "user_id": principal.user_id})
        await connection.run()


routers = (router,)
