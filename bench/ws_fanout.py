"""WebSocket fan-out on one server process: TradeOS's gateway vs a bare FastAPI loop.

    python bench/ws_fanout.py [--clients 1000] [--events 20] [--client-procs 1]
                              [--redis-url redis://127.0.0.1:6379/15] [--compression deflate]

N WebSocket clients subscribe to one public channel (`tickers:BENCH-USD`) on one uvicorn
process (uvloop, uvicorn's default WebSocket implementation, as `tradeos serve` runs it); then
events are published one at a time, each stamped with `time.time_ns()` just before it is
published. Every client notes when each event arrives. Per event: the time until the LAST
client had it, and the mean over clients; then p50 / p99 of the per-event figures (20 events
after 3 warm-up ones; with 20 events p99 is close to the worst one).

Variants, each on a fresh server process:

- baseline: a bare FastAPI app, the same clients and frames; publishing loops over the
  connected sockets and awaits `send_text` on each (the framework floor, no TradeOS).
- tradeos: the TradeOS app (`create_app()`, embedded SQLite in a temporary DATA_DIR, in-process
  event bus) with the real gateway at /api/v1/ws. The embedded bus cannot be reached from
  outside, so this bench's launcher adds one route, /bench/publish, that calls
  `app.state.events.publish` (bench code only, not in src/).
- tradeos-redis (with --redis-url): the same app with REDIS_URL set; the bench publishes
  straight to Redis on `{REDIS_KEY_PREFIX}:events:tickers:BENCH-USD`, as a worker would.

Clients run in --client-procs processes (uvloop, the `websockets` library), which share the
machine with the server: their own cost is in every figure, the baseline's included. One
process reads 1,000 sockets with ~25 ms of CPU per event, less than the server spends; on two
cores, more client processes only take CPU from the server (see bench/RESULTS.md).

Besides latency, the table shows CPU time per event (server, clients; from /proc, so hardly
disturbed by other work on the machine), the server's cyclic-GC time per event, the full
collections seen while measuring and what one full collection takes in the server, and the
1-minute load average. Diagnostic suffixes on a variant (+nodeflate, +gcfreeze, +gcstart,
+gc0=N, +nomw, +onehop: see --help) change one thing each, to find where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect

CHANNEL = "tickers:BENCH-USD"
WARMUP = 3
PASSWORD = "bench-password-1234"  # noqa: S105 - a throwaway user in a temporary database
CONNECTS_IN_FLIGHT = 25  # per client process


# -- servers (run as `python bench/ws_fanout.py _server <kind> <port>`) -------------------------


def _serve(variant: str, port: int) -> None:
    import uvicorn

    kind, *options = variant.split("+")
    app = _baseline_app() if kind == "baseline" else _tradeos_app(options)
    for option in options:
        if option.startswith("gc0="):  # diagnosis: fewer young collections during a fan-out
            gc.set_threshold(int(option[4:]), *gc.get_threshold()[1:])
    if "gcstart" in options:  # diagnosis: freeze what exists at startup, as an app could
        gc.collect()
        gc.freeze()
    # As `tradeos serve` runs it: one process, default loop (uvloop) and protocols.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        ws_per_message_deflate="nodeflate" not in options,
    )


def _gc_routes(app: Any) -> None:
    """Bench only: /bench/gc (POST resets, GET reads) times the cyclic GC's runs in the server,
    so a slow event can be matched with a collection; /bench/gc-freeze calls gc.freeze()."""
    from starlette.responses import JSONResponse

    runs: list[tuple[int, float]] = []  # (generation, milliseconds)
    started: list[float] = []

    def timing(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            runs.append((info["generation"], (time.perf_counter() - started[0]) * 1000))

    gc.callbacks.append(timing)

    async def stats(request: Request) -> JSONResponse:
        if request.method == "POST":
            runs.clear()
        full = [ms for generation, ms in runs if generation == 2]
        figures = {
            "runs": len(runs),
            "total_ms": sum(ms for _, ms in runs),
            "full_runs": len(full),
            "longest_full_ms": max(full, default=0.0),
        }
        if "probe" in request.query_params:  # how long one full collection takes right now
            probe = time.perf_counter()
            gc.collect()
            figures["full_probe_ms"] = (time.perf_counter() - probe) * 1000
        return JSONResponse(figures)

    async def freeze(request: Request) -> JSONResponse:
        gc.collect()
        gc.freeze()  # what is alive now (app, connections, tasks) is never scanned again
        return JSONResponse({"frozen": gc.get_freeze_count()})

    app.add_route("/bench/gc", stats, methods=["GET", "POST"])
    app.add_route("/bench/gc-freeze", freeze, methods=["POST"])


def _tradeos_app(options: list[str]) -> Any:
    from starlette.responses import JSONResponse

    from tradeos.app import create_app

    app = create_app()

    async def publish(request: Request) -> JSONResponse:
        seq = (await request.json())["seq"]
        sent_ns = time.time_ns()
        await request.app.state.events.publish(CHANNEL, {"seq": seq, "sent_ns": sent_ns})
        return JSONResponse({"sent_ns": sent_ns})

    # Bench only: the embedded event bus has no way in from outside the process.
    app.add_route("/bench/publish", publish, methods=["POST"])
    _gc_routes(app)
    if "onehop" in options:  # diagnosis: what the outbox -> sender task hop costs
        _forward_without_outbox()
    if "nomw" not in options:
        return app

    # Diagnosis: WebSocket messages skip the HTTP middleware stack's send wrappers.
    async def websockets_past_middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope["app"] = app
            await app.router(scope, receive, send)
        else:
            await app(scope, receive, send)

    return websockets_past_middleware


def _forward_without_outbox() -> None:
    from tradeos.notifications import gateway

    async def forward(self: Any, subscription: Any, by_topic: dict[str, str]) -> None:
        with contextlib.suppress(Exception):
            async for event in subscription:
                channel = by_topic.get(event.topic)
                if channel is not None:
                    frame = {"type": "event", "channel": channel, "data": event.payload}
                    await self.websocket.send_text(orjson.dumps(frame).decode())

    gateway._Connection._forward = forward  # type: ignore[method-assign]


def _baseline_app() -> Any:
    app = FastAPI()
    subscribers: set[WebSocket] = set()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        protocols = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=protocols[0] if protocols else None)
        await websocket.send_text(orjson.dumps({"type": "authenticated"}).decode())
        try:
            while True:
                message = orjson.loads(await websocket.receive_text())
                if message.get("op") == "subscribe":
                    subscribers.add(websocket)
                    frame = {"type": "subscribed", "channels": message["channels"]}
                    await websocket.send_text(orjson.dumps(frame).decode())
        except WebSocketDisconnect:
            pass
        finally:
            subscribers.discard(websocket)

    @app.post("/bench/publish")
    async def publish(request: Request) -> dict[str, int]:
        seq = (await request.json())["seq"]
        sent_ns = time.time_ns()
        frame = {"type": "event", "channel": CHANNEL, "data": {"seq": seq, "sent_ns": sent_ns}}
        text = orjson.dumps(frame).decode()
        for websocket in list(subscribers):
            with contextlib.suppress(Exception):
                await websocket.send_text(text)
        return {"sent_ns": sent_ns}

    _gc_routes(app)
    return app


# -- clients (one process each) ---------------------------------------------------------------


@dataclass
class ClientJob:
    index: int
    url: str
    token: str | None
    sockets: int
    events: int
    compression: str | None


def _client_process(
    job: ClientJob,
    ready: Any,
    received: Any,
    done: Any,
    results: Any,
) -> None:
    import uvloop

    results.put((job.index, uvloop.run(_client_main(job, ready, received, done))))


async def _client_main(
    job: ClientJob,
    ready: Any,
    received: Any,
    done: Any,
) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    latencies: list[list[int]] = [[] for _ in range(job.events)]
    base = job.index * job.events
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    connections: list[Any] = []
    errors: list[str] = []

    async def listen(connection: Any) -> None:
        with contextlib.suppress(Exception):
            async for raw in connection:
                now = time.time_ns()  # first, before any parsing
                frame = orjson.loads(raw)
                if frame["type"] == "event":
                    seq = frame["data"]["seq"]
                    latencies[seq].append(now - frame["data"]["sent_ns"])
                    received[base + seq] += 1  # this process's own slots: no lock needed
                elif frame["type"] == "ping":
                    await connection.send('{"op": "pong"}')

    async def open_one() -> None:
        async with gate:
            protocols = [Subprotocol(f"bearer.{job.token}")] if job.token else None
            connection = await connect(
                job.url,
                subprotocols=protocols,
                compression=job.compression,
                ping_interval=None,
                max_queue=None,
                open_timeout=60,
            )
            assert orjson.loads(await connection.recv())["type"] == "authenticated"
            await connection.send(orjson.dumps({"op": "subscribe", "channels": [CHANNEL]}).decode())
            assert orjson.loads(await connection.recv())["type"] == "subscribed"
            connections.append(connection)
            ready[job.index] += 1

    async def open_guarded() -> None:
        try:
            await open_one()
        except Exception as exc:
            errors.append(repr(exc))
            ready[len(ready) // 2 + job.index] += 1  # failed: the driver stops waiting for it

    await asyncio.gather(*(open_guarded() for _ in range(job.sockets)))
    listeners = [asyncio.create_task(listen(connection)) for connection in connections]
    while not done.is_set():  # noqa: ASYNC110 - a multiprocessing event, not an asyncio one
        await asyncio.sleep(0.05)
    for connection in connections:
        with contextlib.suppress(Exception):
            await connection.close()
    for task in listeners:
        task.cancel()
    return {"latencies": latencies, "errors": errors[:3], "failed": len(errors)}


# -- the driver -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit("the server did not come up within 60 s")


def _sign_up(base_url: str) -> str:
    user = {"email": "bench@example.com", "username": "bench", "password": PASSWORD}
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=30) as http:
        http.post("/auth/register", json=user).raise_for_status()
        answer = http.post("/auth/login", json={"login": "bench", "password": PASSWORD})
        answer.raise_for_status()
        token: str = answer.json()["access_token"]
        return token


@dataclass
class Figures:
    variant: str
    client_procs: int
    connected: int
    last_p50: float
    last_p99: float
    last_max: float
    mean_p50: float
    lost: int
    load: float  # 1-minute load average when the variant finished: others' work shows here
    server_cpu_ms: float  # per event
    gc_ms: float  # per event: time the server spent in the cyclic GC while measuring
    gc_full_runs: int  # full (generation 2) collections in the server while measuring
    gc_full_ms: float  # what one full collection takes in the server, measured afterwards
    clients_cpu_ms: float  # per event, all client processes


def _cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far: unlike latency, hardly disturbed by
    other work on the machine."""
    assert pid is not None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_variant(
    variant: str,
    *,
    clients: int,
    events: int,
    client_procs: int,
    compression: str | None,
    redis_url: str | None,
    interval: float,
) -> Figures:
    total_events = WARMUP + events
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="tradeos-bench-") as data_dir:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("REDIS_URL", "DATABASE_URL", "JWT_SECRET_KEY")
        }
        prefix = f"bench-{uuid.uuid4().hex[:12]}"
        env.update(
            DATA_DIR=data_dir,
            ENVIRONMENT="development",
            LOG_LEVEL="WARNING",
            RATE_LIMIT_AUTH="1000/minute",
            RATE_LIMIT_USER="1000000/minute",
            REDIS_KEY_PREFIX=prefix,
        )
        if variant.startswith("tradeos-redis"):
            assert redis_url is not None
            env["REDIS_URL"] = redis_url
        kind = "baseline" if variant.startswith("baseline") else "tradeos"
        if kind == "tradeos":  # what `tradeos serve` does first on an embedded database
            subprocess.run(
                [sys.executable, "-m", "tradeos", "db", "upgrade"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        server = subprocess.Popen(  # noqa: S603 - this very script, as the server
            [sys.executable, __file__, "_server", variant, str(port)], env=env
        )
        try:
            _wait_until_up(base_url, server)
            token = _sign_up(base_url) if kind == "tradeos" else None
            ws_url = f"ws://127.0.0.1:{port}" + ("/api/v1/ws" if kind == "tradeos" else "/ws")
            return _drive(
                variant,
                ws_url,
                base_url,
                token,
                clients=clients,
                total_events=total_events,
                client_procs=client_procs,
                compression=compression,
                redis_url=redis_url if variant.startswith("tradeos-redis") else None,
                channel=f"{prefix}:events:{CHANNEL}",
                interval=interval,
                server_pid=server.pid,
            )
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _drive(
    variant: str,
    ws_url: str,
    base_url: str,
    token: str | None,
    *,
    clients: int,
    total_events: int,
    client_procs: int,
    compression: str | None,
    redis_url: str | None,
    channel: str,
    interval: float,
    server_pid: int,
) -> Figures:
    context = mp.get_context("spawn")
    ready = context.Array("i", 2 * client_procs, lock=False)  # connected, then failed
    received = context.Array("i", client_procs * total_events, lock=False)
    done = context.Event()
    results = context.Queue()
    shares = [clients // client_procs + (i < clients % client_procs) for i in range(client_procs)]
    processes = [
        context.Process(
            target=_client_process,
            args=(
                ClientJob(i, ws_url, token, share, total_events, compression),
                ready,
                received,
                done,
                results,
            ),
        )
        for i, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    publisher: Any = None
    try:
        started = time.monotonic()
        while sum(ready) < clients and time.monotonic() - started < 180:  # connected + failed
            if not all(process.is_alive() for process in processes):
                break
            time.sleep(0.1)
        connected = sum(ready[:client_procs])
        print(
            f"  {variant}: {connected}/{clients} clients connected in "
            f"{time.monotonic() - started:.1f} s",
            flush=True,
        )
        time.sleep(1.0)  # let the connect burst settle
        if "+gcfreeze" in variant:  # diagnosis: the GC's share of the fan-out
            httpx.post(f"{base_url}/bench/gc-freeze", timeout=30).raise_for_status()
        if redis_url is not None:
            import redis

            publisher = redis.Redis.from_url(redis_url)
        http = httpx.Client(base_url=base_url, timeout=30)
        for seq in range(total_events):
            if seq == WARMUP:
                http.post("/bench/gc").raise_for_status()
                server_cpu = _cpu_seconds(server_pid)
                clients_cpu = sum(_cpu_seconds(process.pid) for process in processes)
            if publisher is not None:
                payload = {"seq": seq, "sent_ns": time.time_ns()}
                publisher.publish(channel, orjson.dumps(payload))
            else:
                http.post("/bench/publish", json={"seq": seq}).raise_for_status()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if sum(received[i * total_events + seq] for i in range(client_procs)) >= connected:
                    break
                time.sleep(0.002)
            time.sleep(interval)  # quiet between events: each is measured on its own
        measured = total_events - WARMUP
        gc_stats = http.get("/bench/gc", params={"probe": 1}).json()
        server_cpu = (_cpu_seconds(server_pid) - server_cpu) / measured
        clients_cpu = (sum(_cpu_seconds(p.pid) for p in processes) - clients_cpu) / measured
        http.close()
    finally:
        done.set()
        outcomes = dict(results.get(timeout=120) for _ in processes)
        for process in processes:
            process.join(timeout=30)
        if publisher is not None:
            publisher.close()

    failed = sum(outcome["failed"] for outcome in outcomes.values())
    for outcome in outcomes.values():
        for error in outcome["errors"]:
            print(f"    connect error: {error}")
    last: list[float] = []
    means: list[float] = []
    lost = 0
    for seq in range(WARMUP, total_events):
        per_client = [
            latency / 1e6 for outcome in outcomes.values() for latency in outcome["latencies"][seq]
        ]
        lost += connected - len(per_client)
        if per_client:
            last.append(max(per_client))
            means.append(statistics.fmean(per_client))
    if failed:
        print(f"    {failed} clients failed to connect")
    return Figures(
        variant=variant,
        client_procs=client_procs,
        connected=connected,
        last_p50=_quantile(last, 0.5),
        last_p99=_quantile(last, 0.99),
        last_max=max(last),
        mean_p50=_quantile(means, 0.5),
        lost=lost,
        load=os.getloadavg()[0],
        server_cpu_ms=server_cpu * 1000,
        gc_ms=gc_stats["total_ms"] / (total_events - WARMUP),
        gc_full_runs=gc_stats["full_runs"],
        gc_full_ms=gc_stats["full_probe_ms"],
        clients_cpu_ms=clients_cpu * 1000,
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_server":
        _serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument(
        "--client-procs",
        default="1",
        help="client processes; a comma-separated list runs every variant with each",
    )
    parser.add_argument("--redis-url", help="also run TradeOS on the Redis event bus")
    parser.add_argument(
        "--compression",
        choices=["deflate", "none"],
        default="deflate",
        help="what the clients offer (browsers offer permessage-deflate; uvicorn accepts it)",
    )
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between events")
    parser.add_argument(
        "--variants",
        default="baseline,tradeos,tradeos-redis",
        help="comma-separated: baseline, tradeos, tradeos-redis; diagnostic suffixes: +nodeflate "
        "(the server declines permessage-deflate), +gcfreeze (gc.freeze() once all clients are "
        "in), +gcstart (gc.freeze() at startup), +gc0=N (young-generation GC threshold N), "
        "+nomw (WebSocket messages skip the HTTP middleware stack), +onehop (the gateway "
        "sends from its subscription pump, without the outbox and sender task)",
    )
    args = parser.parse_args()
    variants = [
        v for v in args.variants.split(",") if not v.startswith("tradeos-redis") or args.redis_url
    ]
    compression = None if args.compression == "none" else "deflate"
    rows: list[Figures] = []
    for client_procs in (int(n) for n in args.client_procs.split(",")):
        for variant in variants:
            rows.append(
                run_variant(
                    variant,
                    clients=args.clients,
                    events=args.events,
                    client_procs=client_procs,
                    compression=compression,
                    redis_url=args.redis_url,
                    interval=args.interval,
                )
            )
    print()
    print(
        f"{args.clients} clients, {args.events} events (+{WARMUP} warm-up), "
        f"compression={args.compression}; milliseconds"
    )
    print(
        "| variant | client procs | connected | last client p50 | last client p99 | "
        "worst | mean per client (p50) | server CPU / event | clients CPU / event | "
        "server GC / event | full GCs seen | one full GC | events lost | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.variant} | {row.client_procs} | {row.connected} | {row.last_p50:.1f} | "
            f"{row.last_p99:.1f} | {row.last_max:.1f} | {row.mean_p50:.1f} | "
            f"{row.server_cpu_ms:.1f} | {row.clients_cpu_ms:.1f} | "
            f"{row.gc_ms:.1f} | {row.gc_full_runs} | {row.gc_full_ms:.0f} | {row.lost} | "
            f"{row.load:.1f} |"
        )


if __name__ == "__main__":
    main()
