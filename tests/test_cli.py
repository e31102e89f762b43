"""The `tradeos` command, driven as a user would (always on its own SQLite file)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner, Result

from tradeos import __version__
from tradeos import migrations as db_migrations
from tradeos.accounts import service as accounts
from tradeos.accounts.models import User
from tradeos.cli import app
from tradeos.config import get_settings
from tradeos.core.db import Database
from tradeos.core.logging import configure_logging
from tradeos.core.security import verify_password
from tradeos.models import Base

ALL_TABLES = set(Base.metadata.tables)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    yield data_dir
    configure_logging("WARNING")


def run(*args: str, input: str | None = None) -> Result:
    get_settings.cache_clear()  # each invocation reads the environment afresh, like a new process
    return CliRunner().invoke(app, list(args), input=input)


T = TypeVar("T")


def _database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'tradeos.db'}"


def _in_database(data_dir: Path, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one unit of work on the CLI's database, as another process would."""

    async def run_it() -> T:
        database = Database(_database_url(data_dir))
        try:
            async with database.session() as session:
                return await work(session)
        finally:
            await database.dispose()

    return asyncio.run(run_it())


def _tables(data_dir: Path) -> set[str]:
    async def read(session: AsyncSession) -> set[str]:
        return await session.run_sync(
            lambda sync: set(inspect(sync.connection()).get_table_names())
        )

    return _in_database(data_dir, read) - {"alembic_version"}


def _user_count(data_dir: Path) -> int:
    async def count(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)

    return _in_database(data_dir, count)


def _check_password(data_dir: Path, login: str, password: str) -> bool:
    async def check(session: AsyncSession) -> bool:
        user = await accounts.find_user(session, login)
        assert user is not None, f"{login} not found"
        return (await verify_password(password, user.password_hash))[0]

    return _in_database(data_dir, check)


def _role_of(data_dir: Path, login: str) -> str:
    async def role(session: AsyncSession) -> str:
        user = await accounts.find_user(session, login)
        assert user is not None, f"{login} not found"
        return user.role

    return _in_database(data_dir, role)


