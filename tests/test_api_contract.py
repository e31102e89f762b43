"""Every operation in the OpenAPI document, fuzzed with valid and invalid input (schemathesis):
no 5xx, responses match the documented schema, and every error is a problem+json document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from tempfile import gettempdir
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
)
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import make_api_key, make_user
from tradeos.accounts.models import Role
from tradeos.app import create_app
from tradeos.billing.plans import Tier
from tradeos.config import Settings

# Operations with a rule JSON Schema cannot state, so schema-valid input may rightly be refused
# with 422: a password must not be a common one; an email's domain must not be a reserved one
# (`.test`, `.invalid`); a key's expiry must be in the future; an uploaded document must be a
# PDF, JPEG or PNG by its content; a time window's start must not be after its end.
RULES_BEYOND_THE_SCHEMA = {
    "/api/v1/admin/audit",
    "/api/v1/auth/kyc/upload",
    "/api/v1/auth/register",
    "/api/v1/users/me",
    "/api/v1/users/me/password",
    "/api/v1/api-keys",
    # start must come before end; a symbol in the path may name no instrument (404, fine) or
    # not be a symbol at all (404 too).
    "/api/v1/market/candles/{symbol}",
    "/api/v1/cryptocurrencies",  # min_market_cap must not be above max_market_cap
    "/api/v1/cryptocurrencies/{symbol}/history",  # start before end
    # Orders: prices and quantities must be whole ticks and steps of the instrument, the
    # account must afford them and the risk profile allow them; an account name is unique.
    "/api/v1/orders",
    "/api/v1/accounts",
    "/api/v1/positions/{symbol}",  # a symbol may name no instrument (404)
    "/api/v1/risk/profile",  # percentages are 0 to 100: a bound a string's schema cannot state
    # Sizing: the stop must differ from the entry, and exactly one of equity and account_id.
    "/api/v1/risk/position-size",
    # A signal or a close becomes orders under the same rules as /orders; a close needs an open
    # position of at most the quantity asked.
    "/api/v1/trading/execute",
    "/api/v1/trading/close",
    "/api/v1/positions/{symbol}/close",
    # A formula must be one the formula language accepts, and default_params must name its
    # parameters.
    "/api/v1/strategies",
    "/api/v1/strategies/{strategy_id}",
    # Backtests: a formula the language accepts, exactly one of strategy_id and formula, end
    # after start within 200,000 bars, symbols that name instruments, a grid of at most 10,000
    # combinations of values the formula accepts.
    "/api/v1/backtests",
    "/api/v1/backtests/optimize",
    # Journal entries: whole ticks and steps, a time not in the future, affordable; trades and
    # history: a time window's start before its end, at most 1000 history buckets.
    "/api/v1/trades",
    "/api/v1/portfolio/history",
}


@schemathesis.check
def errors_are_problem_documents(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type") or response.headers.get("Content-Type")
    if isinstance(content_type, list):
        content_type = content_type[0]
    assert content_type == "application/problem+json", f"{response.status_code}: {content_type}"
    body = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "detail", "request_id"} <= set(body)


def _document_app() -> FastAPI:
    # Only its OpenAPI document is read at collection time; it never serves a request.
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        data_dir=Path(gettempdir()) / "tradeos-openapi",
        jwt_secret_key="openapi-document-only-Zq7Lm2Vx9pT4",
    )
    return create_app(settings, configure_logs=False)


_document = _document_app()
schema = schemathesis.openapi.from_dict(_document.openapi())
schema.app = _document  # in-process transport; each test passes the app it really calls


@pytest.fixture
def live_app(app: FastAPI) -> Iterator[FastAPI]:
    yield app
    # schemathesis runs an app's lifespan in a thread of its own; end it to release the database.
    schemathesis_asgi.shutdown_lifespans()


# Far from any id the generated requests are likely to name, so no example deletes, revokes or
# deactivates the credentials the others run with.
FUZZER_ID = 900_000_001


@pytest.fixture
async def fuzzer_key(session: AsyncSession, settings: Settings) -> str:
    """An API key with every scope, of a super admin on the top tier: the generated requests
    reach the endpoints' validation and logic, not just the authentication in front of them
    (tests/test_security.py covers requests without credentials)."""
    user = await make_user(
        session, id=FUZZER_ID, role=Role.SUPER_ADMIN.value, tier=Tier.ENTERPRISE.value
    )
    _, secret = await make_api_key(
        session, settings, user, scopes=["read", "trade", "admin"], id=FUZZER_ID
    )
    await session.commit()
    return secret


# The Python types of a JSON Schema type (a bool is not a number here).
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "array": (list, tuple),
    "object": (dict,),
}


def _declared_types(definition: dict[str, Any]) -> set[str]:
    schema = definition.get("schema", {})
    options = schema.get("anyOf", [schema])
    return {option["type"] for option in options if "type" in option}


def _of_type(value: Any, types: set[str]) -> bool:
    if isinstance(value, bool):
        return "boolean" in types
    return any(isinstance(value, _PYTHON_TYPES[name]) for name in types if name in _PYTHON_TYPES)


def _query_value_of_another_type(case: Any) -> bool:
    """A query parameter the fuzzer generated as another JSON type than its own to make the
    request invalid. On the wire a query value is only text: `mine=[false]` goes out as
    `mine=false` and `symbol=["¾"]` as `symbol=¾`, valid requests the API rightly answers, so
    schemathesis's "negative data accepted" would be a false positive (schemathesis issues
    #2312, #3962). Values of the right type that break a bound or a pattern stay checked."""
    declared = {p.name: _declared_types(p.definition) for p in case.operation.query}
    return any(
        name in declared and declared[name] and not _of_type(value, declared[name])
        for name, value in (case.query or {}).items()
    )


@schema.parametrize()
# One app serves all the examples of an operation.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_every_operation_honours_its_contract(
    case: Any, live_app: FastAPI, fuzzer_key: str
) -> None:
    # Every request carries a valid key; refusals without one are tests/test_security.py's job.
    excluded = [ignored_auth]
    if case.path in RULES_BEYOND_THE_SCHEMA:
        excluded.append(positive_data_acceptance)
    if _query_value_of_another_type(case):
        excluded.append(negative_data_rejection)
    headers = {
        name: value
        for name, value in (case.headers or {}).items()
        if name.lower() not in ("authorization", "x-api-key")
    }
    case.headers = {**headers, "X-API-Key": fuzzer_key}
    case.call_and_validate(app=live_app, excluded_checks=excluded)
