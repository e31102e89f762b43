"""Password rules (pure): long enough, and not one of the passwords everybody tries first."""

from __future__ import annotations

import gzip
from functools import cache
from importlib.resources import files

MIN_PASSWORD_LENGTH = 8


@cache
def common_passwords() -> frozenset[str]:
    """About 20,000 common passwords, lower-cased.

    The list is Royce Williams' (https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce),
    as shipped, deduplicated and lower-cased, by Django (BSD licence).
    """
    data = files("tradeos.accounts").joinpath("common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode().split())


def password_problem(password: str) -> str | None:
    """Why a new password is refused, in words a user understands; None when it is fine."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters long"
    if password.strip().lower() in common_passwords():
        return "is one of the most common passwords; choose something less guessable"
    return None
