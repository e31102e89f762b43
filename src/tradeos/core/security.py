"""Secrets: password hashing, signed access tokens (JWT), refresh tokens and API keys.

Argon2 costs ~0.3 s of CPU, so password work always runs in a worker thread. Refresh tokens
and API keys are random, so a plain SHA-256 (refresh tokens) or an HMAC keyed by the server
secret (API keys, so a stolen table alone cannot even confirm a guessed key) is enough to
store them: the secret itself is never kept.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from anyio import to_thread
from pwdlib import PasswordHash

_hasher = PasswordHash.recommended()
# Verified against when a login names no account, so a miss costs what a wrong password costs
# and response times do not tell which accounts exist.
_DECOY_HASH = _hasher.hash(secrets.token_urlsafe(16))

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "trd_"
# How much of a key is kept in clear to tell keys apart in a list: "trd_" + 8 characters.
API_KEY_DISPLAY_LENGTH = 12
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]


class InvalidToken(Exception):
    """An access token that is malformed, badly signed, expired or not meant for us."""


async def hash_password(password: str) -> str:
    return await to_thread.run_sync(_hasher.hash, password)


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Whether it matches, and a new hash when the stored one uses outdated parameters.

    With no stored hash (no such account) it still does the work of a verification.
    """
    if password_hash is None:
        await to_thread.run_sync(_hasher.verify, password, _DECOY_HASH)
        return False, None
    return await to_thread.run_sync(_hasher.verify_and_update, password, password_hash)


def issue_access_token(
    *,
    secret: str,
    issuer: str,
    audience: str,
    subject: str,
    lifetime: timedelta,
    now: datetime,
    claims: dict[str, Any],
) -> str:
    payload = {
        **claims,
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM)


# Tokens verified lately, by (token, secret, issuer, audience), with their claims: every
# signed-in request presents its token again, and PyJWT's checks cost ~0.4 ms of CPU each time.
# Only the signature and claim checks are remembered, never the session behind the token: the
# caller still looks that up on every request, so a revoked session or a disabled user is
# refused at once. Expiry is checked again on every use.
_VERIFIED_TOKENS_MAX = 4096
_verified_tokens: OrderedDict[tuple[str, str, str, str], dict[str, Any]] = OrderedDict()


def decode_access_token(token: str, *, secret: str, issuer: str, audience: str) -> dict[str, Any]:
    """The claims of a token we signed for this audience, or InvalidToken.

    The algorithm is pinned: a token that says `alg: none` or any other algorithm is refused.
    """
    key = (token, secret, issuer, audience)
    claims = _verified_tokens.get(key)
    if claims is None:
        claims = _verified_claims(token, secret=secret, issuer=issuer, audience=audience)
        _verified_tokens[key] = claims
        if len(_verified_tokens) > _VERIFIED_TOKENS_MAX:
            _verified_tokens.popitem(last=False)
    elif claims["exp"] <= datetime.now(UTC).timestamp():  # as PyJWT compares it
        del _verified_tokens[key]
        raise InvalidToken("The access token has expired.")
    else:
        _verified_tokens.move_to_end(key)
    return dict(claims)


def _verified_claims(token: str, *, secret: str, issuer: str, audience: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer=issuer,
            audience=audience,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The access token has expired.") from None
    except jwt.PyJWTError:
        raise InvalidToken("The access token is not valid.") from None
    return claims


def new_refresh_token() -> str:
    return secrets.token_urlsafe(48)


def token_digest(token: str) -> str:
    """How a random token (a refresh token) is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_key(value: str) -> bool:
    return value.startswith(API_KEY_PREFIX) and 20 <= len(value) <= 100


def api_key_digest(key: str, server_secret: str) -> str:
    """The keyed hash an API key is stored and looked up by."""
    # A key of its own, derived from the server secret, so these hashes never equal anything
    # else the secret signs.
    hashing_key = hmac.new(server_secret.encode(), b"tradeos api key", hashlib.sha256).digest()
    return hmac.new(hashing_key, key.encode(), hashlib.sha256).hexdigest()
