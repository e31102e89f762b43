"""Strategy endpoints: /strategies and /strategies/validate."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, status

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.core.deps import PageQuery, ResourceId, SessionDep
from tradeos.core.fields import NoNul
from tradeos.core.pagination import Ordering, Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.strategies import service
from tradeos.strategies.models import Strategy, StrategyCategory
from tradeos.strategies.schemas import (
    FormulaCheck,
    FormulaCheckOut,
    StrategyIn,
    StrategyOut,
    StrategyPatch,
)

strategies = APIRouter(prefix="/strategies", tags=["strategies"])

_OWNER_ONLY = (
    "Only the owner may do this. Someone else's private strategy answers 404, as an id that "
    "does not exist does; someone else's public strategy, which every user can read, answers "
    "403. Checked before the body is."
)
_FORMULA_CHECKED = (
    " The formula is checked on save: each of its errors is a 422 `errors` entry under "
    "`body.formula` with its `line` and `column`; an override in `default_params` that names "
    "no parameter is one under `body.default_params.<name>`, and one that makes the formula "
    "invalid (a period below its minimum, say) is one under `body.default_params`. A public "
    "strategy needs a plan with strategy publishing (403 otherwise)."
)


async def _own_strategy(
    strategy_id: ResourceId, principal: TraderDep, session: SessionDep
) -> Strategy:
    # A dependency, so the ownership answer (404 / 403) comes before any body validation.
    return await service.get_own(session, principal.user_id, strategy_id)


OwnStrategy = Annotated[Strategy, Depends(_own_strategy)]


@strategies.post("/validate")
async def validate_formula(body: FormulaCheck, principal: ReaderDep) -> FormulaCheckOut:
    """Check a formula (and optional parameter overrides) without saving anything. A formula
    with errors is a 200 answer with `valid: false` and each error's line and column."""
    return service.check_formula(body.formula, body.params)


@strategies.post(
    "",
    status_code=status.HTTP_201_CREATED,
    description="A new strategy of yours. Plans hold at most their `max_strategies` (Free 5, "
    "Pro 100, Enterprise any number): 403 beyond." + _FORMULA_CHECKED,
)
async def create_strategy(
    body: StrategyIn, principal: TraderDep, session: SessionDep
) -> StrategyOut:
    strategy = await service.create_strategy(session, principal, body.model_dump())
    return service.as_out(strategy)


@strategies.get("")
async def list_strategies(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    order: Annotated[Ordering, Depends(service.STRATEGY_SORT)],
    mine: Annotated[
        bool | None,
        Query(description="true: only yours (public or not); false: only others' public ones."),
    ] = None,
    public: Annotated[
        bool | None, Query(description="true: only public ones; false: only your private ones.")
    ] = None,
    category: StrategyCategory | None = None,
    tag: Annotated[
        Annotated[str, NoNul] | None,
        Query(min_length=1, max_length=60, description="Only those with this tag."),
    ] = None,
    search: Annotated[
        Annotated[str, NoNul] | None,
        Query(
            max_length=100,
            description="Case-insensitive substring of the name or the description.",
        ),
    ] = None,
) -> Page[StrategyOut]:
    """Public strategies and your own private ones, newest first unless `sort` says otherwise;
    `rating` and `performance` sort the unrated / untested last in either direction."""
    query = service.strategies_query(
        principal.user_id,
        order,
        mine=mine,
        public=public,
        category=category.value if category else None,
        tag=tag,
        search=search,
    )
    page = await paginate(session, query, paging)
    return page.map(service.as_out)


# `:int`: only numbers are ids, so /strategies/validate is never taken for one.
@strategies.get("/{strategy_id:int}")
async def get_strategy(
    strategy_id: ResourceId, principal: ReaderDep, session: SessionDep
) -> StrategyOut:
    """A public strategy, or one of yours; anything else is a 404."""
    return service.as_out(await service.get_visible(session, principal.user_id, strategy_id))


@strategies.put(
    "/{strategy_id:int}",
    description="Replace every writable field; those left out take their defaults. "
    + _OWNER_ONLY
    + _FORMULA_CHECKED,
)
async def replace_strategy(
    strategy: OwnStrategy, body: StrategyIn, principal: TraderDep, session: SessionDep
) -> StrategyOut:
    updated = await service.replace_strategy(session, principal, strategy, body.model_dump())
    return service.as_out(updated)


@strategies.patch(
    "/{strategy_id:int}",
    description="Change only the fields sent (none may be null); the result is checked as a "
    "whole, so a new formula must still declare every parameter of the saved default_params. "
    + _OWNER_ONLY
    + _FORMULA_CHECKED,
)
async def update_strategy(
    strategy: OwnStrategy, body: StrategyPatch, principal: TraderDep, session: SessionDep
) -> StrategyOut:
    values = {**service.current_values(strategy), **body.model_dump(exclude_unset=True)}
    updated = await service.replace_strategy(session, principal, strategy, values)
    return service.as_out(updated)


@strategies.delete(
    "/{strategy_id:int}", status_code=status.HTTP_204_NO_CONTENT, description=_OWNER_ONLY
)
async def delete_strategy(strategy: OwnStrategy, session: SessionDep) -> None:
    await service.delete_strategy(session, strategy)


routers = (strategies,)
