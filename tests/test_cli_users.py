"""`tradeos users create-admin`, driven as a user would (always on its own SQLite file)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner, Result

from tradeos.accounts import service as accounts
from tradeos.accounts.models import AuditEvent, User
from tradeos.cli import app
from tradeos.config import get_settings
from tradeos.core.db import Database
from tradeos.core.logging import configure_logging
from tradeos.core.security import verify_password

T = TypeVar("T")


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.delenv("TRADEOS_ADMIN_PASSWORD", raising=False)
    yield data_dir
    configure_logging("WARNING")


def run(*args: str, input: str | None = None) -> Result:
    get_settings.cache_clear()  # each invocation reads the environment afresh, like a new process
    return CliRunner().invoke(app, list(args), input=input)


def create_admin(*args: str, input: str | None = None) -> Result:
    return run("users", "create-admin", *args, input=input)


def _in_database(data_dir: Path, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one unit of work on the CLI's database, as another process would."""

    async def run_it() -> T:
        database = Database(f"sqlite+aiosqlite:///{data_dir / 'tradeos.db'}")
        try:
            async with database.session() as session:
                return await work(session)
        finally:
            await database.dispose()

    return asyncio.run(run_it())


def _account(data_dir: Path, login: str, password: str | None = None) -> dict[str, Any]:
    """The stored user named `login`: role, id, and whether `password` is theirs."""

    async def read(session: AsyncSession) -> dict[str, Any]:
        user = await accounts.find_user(session, login)
        assert user is not None, f"{login} not found"
        matches = password is not None and (await verify_password(password, user.password_hash))[0]
        return {"id": user.id, "role": user.role, "email": user.email, "password_ok": matches}

    return _in_database(data_dir, read)


def _user_count(data_dir: Path) -> int:
    async def count(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)

    return _in_database(data_dir, count)


def _audit(data_dir: Path, user_id: int) -> list[tuple[str, dict[str, Any]]]:
    async def read(session: AsyncSession) -> list[tuple[str, dict[str, Any]]]:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.target_user_id == user_id).order_by(AuditEvent.id)
        )
        return [(row.action, row.details) for row in rows]

    return _in_database(data_dir, read)


def test_creates_a_super_admin_with_the_given_password(cli_env: Path) -> None:
    result = create_admin(
        "--email", "root@example.com", "--username", "root", "--password", "long-secret-phrase-1"
    )
    assert result.exit_code == 0, result.output
    assert "super admin root <root@example.com>" in result.output
    assert "long-secret-phrase-1" not in result.output
    account = _account(cli_env, "root", "long-secret-phrase-1")
    assert (account["role"], account["email"], account["password_ok"]) == (
        "super_admin",
        "root@example.com",
        True,
    )
    # The log says where this administrator came from.
    assert _audit(cli_env, account["id"]) == [
        ("user_registered", {}),
        ("role_changed", {"from": None, "to": "super_admin", "via": "cli"}),
    ]


def test_no_super_makes_a_plain_admin(cli_env: Path) -> None:
    result = create_admin(
        "--email", "ops@example.com", "--username", "ops", "--password", "long-secret-phrase-2"
    )
    assert result.exit_code == 0
    result = create_admin(
        *("--email", "helper@example.com", "--username", "helper", "--no-super"),
        *("--password", "long-secret-phrase-3"),
    )
    assert result.exit_code == 0, result.output
    assert "Created admin helper" in result.output
    assert _account(cli_env, "helper")["role"] == "admin"
    assert _account(cli_env, "ops")["role"] == "super_admin"


def test_password_from_the_environment(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEOS_ADMIN_PASSWORD", "from-the-environment-9")
    result = create_admin("--email", "env@example.com", "--username", "env")
    assert result.exit_code == 0, result.output
    assert "from-the-environment-9" not in result.output and "shown only" not in result.output
    assert _account(cli_env, "env", "from-the-environment-9")["password_ok"]


def test_without_a_terminal_a_password_is_generated_and_printed_once(cli_env: Path) -> None:
    result = create_admin("--email", "gen@example.com", "--username", "gen")
    assert result.exit_code == 0, result.output
    match = re.search(r"shown only this once.*: (\S+)$", result.output, re.MULTILINE)
    assert match is not None, result.output
    password = match.group(1)
    assert len(password) >= 16
    assert _account(cli_env, "gen@example.com", password)["password_ok"]


def test_on_a_terminal_the_password_is_asked_twice_and_not_echoed(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tradeos.cli._stdin_is_terminal", lambda: True)
    result = create_admin(
        "--email",
        "typed@example.com",
        "--username",
        "typed",
        input="typed-secret-phrase\ntyped-secret-phrase\n",
    )
    assert result.exit_code == 0, result.output
    assert "typed-secret-phrase" not in result.output
    assert "Repeat" in result.output  # the confirmation was asked for
    assert _account(cli_env, "typed", "typed-secret-phrase")["password_ok"]


@pytest.mark.parametrize(
    ("email", "username"),
    [("ROOT@example.com", "someone"), ("other@example.com", "Root")],
)
def test_refuses_a_taken_email_or_username(cli_env: Path, email: str, username: str) -> None:
    first = create_admin(
        "--email", "root@example.com", "--username", "root", "--password", "long-secret-phrase-1"
    )
    assert first.exit_code == 0
    again = create_admin(
        "--email", email, "--username", username, "--password", "another-secret-phrase"
    )
    assert again.exit_code == 1
    lines = again.output.strip().splitlines()
    assert len(lines) == 1 and "already registered" in lines[0], again.output
    assert "Traceback" not in again.output
    assert _user_count(cli_env) == 1
    assert _account(cli_env, "root", "long-secret-phrase-1")["password_ok"]  # untouched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--email", "not-an-email", "--username", "x1x"), "email"),
        (("--email", "a@example.com", "--username", "has space"), "username"),
        (("--email", "a@example.com", "--username", "short", "--password", "tiny"), "at least 8"),
        (("--email", "a@example.com", "--username", "weak", "--password", "password1"), "common"),
    ],
)
def test_refuses_bad_input_with_the_sign_up_rules(
    cli_env: Path, args: tuple[str, ...], message: str
) -> None:
    result = create_admin(*args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (cli_env / "tradeos.db").exists() or _user_count(cli_env) == 0


def test_email_and_username_are_required(cli_env: Path) -> None:
    assert create_admin("--email", "a@example.com").exit_code == 2
    assert create_admin("--username", "someone").exit_code == 2
