"""The WebSocket gateway /api/v1/ws: authentication, channels, private events, heartbeat,
error frames and close codes. Starlette's TestClient runs the app in a thread of its own, so
these tests block on the socket; data is arranged and committed before the client starts."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.conftest import TEST_REDIS_URL
from tests.factories import make_api_key, make_user, sign_in
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.db import Database
from tradeos.market import startup as market_startup
from tradeos.notifications import gateway

WS = "/api/v1/ws"


@dataclass
class Someone:
    user_id: int
    token: str
    api_key: str


async def someone(session: AsyncSession, settings: Settings) -> Someone:
    user = await make_user(session, tier="pro")
    tokens = await sign_in(session, settings, user)
    _, key = await make_api_key(session, settings, user, scopes=["read"])
    await session.commit()
    return Someone(user.id, tokens.access_token, key)


@pytest.fixture
async def alice(session: AsyncSession, settings: Settings) -> Someone:
    return await someone(session, settings)


@pytest.fixture
async def bob(session: AsyncSession, settings: Settings) -> Someone:
    return await someone(session, settings)


@pytest.fixture
def client(settings: Settings, database: Database) -> Iterator[TestClient]:
    app = create_app(settings, configure_logs=False)
    with TestClient(app) as test_client:
        yield test_client


def publish(client: TestClient, topic: str, payload: dict[str, Any]) -> None:
    assert client.portal is not None
    bus = client.app.state.events  # type: ignore[attr-defined]
    client.portal.call(bus.publish, topic, payload)


def authenticate(ws: Any, **credentials: str) -> dict[str, Any]:
    ws.send_json({"op": "auth", **credentials})
    frame: dict[str, Any] = ws.receive_json()
    assert frame["type"] == "authenticated", frame
    return frame


def subscribe(ws: Any, *channels: str) -> None:
    ws.send_json({"op": "subscribe", "channels": list(channels)})
    assert ws.receive_json() == {"type": "subscribed", "channels": list(channels)}


def close_code(ws: Any) -> int:
    """Read frames until the server closes; its close code."""
    for _ in range(1000):
        try:
            ws.receive_json()
        except WebSocketDisconnect as closed:
            return closed.code
    raise AssertionError("the server never closed the connection")


async def test_auth_by_first_message_token_and_api_key(client: TestClient, alice: Someone) -> None:
    with client.websocket_connect(WS) as ws:
        assert authenticate(ws, token=alice.token) == {
            "type": "authenticated",
            "user_id": alice.user_id,
        }
    with client.websocket_connect(WS) as ws:
        authenticate(ws, api_key=alice.api_key)
        ws.send_json({"op": "ping"})
        assert ws.receive_json() == {"type": "pong"}


async def test_auth_by_subprotocol_echoes_it(client: TestClient, alice: Someone) -> None:
    protocol = f"bearer.{alice.token}"
    with client.websocket_connect(WS, subprotocols=["json", protocol]) as ws:
        assert ws.accepted_subprotocol == protocol
        assert ws.receive_json()["type"] == "authenticated"
    protocol = f"apikey.{alice.api_key}"
    with client.websocket_connect(WS, subprotocols=[protocol]) as ws:
        assert ws.accepted_subprotocol == protocol
        assert ws.receive_json() == {"type": "authenticated", "user_id": alice.user_id}


async def test_bad_credentials_close_4401(client: TestClient, alice: Someone) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_json({"op": "auth", "token": alice.token + "x"})
        frame = ws.receive_json()
        assert frame["type"] == "error"
        assert frame["code"] == "unauthorized"
        assert close_code(ws) == 4401
    with client.websocket_connect(WS, subprotocols=["apikey.trd_not-a-real-key"]) as ws:
        assert ws.receive_json()["type"] == "error"
        assert close_code(ws) == 4401
    with client.websocket_connect(WS) as ws:
        ws.send_json({"op": "auth", "token": alice.token, "api_key": alice.api_key})
        assert ws.receive_json()["type"] == "error"
        assert close_code(ws) == 4401


@pytest.fixture
async def trade_only_key(session: AsyncSession, settings: Settings) -> str:
    user = await make_user(session, tier="pro")
    _, key = await make_api_key(session, settings, user, scopes=["trade"])
    await session.commit()
    return key


async def test_credentials_without_read_scope_close_4403(
    client: TestClient, trade_only_key: str
) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_json({"op": "auth", "api_key": trade_only_key})
        assert ws.receive_json()["code"] == "forbidden"
        assert close_code(ws) == 4403


async def test_messages_before_auth_are_refused_and_timeout_closes_4401(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "AUTH_TIMEOUT_SECONDS", 0.5)
    with client.websocket_connect(WS) as ws:
        ws.send_json({"op": "subscribe", "channels": ["leaderboard"]})
        assert ws.receive_json()["code"] == "unauthenticated"
        frame = ws.receive_json()
        assert frame["code"] == "auth-timeout"
        assert close_code(ws) == 4401


async def test_private_events_reach_only_their_owner(
    client: TestClient, alice: Someone, bob: Someone
) -> None:
    with client.websocket_connect(WS) as alice_ws, client.websocket_connect(WS) as bob_ws:
        authenticate(alice_ws, token=alice.token)
        authenticate(bob_ws, token=bob.token)
        subscribe(alice_ws, "notifications")
        subscribe(bob_ws, "notifications", "leaderboard")

        publish(client, f"user:{alice.user_id}:notifications", {"title": "Order filled"})
        # Then a public event: bob's next frame must be it, not alice's notification.
        publish(client, "leaderboard", {"rank": 1})

        assert alice_ws.receive_json() == {
            "type": "event",
            "channel": "notifications",
            "data": {"title": "Order filled"},
        }
        assert bob_ws.receive_json() == {
            "type": "event",
            "channel": "leaderboard",
            "data": {"rank": 1},
        }


async def test_a_users_job_reports_its_progress_on_their_jobs_channel_only(
    settings_factory: Any, database: Database, alice: Someone, bob: Someone
) -> None:
    from tests.core import sample_jobs

    app = create_app(settings_factory(jobs_run_in_serve=True), configure_logs=False)
    with (
        TestClient(app) as client,
        client.websocket_connect(WS) as alice_ws,
        client.websocket_connect(WS) as bob_ws,
    ):
        authenticate(alice_ws, token=alice.token)
        authenticate(bob_ws, token=bob.token)
        subscribe(alice_ws, "jobs")
        subscribe(bob_ws, "jobs", "leaderboard")
        assert client.portal is not None
        enqueue = functools.partial(
            app.state.jobs.enqueue_now,
            sample_jobs.progress,
            {"hold": 0.1},
            owner_id=alice.user_id,
        )
        run = client.portal.call(enqueue)
        frames = []
        while not frames or frames[-1]["data"]["status"] != "succeeded":
            frames.append(alice_ws.receive_json())
        assert {frame["channel"] for frame in frames} == {"jobs"}
        assert {frame["data"]["id"] for frame in frames} == {run.id}
        assert [f["data"]["status"] for f in frames] == [
            "queued",
            "running",
            "running",
            "succeeded",
        ]
        assert frames[2]["data"]["progress"] == 50
        # bob's next frame is the public one published after the job ended, not alice's job.
        publish(client, "leaderboard", {"rank": 1})
        assert bob_ws.receive_json()["channel"] == "leaderboard"


async def test_another_users_channel_is_refused(
    client: TestClient, alice: Someone, bob: Someone
) -> None:
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=bob.token)
        for channel in (f"user:{alice.user_id}:notifications", f"user:{bob.user_id}:orders"):
            ws.send_json({"op": "subscribe", "channels": [channel]})
            frame = ws.receive_json()
            assert frame["type"] == "error"
            assert frame["code"] == "forbidden-channel"
        ws.send_json({"op": "subscribe", "channels": ["nonsense", "leaderboard"]})
        assert ws.receive_json()["code"] == "unknown-channel"
        # Nothing of a refused request was applied, and the connection still works.
        publish(client, f"user:{alice.user_id}:notifications", {"secret": True})
        subscribe(ws, "tickers:BTC-USD", "candles:BTC-USD:1m")
        publish(client, "candles:BTC-USD:1m", {"close": "1"})
        assert ws.receive_json() == {
            "type": "event",
            "channel": "candles:BTC-USD:1m",
            "data": {"close": "1"},
        }


@pytest.fixture
def no_live_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app starts without its live feed: only the events a test publishes arrive."""
    monkeypatch.setattr(market_startup, "live_feed", lambda *args: None)


