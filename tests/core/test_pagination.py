"""Pagination and sorting: the one list shape every endpoint uses."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import serve_app
from tests.factories import make_user
from tradeos.accounts.models import User
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.deps import SessionDep
from tradeos.core.errors import ValidationFailed
from tradeos.core.pagination import Ordering, Page, PageParams, PageQuery, Sorting, paginate

USER_SORT = Sorting(
    {"username": User.username, "created": User.created_at}, default="username", tie_breaker=User.id
)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    username: str


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings, configure_logs=False)

    @app.get("/t/users", response_model=Page[UserOut])
    async def list_users(
        paging: PageQuery, order: Annotated[Ordering, Depends(USER_SORT)], session: SessionDep
    ) -> Page[Any]:
        return await paginate(session, select(User).order_by(*order.clauses), paging)

    return app


@pytest.fixture
async def ten_users(session: AsyncSession) -> None:
    for name in [
        "delta",
        "alpha",
        "juliet",
        "echo",
        "bravo",
        "india",
        "charlie",
        "golf",
        "hotel",
        "foxtrot",
    ]:
        await make_user(session, username=name, email=f"{name}@example.com")
    await session.commit()


async def test_default_page_and_size(settings: Settings, ten_users: None) -> None:
    async with serve_app(_app(settings)) as client:
        body = (await client.get("/t/users")).json()
    assert body["total"] == 10 and body["page"] == 1 and body["size"] == 20 and body["pages"] == 1
    assert [item["username"] for item in body["items"]][:3] == ["alpha", "bravo", "charlie"]


async def test_pages_split_and_sort_descending(settings: Settings, ten_users: None) -> None:
    async with serve_app(_app(settings)) as client:
        pages = [
            (
                await client.get("/t/users", params={"page": n, "size": 4, "sort": "-username"})
            ).json()
            for n in (1, 2, 3, 4)
        ]
    assert [p["pages"] for p in pages] == [3, 3, 3, 3]
    names = [item["username"] for p in pages for item in p["items"]]
    assert names == sorted(names, reverse=True) and len(names) == 10
    assert pages[3]["items"] == []  # past the end: an empty page, not an error


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": 0}, "query.page"),
        ({"size": 0}, "query.size"),
        ({"size": 101}, "query.size"),
        ({"page": "x"}, "query.page"),
    ],
)
async def test_bad_paging_is_a_422_naming_the_field(
    settings: Settings, database: object, params: dict, field: str
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/users", params=params)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_size_100_is_allowed(settings: Settings, database: object) -> None:
    async with serve_app(_app(settings)) as client:
        assert (await client.get("/t/users", params={"size": 100})).json()["size"] == 100


@pytest.mark.parametrize("sort", ["password_hash", "-email", "username;drop", ""])
async def test_sorting_by_a_field_not_in_the_whitelist_is_a_422_listing_the_allowed(
    settings: Settings, database: object, sort: str
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/users", params={"sort": sort})
    if sort == "":
        assert response.status_code == 200  # empty means the default order
        return
    assert response.status_code == 422
    body = response.json()
    assert "created, username" in body["detail"]
    assert body["errors"][0]["field"] == "query.sort"


def test_page_arithmetic() -> None:
    params = PageParams(page=3, size=7)
    assert params.offset == 14
    assert params.build([], 0).pages == 0
    assert params.build(["x"], 15).pages == 3
    assert params.build(["x"], 14).pages == 2


def test_a_wrong_default_sort_fails_at_definition() -> None:
    with pytest.raises(ValidationFailed):
        Sorting({"name": User.username}, default="-price")


def test_tie_breaker_follows_the_direction() -> None:
    ordering = USER_SORT.parse("-created")
    assert ordering.field == "created" and ordering.descending
    assert [str(clause) for clause in ordering.clauses] == [
        "users.created_at DESC",
        "users.id DESC",
    ]
