"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    [command] = re.findall(r'^TEST_COMMAND="(.*)"$', ci, flags=re.MULTILINE)
    assert command + "\n" in _bash_blocks()


def test_the_first_command_installs_and_serves() -> None:
    first = _bash_blocks()[0].strip()
    assert first.startswith("python3 -m venv .venv && ")
    assert "-c constraints.txt -e ." in first and first.endswith("tradeos serve")


def test_every_dependency_is_pinned() -> None:
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert all(
        "==" in line
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for required in (
        "fastapi",
        "sqlalchemy",
        "alembic",
        "aiosqlite",
        "asyncpg",
        "redis",
        "structlog",
        "pytest",
    ):
        assert required in pins