@pytest.mark.usefixtures("no_live_feed")  # before the app starts
async def test_market_channels_take_any_spelling_of_the_symbol(
    client: TestClient, alice: Someone
) -> None:
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=alice.token)
        ws.send_json(
            {
                "op": "subscribe",
                "channels": ["tickers:btc-usd", "candles:BTCUSD:1h", "candles:eth/usd:1m"],
            }
        )
        # Acknowledged under the canonical names, which the events then carry.
        assert ws.receive_json() == {
            "type": "subscribed",
            "channels": ["tickers:BTC-USD", "candles:BTC-USD:1h", "candles:ETH-USD:1m"],
        }
        ws.send_json({"op": "subscribe", "channels": ["tickers:BTC/USD", "tickers:btc_usd"]})
        assert ws.receive_json() == {"type": "subscribed", "channels": ["tickers:BTC-USD"]}
        # The live feed publishes on the canonical topics.
        for topic in ("tickers:BTC-USD", "candles:BTC-USD:1h", "candles:ETH-USD:1m"):
            publish(client, topic, {"topic": topic})
            assert ws.receive_json() == {
                "type": "event",
                "channel": topic,
                "data": {"topic": topic},
            }
        ws.send_json({"op": "unsubscribe", "channels": ["tickers:BTCUSD"]})
        assert ws.receive_json() == {"type": "unsubscribed", "channels": ["tickers:BTC-USD"]}
        publish(client, "tickers:BTC-USD", {"gone": True})
        publish(client, "candles:BTC-USD:1h", {"still": True})
        assert ws.receive_json()["channel"] == "candles:BTC-USD:1h"