def tradeos_process(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m tradeos ARGS` as a user would, with these environment variables added."""
    return subprocess.run(
        [sys.executable, "-m", "tradeos", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        check=False,
    )


def test_version() -> None:
    result = run("version")
    assert result.exit_code == 0 and result.output.strip() == f"TradeOS {__version__}"


def test_python_dash_m_runs_the_same_cli(tmp_path: Path) -> None:
    completed = tradeos_process(tmp_path, "--help")
    assert completed.returncode == 0
    for command in ("serve", "db", "version"):
        assert command in completed.stdout


def test_db_upgrade_current_downgrade(cli_env: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    assert _tables(cli_env) == ALL_TABLES
    current = run("db", "current")
    assert f"current: {db_migrations.head_revision()}" in current.output

    down = run("db", "downgrade", "base")
    assert down.exit_code == 0, down.output
    assert _tables(cli_env) == set()
    assert "none (empty database)" in run("db", "current").output

    assert run("db", "upgrade").exit_code == 0
    assert _tables(cli_env) == ALL_TABLES


def test_relative_revisions_and_unknown_ones(cli_env: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    back = run("db", "downgrade", "-1")
    assert back.exit_code == 0, back.output
    # One revision back: the newest revision's tables are gone, the older ones remain.
    scripts = ScriptDirectory.from_config(db_migrations.alembic_config(""))
    head = scripts.get_revision(db_migrations.head_revision())
    assert head is not None
    assert f"current: {head.down_revision}" in run("db", "current").output
    assert "users" in _tables(cli_env) < ALL_TABLES
    unknown = run("db", "upgrade", "nonsense")
    assert unknown.exit_code == 2
    assert "Can't locate revision" in unknown.output and "Traceback" not in unknown.output
    too_far = run("db", "upgrade", "+5")
    assert too_far.exit_code == 2 and "Traceback" not in too_far.output


def test_serve_on_a_database_from_a_newer_version_is_one_clear_line(cli_env: Path) -> None:
    assert run("db", "upgrade").exit_code == 0

    async def stamp_future(session: AsyncSession) -> None:
        await session.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    _in_database(cli_env, stamp_future)
    result = run("serve")
    assert result.exit_code == 2
    assert "Can't locate revision identified by '9999'" in result.output


def _seeded_passwords(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line) if cell.strip()]
        if len(cells) == 3 and cells[0] in ("admin", "demo"):
            rows[cells[0]] = cells[2]
    return rows


def test_seed_generates_passwords_printed_once(cli_env: Path) -> None:
    first = run("db", "seed")
    assert first.exit_code == 0, first.output
    passwords = _seeded_passwords(first.output)
    assert set(passwords) == {"admin", "demo"}
    assert passwords["admin"] != passwords["demo"] and len(passwords["admin"]) >= 12
    assert "only this once" in first.output
    assert _check_password(cli_env, "admin", passwords["admin"])
    assert _check_password(cli_env, "demo@example.com", passwords["demo"])
    assert _role_of(cli_env, "admin") == "super_admin"
    assert _role_of(cli_env, "demo") == "user"

    again = run("db", "seed")
    assert again.exit_code == 0
    assert passwords["admin"] not in again.output
    assert _seeded_passwords(again.output) == {
        "admin": "exists, left unchanged",
        "demo": "exists, left unchanged",
    }
    assert _check_password(cli_env, "admin", passwords["admin"])  # unchanged


def test_seed_takes_passwords_from_flags_and_environment(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEED_DEMO_PASSWORD", "demo-from-env-42")
    result = run(
        "db", "seed", "--admin-password", "admin-from-flag-7", "--admin-email", "boss@example.com"
    )
    assert result.exit_code == 0, result.output
    assert "admin-from-flag-7" not in result.output and "demo-from-env-42" not in result.output
    assert _check_password(cli_env, "boss@example.com", "admin-from-flag-7")
    assert _check_password(cli_env, "demo", "demo-from-env-42")


def test_seed_refuses_a_short_password(cli_env: Path) -> None:
    result = run("db", "seed", "--admin-password", "short")
    assert result.exit_code == 2 and "at least 8" in result.output


def test_reset_asks_before_destroying(cli_env: Path) -> None:
    assert (
        run(
            "db", "seed", "--admin-password", "admin-pass-123", "--demo-password", "demo-pass-123"
        ).exit_code
        == 0
    )

    refused = run("db", "reset", input="n\n")
    assert refused.exit_code == 1 and "deletes ALL data" in refused.output
    assert _check_password(cli_env, "admin", "admin-pass-123")  # still there

    accepted = run("db", "reset", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert _tables(cli_env) == ALL_TABLES
    assert _user_count(cli_env) == 0
    reseeded = run("db", "seed")  # empty again: both users are created afresh
    assert set(_seeded_passwords(reseeded.output).values()).isdisjoint({"exists, left unchanged"})
    assert _user_count(cli_env) == 2

    assert run("db", "reset", "--yes").exit_code == 0
    assert _user_count(cli_env) == 0


def test_reset_without_a_terminal_does_not_destroy(cli_env: Path) -> None:
    run("db", "upgrade")
    result = run("db", "reset")  # no input at all: the confirmation cannot be given
    assert result.exit_code != 0
    assert _tables(cli_env) == ALL_TABLES


def test_a_bad_setting_is_one_clear_line_and_no_traceback(tmp_path: Path) -> None:
    completed = tradeos_process(tmp_path, "serve", ENVIRONMENT="staging", DATA_DIR=str(tmp_path))
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("TradeOS cannot start: Invalid setting ENVIRONMENT:")
    assert "Traceback" not in completed.stderr + completed.stdout


def test_production_without_a_secret_refuses_to_start(tmp_path: Path) -> None:
    completed = tradeos_process(
        tmp_path, "serve", ENVIRONMENT="production", DATA_DIR=str(tmp_path), JWT_SECRET_KEY=""
    )
    assert completed.returncode == 2
    assert "JWT_SECRET_KEY" in completed.stderr and "Traceback" not in completed.stderr


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    completed = tradeos_process(
        tmp_path,
        *("db", "upgrade"),
        DATA_DIR=str(tmp_path),
        DATABASE_URL="postgresql://u:pw-not-shown@127.0.0.1:1/x",
    )
    assert completed.returncode == 2
    assert "cannot use the database at postgresql+asyncpg://u:***@127.0.0.1:1/x" in completed.stderr
    assert "pw-not-shown" not in completed.stderr and "Traceback" not in completed.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_migrates_the_embedded_database_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "ENVIRONMENT": "development"}
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY"):
        env.pop(name, None)
    server = subprocess.Popen(
        [sys.executable, "-m", "tradeos", "serve", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        health = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, "server did not answer"
        assert health.status_code == 200 and health.json()["checks"]["database"]["status"] == "up"
        info = httpx.get(f"http://127.0.0.1:{port}/api/v1/info", timeout=5).json()
        assert info["backends"] == {
            "database": "sqlite",
            "cache": "memory",
            "events": "memory",
            "broker": "memory",
        }
        assert (tmp_path / "data" / "tradeos.db").exists()
        assert (tmp_path / "data" / "jwt_secret").exists()
        assert _tables(tmp_path / "data") == ALL_TABLES
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=20)
    assert server.returncode == 0, output
    assert "Traceback" not in output


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    import uvicorn

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(
        uvicorn, "run", lambda target, **options: calls.append({"target": target, **options})
    )
    # `serve --workers N` sets this in os.environ; setenv first so monkeypatch restores it.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    return calls


def _fake_revision(monkeypatch: pytest.MonkeyPatch, revision: str | None) -> None:
    monkeypatch.setattr("tradeos.cli._current_revision", lambda _settings: revision)


def test_serve_refuses_a_shared_database_that_is_not_upgraded(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, uvicorn_calls: list[dict[str, object]]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://trader:pw-hidden@db.internal/tradeos")
    _fake_revision(monkeypatch, None)
    result = run("serve")
    assert result.exit_code == 2
    assert "Run: tradeos db upgrade" in result.output and "pw-hidden" not in result.output
    assert uvicorn_calls == []


def test_serve_starts_on_an_upgraded_shared_database_without_migrating_it(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, uvicorn_calls: list[dict[str, object]]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://trader@db.internal/tradeos")
    _fake_revision(monkeypatch, db_migrations.head_revision())
    monkeypatch.setattr(db_migrations, "upgrade", lambda *a, **k: pytest.fail("must not migrate"))
    result = run("serve", "--host", "0.0.0.0", "--port", "9001", "--workers", "3")
    assert result.exit_code == 0, result.output
    [call] = uvicorn_calls
    assert call["target"] == "tradeos.app:app_factory" and call["factory"] is True
    assert (call["host"], call["port"], call["workers"], call["reload"]) == (
        "0.0.0.0",
        9001,
        3,
        False,
    )
    # Several workers share metrics through files in a fresh directory.
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert metrics_dir == cli_env / "prometheus" and metrics_dir.is_dir()


def test_serve_reload_and_workers_do_not_combine(
    cli_env: Path, uvicorn_calls: list[dict[str, object]]
) -> None:
    result = run("serve", "--reload", "--workers", "2")
    assert result.exit_code == 2 and "cannot be combined" in result.output
    assert uvicorn_calls == []


@pytest.mark.parametrize("args", [["--port", "0"], ["--port", "70000"], ["--workers", "0"]])
def test_serve_rejects_bad_flags(
    cli_env: Path, uvicorn_calls: list[dict[str, object]], args: list[str]
) -> None:
    assert run("serve", *args).exit_code == 2
    assert uvicorn_calls == []


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_worker_and_scheduler_need_a_shared_broker(cli_env: Path, command: str) -> None:
    result = run(command)
    assert result.exit_code == 2
    assert f"tradeos {command} needs a shared job broker: set REDIS_URL" in result.output


def test_worker_refuses_an_unknown_queue(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    result = run("worker", "--queues", "high,urgent")
    assert result.exit_code == 2
    assert "--queues takes a comma-separated list of: high, default, low" in result.output
