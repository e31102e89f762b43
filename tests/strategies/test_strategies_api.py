"""Strategies over HTTP: validating formulas, saving them, who sees and changes which."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_api_key, make_user, sign_in
from tradeos.accounts.models import User
from tradeos.config import Settings
from tradeos.strategies import service
from tradeos.strategies.models import Strategy, StrategyTag

API = "/api/v1/strategies"
# The formula language's own example (tradeos.strategies.formula, tests/strategies/test_formula.py).
EXAMPLE = """fast = 10
slow = 20
entry_long  = crossover(sma(close, fast), sma(close, slow))
exit_long   = crossunder(sma(close, fast), sma(close, slow))
entry_short = crossunder(sma(close, fast), sma(close, slow))
exit_short  = crossover(sma(close, fast), sma(close, slow))
"""
RULES = ["entry_long", "exit_long", "entry_short", "exit_short"]
BROKEN = "fast = 10\nentry_long = crossover(sma(close, fast), smaa(close, 20))\n"
SMA_PERIOD = "sma() period must be a whole number from 2 to 10000, got 1"

Headers = dict[str, str]


async def signed_in(session: AsyncSession, settings: Settings, tier: str) -> tuple[User, Headers]:
    user = await make_user(session, tier=tier)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    return user, headers


@pytest.fixture
async def alice(session: AsyncSession, settings: Settings) -> tuple[User, Headers]:
    return await signed_in(session, settings, "pro")


@pytest.fixture
async def bob(session: AsyncSession, settings: Settings) -> tuple[User, Headers]:
    return await signed_in(session, settings, "pro")


def body(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"name": "SMA cross", "formula": EXAMPLE}
    values.update(overrides)
    return values


async def create(client: httpx.AsyncClient, headers: Headers, **overrides: Any) -> dict[str, Any]:
    response = await client.post(API, headers=headers, json=body(**overrides))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


# -- validate --------------------------------------------------------------------------------


async def test_validate_the_example_formula(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    response = await client.post(f"{API}/validate", headers=headers, json={"formula": EXAMPLE})
    assert response.status_code == 200
    assert response.json() == {
        "valid": True,
        "parameters": {"fast": 10, "slow": 20},
        "rules": RULES,
        "series": [],
        "errors": [],
        "param_errors": [],
    }


async def test_validate_a_broken_formula_answers_200_with_line_and_column(
    client: httpx.AsyncClient, alice: Any
) -> None:
    _, headers = alice
    response = await client.post(f"{API}/validate", headers=headers, json={"formula": BROKEN})
    assert response.status_code == 200
    result = response.json()
    assert result["valid"] is False
    assert result["errors"] == [
        {"line": 2, "column": 42, "message": "unknown function 'smaa' — did you mean 'sma'?"}
    ]
    assert result["parameters"] == {"fast": 10}  # what was read before the error


async def test_validate_checks_parameter_overrides(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    ok = await client.post(
        f"{API}/validate", headers=headers, json={"formula": EXAMPLE, "params": {"fast": 5}}
    )
    assert ok.json()["valid"] is True and ok.json()["parameters"] == {"fast": 5, "slow": 20}

    bad = (
        await client.post(
            f"{API}/validate",
            headers=headers,
            json={"formula": EXAMPLE, "params": {"fast": 1, "nope": 2}},
        )
    ).json()
    assert bad["valid"] is False
    assert bad["param_errors"] == [
        {"parameter": "nope", "message": "unknown parameter 'nope' (parameters: fast, slow)"}
    ]
    # The override makes every sma(close, fast) invalid, each said where it is.
    assert [(e["line"], e["column"], e["message"]) for e in bad["errors"]] == [
        (3, 36, SMA_PERIOD),
        (4, 37, SMA_PERIOD),
        (5, 37, SMA_PERIOD),
        (6, 36, SMA_PERIOD),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"formula": 5},
        {"formula": ["fast = 1"]},
        {},
        {"formula": EXAMPLE, "params": {"fast": "5"}},
        {"formula": EXAMPLE, "params": {"fast": True}},
        {"formula": EXAMPLE, "other": 1},
    ],
)
async def test_validate_refuses_a_body_of_the_wrong_shape(
    client: httpx.AsyncClient, alice: Any, payload: dict[str, Any]
) -> None:
    _, headers = alice
    response = await client.post(f"{API}/validate", headers=headers, json=payload)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


# -- create and read -------------------------------------------------------------------------


async def test_create_and_read_back(client: httpx.AsyncClient, alice: Any) -> None:
    user, headers = alice
    created = await create(
        client,
        headers,
        description="Two moving averages.",
        default_params={"fast": 5},
        category="trend",
        tags=["Trend", " trend ", "SMA"],
    )
    assert created["id"] >= 1 and created["owner_id"] == user.id
    assert created["name"] == "SMA cross" and created["description"] == "Two moving averages."
    assert created["formula"] == EXAMPLE
    assert created["parameters"] == {"fast": 5, "slow": 20}
    assert created["default_params"] == {"fast": 5}
    assert created["rules"] == RULES
    assert created["category"] == "trend"
    assert created["tags"] == ["sma", "trend"]
    assert created["is_public"] is False
    assert created["rating_average"] is None and created["rating_count"] == 0
    assert created["subscriber_count"] == 0 and created["performance"] is None
    assert created["created_at"] == created["updated_at"]

    read = await client.get(f"{API}/{created['id']}", headers=headers)
    assert read.status_code == 200 and read.json() == created


async def test_defaults_of_a_minimal_strategy(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    created = await create(client, headers)
    assert created["description"] == "" and created["category"] == "other"
    assert created["tags"] == [] and created["default_params"] == {}
    assert created["parameters"] == {"fast": 10, "slow": 20}


async def test_a_bad_formula_is_a_422_with_each_error_at_its_line_and_column(
    client: httpx.AsyncClient, alice: Any
) -> None:
    _, headers = alice
    response = await client.post(API, headers=headers, json=body(formula=BROKEN))
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"] == [
        {
            "field": "body.formula",
            "message": "line 2, column 42: unknown function 'smaa' — did you mean 'sma'?",
            "type": "formula",
            "line": 2,
            "column": 42,
        }
    ]
    listed = await client.get(API, headers=headers)
    assert listed.json()["total"] == 0  # nothing was stored


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"nope": 3}, "body.default_params.nope"),
        ({"fast": "ten"}, "body.default_params.fast"),
        ({"fast": None}, "body.default_params.fast"),
        ({"fast": True}, "body.default_params.fast"),
        ({"fast": 1e16}, "body.default_params.fast"),
    ],
)
async def test_bad_default_params_are_422(
    client: httpx.AsyncClient, alice: Any, params: dict[str, Any], field: str
) -> None:
    _, headers = alice
    response = await client.post(API, headers=headers, json=body(default_params=params))
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_default_params_that_break_the_formula_are_422_with_the_place(
    client: httpx.AsyncClient, alice: Any
) -> None:
    _, headers = alice
    response = await client.post(API, headers=headers, json=body(default_params={"slow": 1}))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {error["field"] for error in errors} == {"body.default_params"}
    assert [(e["line"], e["column"]) for e in errors] == [(3, 54), (4, 55), (5, 55), (6, 54)]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "n" * 101}, "body.name"),
        ({"name": "   "}, "body.name"),
        ({"description": "d" * 5001}, "body.description"),
        ({"tags": [f"t{n}" for n in range(11)]}, "body.tags"),
        ({"tags": ["t" * 31]}, "body.tags.0"),
        ({"tags": [""]}, "body.tags.0"),
        ({"category": "astrology"}, "body.category"),
        ({"formula": ""}, "body.formula"),
        ({"owner_id": 1}, "body.owner_id"),
    ],
)
async def test_fields_out_of_bounds_are_422(
    client: httpx.AsyncClient, alice: Any, overrides: dict[str, Any], field: str
) -> None:
    _, headers = alice
    response = await client.post(API, headers=headers, json=body(**overrides))
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_bounds_are_inclusive(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    created = await create(
        client,
        headers,
        name="n" * 100,
        description="d" * 5000,
        tags=[f"{n:02d}" + "t" * 28 for n in range(10)],
    )
    assert len(created["name"]) == 100 and len(created["tags"]) == 10


async def test_free_plan_keeps_strategies_private_and_holds_five(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    _, headers = await signed_in(session, settings, "free")
    refused = await client.post(API, headers=headers, json=body(is_public=True))
    assert refused.status_code == 403
    assert refused.json()["required_feature"] == "strategy_publishing"
    for n in range(5):
        await create(client, headers, name=f"s{n}")
    beyond = await client.post(API, headers=headers, json=body(name="sixth"))
    assert beyond.status_code == 403 and beyond.json()["limit"] == 5
    assert (await client.get(API, headers=headers)).json()["total"] == 5


# -- listing ---------------------------------------------------------------------------------


async def test_visibility_across_two_users(client: httpx.AsyncClient, alice: Any, bob: Any) -> None:
    alice_user, alice_headers = alice
    _, bob_headers = bob
    a_private = await create(client, alice_headers, name="a private")
    a_public = await create(client, alice_headers, name="a public", is_public=True)
    b_private = await create(client, bob_headers, name="b private")
    b_public = await create(client, bob_headers, name="b public", is_public=True)

    async def names(headers: Headers, **params: Any) -> list[str]:
        response = await client.get(API, headers=headers, params=params)
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    assert await names(alice_headers) == ["b public", "a public", "a private"]
    assert await names(bob_headers) == ["b public", "b private", "a public"]
    assert await names(alice_headers, mine="true") == ["a public", "a private"]
    assert await names(alice_headers, mine="false") == ["b public"]
    assert await names(alice_headers, public="true") == ["b public", "a public"]
    assert await names(alice_headers, public="false") == ["a private"]
    assert await names(alice_headers, mine="true", public="true") == ["a public"]

    # By id: public ones to anyone, private ones only to their owner.
    for strategy, status in ((a_private, 200), (a_public, 200), (b_private, 404), (b_public, 200)):
        response = await client.get(f"{API}/{strategy['id']}", headers=alice_headers)
        assert response.status_code == status
    assert (await client.get(f"{API}/{b_public['id']}", headers=alice_headers)).json()[
        "owner_id"
    ] != alice_user.id


async def test_filters_by_category_tag_and_search(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    await create(client, headers, name="Golden Cross", category="trend", tags=["sma", "daily"])
    await create(
        client,
        headers,
        name="Band bounce",
        description="Buys the LOWER band at 100% risk_free",
        category="mean_reversion",
        tags=["bollinger"],
    )
    await create(client, headers, name="Breakout", category="breakout", tags=["sma"])

    async def names(**params: Any) -> list[str]:
        response = await client.get(API, headers=headers, params={"sort": "name", **params})
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    assert await names(category="trend") == ["Golden Cross"]
    assert await names(category="volatility") == []
    assert await names(tag="sma") == ["Breakout", "Golden Cross"]
    assert await names(tag="SMA") == ["Breakout", "Golden Cross"]  # tags are lower-case
    assert await names(tag="sm") == []  # exact, not a prefix
    assert await names(tag="sma", category="breakout") == ["Breakout"]
    assert await names(search="CROSS") == ["Golden Cross"]
    assert await names(search="lower band") == ["Band bounce"]  # in the description
    assert await names(search="100%") == ["Band bounce"]
    assert await names(search="%") == ["Band bounce"]  # a literal %, not a wildcard
    assert await names(search="golde_") == []  # a literal _, not a wildcard
    assert await names(search="risk_free") == ["Band bounce"]
    assert await names(search="b") == ["Band bounce", "Breakout"]
    bad = await client.get(API, headers=headers, params={"category": "astrology"})
    assert bad.status_code == 422


async def test_pagination(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    for n in range(5):
        await create(client, headers, name=f"s{n}")
    first = (await client.get(API, headers=headers, params={"size": 2})).json()
    assert (first["total"], first["page"], first["size"], first["pages"]) == (5, 1, 2, 3)
    assert [item["name"] for item in first["items"]] == ["s4", "s3"]
    last = (await client.get(API, headers=headers, params={"size": 2, "page": 3})).json()
    assert [item["name"] for item in last["items"]] == ["s0"]
    beyond = (await client.get(API, headers=headers, params={"size": 2, "page": 4})).json()
    assert beyond["items"] == [] and beyond["total"] == 5
    too_big = await client.get(API, headers=headers, params={"size": 101})
    assert too_big.status_code == 422


async def test_each_sort(client: httpx.AsyncClient, session: AsyncSession, alice: Any) -> None:
    _, headers = alice
    ids = {}
    for name in ("beta", "Alpha", "gamma", "delta"):
        ids[name] = (await create(client, headers, name=name))["id"]
    figures = {
        # name: (rating, subscribers, performance)
        "beta": (4.5, 10, "0.25"),
        "Alpha": (None, 3, None),
        "gamma": (2.0, 7, "-0.1"),
        "delta": (3.0, 0, None),
    }
    for name, (rating, subscribers, performance) in figures.items():
        await session.execute(
            update(Strategy)
            .where(Strategy.id == ids[name])
            .values(rating_average=rating, subscriber_count=subscribers)
        )
        if performance is not None:
            await service.record_performance(session, ids[name], Decimal(performance))
    await session.commit()

    async def order(sort: str | None) -> list[str]:
        params = {"sort": sort} if sort is not None else {}
        response = await client.get(API, headers=headers, params=params)
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    assert await order(None) == ["delta", "gamma", "Alpha", "beta"]  # newest first
    assert await order("created") == ["beta", "Alpha", "gamma", "delta"]
    assert await order("-created") == ["delta", "gamma", "Alpha", "beta"]
    assert await order("name") == ["Alpha", "beta", "delta", "gamma"]  # case-insensitive
    assert await order("-name") == ["gamma", "delta", "beta", "Alpha"]
    assert await order("rating") == ["gamma", "delta", "beta", "Alpha"]  # unrated last
    assert await order("-rating") == ["beta", "delta", "gamma", "Alpha"]
    assert await order("subscribers") == ["delta", "Alpha", "gamma", "beta"]
    assert await order("-subscribers") == ["beta", "gamma", "Alpha", "delta"]
    # Untested last either way; the id breaks the tie between them.
    assert await order("performance") == ["gamma", "beta", "Alpha", "delta"]
    assert await order("-performance") == ["beta", "gamma", "delta", "Alpha"]
    unknown = await client.get(API, headers=headers, params={"sort": "owner"})
    assert unknown.status_code == 422

    shown = (await client.get(f"{API}/{ids['beta']}", headers=headers)).json()
    assert shown["performance"] == "0.25" and shown["rating_average"] == 4.5
    assert shown["subscriber_count"] == 10


# -- changing --------------------------------------------------------------------------------


async def test_owner_replaces_patches_and_deletes(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    created = await create(
        client,
        headers,
        description="first",
        default_params={"fast": 5},
        category="trend",
        tags=["a", "b"],
    )
    url = f"{API}/{created['id']}"

    replaced = await client.put(
        url,
        headers=headers,
        json={"name": "Renamed", "formula": EXAMPLE, "tags": ["b", "c"], "is_public": True},
    )
    assert replaced.status_code == 200, replaced.text
    result = replaced.json()
    assert result["name"] == "Renamed" and result["tags"] == ["b", "c"]
    # A full replace: what was left out is back to its default.
    assert result["description"] == "" and result["category"] == "other"
    assert result["default_params"] == {} and result["parameters"] == {"fast": 10, "slow": 20}
    assert result["is_public"] is True
    assert result["created_at"] == created["created_at"]
    assert datetime.fromisoformat(result["updated_at"]) > datetime.fromisoformat(
        created["updated_at"]
    )

    patched = await client.patch(
        url, headers=headers, json={"description": "patched", "tags": ["C", "d"]}
    )
    assert patched.status_code == 200, patched.text
    result = patched.json()
    assert result["description"] == "patched" and result["tags"] == ["c", "d"]
    assert result["name"] == "Renamed" and result["is_public"] is True  # untouched

    new_formula = "fast = 3\nentry_long = close > sma(close, fast)\n"
    patched = await client.patch(
        url, headers=headers, json={"formula": new_formula, "default_params": {"fast": 4}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["parameters"] == {"fast": 4}
    assert patched.json()["rules"] == ["entry_long"]
    assert (await client.get(url, headers=headers)).json() == patched.json()

    deleted = await client.delete(url, headers=headers)
    assert deleted.status_code == 204
    assert (await client.get(url, headers=headers)).status_code == 404
    assert (await client.delete(url, headers=headers)).status_code == 404


async def test_a_change_is_checked_as_a_whole(client: httpx.AsyncClient, alice: Any) -> None:
    _, headers = alice
    created = await create(client, headers, default_params={"slow": 30})
    url = f"{API}/{created['id']}"
    # The saved default_params name `slow`, which the new formula does not declare.
    lost = await client.patch(
        url, headers=headers, json={"formula": "fast = 3\nentry_long = close > sma(close, fast)"}
    )
    assert lost.status_code == 422
    assert [error["field"] for error in lost.json()["errors"]] == ["body.default_params.slow"]

    broken = await client.put(url, headers=headers, json=body(formula=BROKEN))
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["line"] == 2

    for patch in ({"name": None}, {"tags": None}, {"is_public": None}, {"name": ""}):
        assert (await client.patch(url, headers=headers, json=patch)).status_code == 422
    assert (await client.get(url, headers=headers)).json() == created  # nothing changed


async def test_others_get_404_for_a_private_strategy_and_403_for_a_public_one(
    client: httpx.AsyncClient, alice: Any, bob: Any
) -> None:
    _, alice_headers = alice
    _, bob_headers = bob
    private = await create(client, alice_headers, name="private")
    public = await create(client, alice_headers, name="public", is_public=True)
    missing_id = public["id"] + 1000
    requests: list[tuple[str, dict[str, Any]]] = [
        ("GET", {}),
        ("PUT", {"json": body(name="stolen")}),
        ("PATCH", {"json": {"name": "stolen"}}),
        ("DELETE", {}),
    ]
    for method, kwargs in requests:
        foreign = await client.request(
            method, f"{API}/{private['id']}", headers=bob_headers, **kwargs
        )
        absent = await client.request(method, f"{API}/{missing_id}", headers=bob_headers, **kwargs)
        assert foreign.status_code == absent.status_code == 404, method
        assert foreign.json()["detail"] == absent.json()["detail"]  # nothing tells them apart

        on_public = await client.request(
            method, f"{API}/{public['id']}", headers=bob_headers, **kwargs
        )
        assert on_public.status_code == (200 if method == "GET" else 403), method

    # Ownership is answered before the body is looked at: an empty body tells nothing either.
    for method in ("PUT", "PATCH"):
        refused = await client.request(method, f"{API}/{private['id']}", headers=bob_headers)
        assert refused.status_code == 404
    for strategy in (private, public):
        unchanged = await client.get(f"{API}/{strategy['id']}", headers=alice_headers)
        assert unchanged.json() == strategy


async def test_a_read_only_api_key_reads_but_cannot_write(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, alice: Any
) -> None:
    user, headers = alice
    created = await create(client, headers)
    _, key = await make_api_key(session, settings, user, scopes=["read"])
    await session.commit()
    reader = {"X-API-Key": key}
    url = f"{API}/{created['id']}"
    assert (await client.get(API, headers=reader)).json()["total"] == 1
    assert (await client.get(url, headers=reader)).status_code == 200
    checked = await client.post(f"{API}/validate", headers=reader, json={"formula": EXAMPLE})
    assert checked.status_code == 200
    for method, target, kwargs in (
        ("POST", API, {"json": body()}),
        ("PUT", url, {"json": body(name="x")}),
        ("PATCH", url, {"json": {"name": "x"}}),
        ("DELETE", url, {}),
    ):
        refused = await client.request(method, target, headers=reader, **kwargs)
        assert refused.status_code == 403, method
        assert refused.json()["required_scope"] == "trade"
    assert (await client.get(url, headers=headers)).json() == created


async def test_deleting_a_strategy_deletes_its_tags(
    client: httpx.AsyncClient, session: AsyncSession, alice: Any
) -> None:
    _, headers = alice
    kept = await create(client, headers, tags=["x"])
    gone = await create(client, headers, tags=["x", "y"])
    assert (await client.delete(f"{API}/{gone['id']}", headers=headers)).status_code == 204
    rows = (await session.execute(select(StrategyTag.strategy_id, StrategyTag.tag))).all()
    assert [tuple(row) for row in rows] == [(kept["id"], "x")]