@pytest.mark.parametrize(
    ("channel", "says"),
    [
        ("candles:BTC-USD:2h", "Unknown timeframe '2h'"),
        ("candles:BTC-USD:1M", "Unknown timeframe '1M'"),
        ("candles:BTC-USD:", "Unknown timeframe ''"),
        ("candles:BTC-USD", "use tickers:<SYMBOL>"),
        ("candles:BTC-USD:1m:1h", "use tickers:<SYMBOL>"),
        ("tickers:", "use tickers:<SYMBOL>"),
        ("tickers:BTC USD", "use tickers:<SYMBOL>"),
        ("tickers:NOPE-USD", "no instrument 'NOPE-USD'"),
        ("candles:dogeusd:1m", "no instrument 'dogeusd'"),
    ],
)
async def test_a_malformed_market_channel_is_refused(
    client: TestClient, alice: Someone, channel: str, says: str
) -> None:
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=alice.token)
        ws.send_json({"op": "subscribe", "channels": ["tickers:BTC-USD", channel]})
        frame = ws.receive_json()
        assert frame["type"] == "error"
        assert frame["code"] == "unknown-channel"
        assert says in frame["message"]
        assert set(frame) == {"type", "code", "message"}
        # Nothing of the refused request was applied, and the connection still works.
        publish(client, "tickers:BTC-USD", {"refused": True})
        subscribe(ws, "leaderboard")
        publish(client, "leaderboard", {"rank": 1})
        assert ws.receive_json()["channel"] == "leaderboard"


