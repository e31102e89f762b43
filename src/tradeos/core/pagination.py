"""One pagination shape and one sort parameter for every list endpoint.

A list endpoint takes `page` (>= 1) and `size` (1..100, default 20) and answers
`{items, total, page, size, pages}`. `sort` is `field` or `-field` (descending), checked
against the endpoint's own whitelist; anything else is a 422 naming the allowed fields.

    SORT = Sorting({"created": User.created_at, "email": User.email}, default="-created")

    @router.get("/users")
    async def list_users(paging: PageQuery, order: Annotated[Ordering, Depends(SORT)], ...):
        return await paginate(session, select(User).order_by(*order.clauses), paging)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from tradeos.core.db import order_key
from tradeos.core.errors import ValidationFailed, field_error

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


U = TypeVar("U")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    size: int
    pages: int

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        """The same page with each item converted (rows to response models, say)."""
        return Page[U](
            items=[convert(item) for item in self.items],
            total=self.total,
            page=self.page,
            size=self.size,
            pages=self.pages,
        )


@dataclass(frozen=True)
class PageParams:
    page: int = 1
    size: int = DEFAULT_PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    def build(self, items: Sequence[T], total: int) -> Page[T]:
        return Page[T](
            items=list(items),
            total=total,
            page=self.page,
            size=self.size,
            pages=math.ceil(total / self.size) if total else 0,
        )


def page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")] = 1,
    size: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page, 1 to {MAX_PAGE_SIZE}.")
    ] = DEFAULT_PAGE_SIZE,
) -> PageParams:
    return PageParams(page=page, size=size)


PageQuery = Annotated[PageParams, Depends(page_params)]


@dataclass(frozen=True)
class Ordering:
    """The validated sort: the field named, its direction, and the ORDER BY clauses."""

    field: str
    descending: bool
    clauses: tuple[ColumnElement[Any], ...]


class Sorting:
    """A FastAPI dependency that validates `sort` against a whitelist of field -> column.

    A tie-breaker column (usually the primary key) keeps pages stable when values repeat.
    """

    def __init__(
        self,
        fields: Mapping[str, ColumnElement[Any] | Any],
        *,
        default: str,
        tie_breaker: ColumnElement[Any] | Any | None = None,
    ) -> None:
        self.fields = dict(fields)
        self.tie_breaker = tie_breaker
        self.default = default
        self.parse(default)  # a wrong default is a programming error: fail at import time
        # The allowed values go into the OpenAPI document; `parse` still checks them, so a
        # wrong one gets a 422 that lists what is allowed.
        choices = [f"{sign}{name}" for name in self.allowed for sign in ("", "-")]
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    "sort",
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[
                        str | None,
                        Query(
                            max_length=64,
                            description="`field` or `-field` for descending; empty or "
                            "absent: the default order.",
                            # An empty value is accepted as the default (as documented here),
                            # so the schema lists it with the fields.
                            json_schema_extra={"enum": [*choices, "", None]},
                        ),
                    ],
                )
            ]
        )

    @property
    def allowed(self) -> list[str]:
        return sorted(self.fields)

    def parse(self, sort: str) -> Ordering:
        descending = sort.startswith("-")
        name = sort.removeprefix("-").removeprefix("+").strip()
        if name not in self.fields:
            allowed = ", ".join(self.allowed)
            raise ValidationFailed(
                f"Cannot sort by {name!r}. Allowed: {allowed} (prefix with - for descending).",
                errors=[field_error("query.sort", f"must be one of: {allowed}", "enum")],
            )
        column = self.fields[name]
        keys = [order_key(column)]
        if self.tie_breaker is not None and self.tie_breaker is not column:
            keys.append(order_key(self.tie_breaker))
        clauses = [key.desc() if descending else key.asc() for key in keys]
        return Ordering(field=name, descending=descending, clauses=tuple(clauses))

    def __call__(self, sort: str | None = None) -> Ordering:
        return self.parse(sort or self.default)


async def paginate(session: AsyncSession, query: Select[Any], params: PageParams) -> Page[Any]:
    """Run `query` for one page, and count all its rows for `total`."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = (await session.scalars(query.limit(params.size).offset(params.offset))).all()
    return params.build(rows, int(total or 0))