async def test_unsubscribe_stops_events(client: TestClient, alice: Someone) -> None:
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=alice.token)
        subscribe(ws, "tickers:BTC-USD", "leaderboard")
        ws.send_json({"op": "unsubscribe", "channels": ["tickers:BTC-USD"]})
        assert ws.receive_json() == {"type": "unsubscribed", "channels": ["tickers:BTC-USD"]}
        publish(client, "tickers:BTC-USD", {"price": "1"})
        publish(client, "leaderboard", {"rank": 2})
        assert ws.receive_json()["channel"] == "leaderboard"


async def test_too_many_channels_is_an_error_frame(
    client: TestClient, alice: Someone, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "MAX_CHANNELS", 3)
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=alice.token)
        subscribe(ws, "tickers:BTC-USD", "tickers:ETH-USD")
        ws.send_json({"op": "subscribe", "channels": ["tickers:SOL-USD", "tickers:BNB-USD"]})
        assert ws.receive_json()["code"] == "too-many-channels"
        subscribe(ws, "tickers:SOL-USD")


async def test_malformed_json_and_unknown_op_keep_the_connection(
    client: TestClient, alice: Someone
) -> None:
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=alice.token)
        ws.send_text("{not json")
        assert ws.receive_json()["code"] == "malformed-json"
        ws.send_json({"op": "dance"})
        assert ws.receive_json()["code"] == "unknown-op"
        ws.send_json(["op", "ping"])
        assert ws.receive_json()["code"] == "bad-message"
        ws.send_json({"op": "ping"})
        assert ws.receive_json() == {"type": "pong"}


async def test_server_pings_and_idle_connections_close_1001(
    client: TestClient, alice: Someone, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "PING_INTERVAL_SECONDS", 0.2)
    monkeypatch.setattr(gateway, "IDLE_TIMEOUT_SECONDS", 0.5)
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=alice.token)
        assert ws.receive_json() == {"type": "ping"}
        assert close_code(ws) == 1001


async def test_slow_consumer_is_closed_1013(
    client: TestClient, alice: Someone, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "SEND_QUEUE_SIZE", 2)

    async def stalls_after_subscribing(self: Any) -> None:
        # A client that stops reading once subscribed: frames pile up in its outbox. (Works
        # the same on every event bus, however fast the bus delivers.)
        for _ in range(2):  # "authenticated", "subscribed"
            frame = await self.outbox.get()
            await self.websocket.send_text(orjson.dumps(frame).decode())
        await asyncio.Event().wait()

    monkeypatch.setattr(gateway._Connection, "_send", stalls_after_subscribing)
    with client.websocket_connect(WS) as ws:
        authenticate(ws, token=alice.token)
        subscribe(ws, "leaderboard")
        assert client.portal is not None

        async def flood() -> None:
            bus = client.app.state.events  # type: ignore[attr-defined]
            for rank in range(10):
                await bus.publish("leaderboard", {"rank": rank})

        client.portal.call(flood)
        assert close_code(ws) == 1013


@pytest.mark.skipif(TEST_REDIS_URL is None, reason="needs TEST_REDIS_URL")
async def test_an_event_from_one_api_process_reaches_a_client_of_another(
    settings: Settings, database: Database, alice: Someone, bob: Someone
) -> None:
    with (
        TestClient(create_app(settings, configure_logs=False)) as first,
        TestClient(create_app(settings, configure_logs=False)) as second,
        second.websocket_connect(WS) as alice_ws,
        second.websocket_connect(WS) as bob_ws,
    ):
        authenticate(alice_ws, token=alice.token)
        subscribe(alice_ws, "notifications", "leaderboard")
        authenticate(bob_ws, token=bob.token)
        subscribe(bob_ws, "notifications", "leaderboard")
        publish(first, f"user:{alice.user_id}:notifications", {"title": "for alice"})
        publish(first, "leaderboard", {"rank": 1})
        assert alice_ws.receive_json() == {
            "type": "event",
            "channel": "notifications",
            "data": {"title": "for alice"},
        }
        assert alice_ws.receive_json()["channel"] == "leaderboard"
        # Bob's next frame is the public event: Alice's notification never reached him.
        assert bob_ws.receive_json() == {
            "type": "event",
            "channel": "leaderboard",
            "data": {"rank": 1},
        }
