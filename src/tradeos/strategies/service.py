"""Strategies: users' formulas, checked when saved, private to their owner or public to all.

Who sees what: a public strategy is readable by every signed-in user, a private one only by
its owner (anyone else gets the 404 an absent id gets). Only the owner changes or deletes one;
someone else's public strategy, which they can see, answers 403 to a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from tradeos.accounts import service as accounts
from tradeos.accounts.service import Principal
from tradeos.billing.plans import Feature, Quota, plan_for
from tradeos.core.db import to_exact_decimal, utcnow
from tradeos.core.errors import Forbidden, NotFound, ValidationFailed, field_error
from tradeos.core.pagination import Ordering, Sorting
from tradeos.strategies.formula import EvaluationError, FormulaError
from tradeos.strategies.formula.compiler import CompiledFormula, check_constants
from tradeos.strategies.formula.parser import parse
from tradeos.strategies.models import Strategy, StrategyCategory, StrategyTag
from tradeos.strategies.schemas import (
    FormulaCheckOut,
    FormulaErrorOut,
    ParameterErrorOut,
    StrategyOut,
)

NOT_FOUND = "No such strategy."

# -- checking formulas -----------------------------------------------------------------------


class FormulaCheck:
    """A formula read once: what it declares, and every problem of it and of the overrides."""

    def __init__(self, text: str, params: Mapping[str, float | int] | None = None) -> None:
        program, errors = parse(text)
        self.parameters: dict[str, float | int] = dict(program.parameters)
        self.rules = list(program.rules)
        self.series = list(program.series)
        self.param_errors: dict[str, str] = {}
        self.applied: dict[str, float | int] = dict(self.parameters)
        if not errors:
            values = {name: float(value) for name, value in self.parameters.items()}
            compiled = CompiledFormula(text, program)
            for name, value in (params or {}).items():
                try:
                    compiled.parameter_values({name: value})  # refuses unknown names, non-numbers
                except EvaluationError as error:
                    self.param_errors[name] = str(error)
                else:
                    values[name] = float(value)
                    self.applied[name] = value
            # Periods and the like, checked with the overrides that apply.
            errors = check_constants(program, values)
        self.errors: list[FormulaError] = errors

    @property
    def valid(self) -> bool:
        return not self.errors and not self.param_errors


def check_formula(text: str, params: Mapping[str, float | int] | None) -> FormulaCheckOut:
    checked = FormulaCheck(text, params)
    return FormulaCheckOut(
        valid=checked.valid,
        parameters=checked.applied,
        rules=checked.rules,
        series=checked.series,
        errors=[
            FormulaErrorOut(line=e.line, column=e.column, message=e.message) for e in checked.errors
        ],
        param_errors=[
            ParameterErrorOut(parameter=name, message=message)
            for name, message in checked.param_errors.items()
        ],
    )


def _checked_for_saving(formula: str, default_params: Mapping[str, float | int]) -> FormulaCheck:
    """The formula and its default parameters, or ValidationFailed listing each problem: a
    formula error under `body.formula` (or `body.default_params` when only an override makes
    it one) with its line and column."""
    without_params = FormulaCheck(formula)
    if without_params.errors:
        raise _invalid("body.formula", without_params.errors)
    checked = FormulaCheck(formula, default_params)
    if checked.param_errors:
        raise ValidationFailed(
            "default_params names something that is not a parameter of the formula.",
            errors=[
                field_error(f"body.default_params.{name}", message, "unknown_parameter")
                for name, message in checked.param_errors.items()
            ],
        )
    if checked.errors:
        raise _invalid("body.default_params", checked.errors)
    return checked


def _invalid(field: str, errors: list[FormulaError]) -> ValidationFailed:
    count = len(errors)
    return ValidationFailed(
        f"The formula has {count} error{'s' if count != 1 else ''}.",
        errors=[
            {
                **field_error(field, str(error), "formula"),
                "line": error.line,
                "column": error.column,
            }
            for error in errors
        ],
    )


# -- reading ---------------------------------------------------------------------------------


def as_out(strategy: Strategy) -> StrategyOut:
    return StrategyOut(
        id=strategy.id,
        owner_id=strategy.owner_id,
        name=strategy.name,
        description=strategy.description,
        formula=strategy.formula,
        parameters={**strategy.declared_params, **strategy.default_params},
        default_params=strategy.default_params,
        rules=strategy.rules,
        category=StrategyCategory(strategy.category),
        tags=[tag.tag for tag in strategy.tags],
        is_public=strategy.is_public,
        rating_average=strategy.rating_average,
        rating_count=strategy.rating_count,
        subscriber_count=strategy.subscriber_count,
        performance=strategy.performance,
        created_at=strategy.created_at,
        updated_at=strategy.updated_at,
    )


# Newest first by default; rating and performance put the unrated / untested last either way.
STRATEGY_SORT = Sorting(
    {
        "created": Strategy.created_at,
        "name": func.lower(Strategy.name),
        "rating": Strategy.rating_average,
        "subscribers": Strategy.subscriber_count,
        "performance": Strategy.performance,
    },
    default="-created",
    tie_breaker=Strategy.id,
)
_NULLS_LAST = {"rating": Strategy.rating_average, "performance": Strategy.performance}


def _with_tags() -> Select[Strategy]:
    return select(Strategy).options(selectinload(Strategy.tags))


def strategies_query(
    user_id: int,
    order: Ordering,
    *,
    mine: bool | None = None,
    public: bool | None = None,
    category: str | None = None,
    tag: str | None = None,
    search: str | None = None,
) -> Select[Strategy]:
    """The strategies `user_id` may see (public ones and their own), filtered and ordered."""
    conditions: list[ColumnElement[bool]] = [
        or_(Strategy.is_public.is_(True), Strategy.owner_id == user_id)
    ]
    if mine is not None:
        conditions.append(
            (Strategy.owner_id == user_id) if mine else (Strategy.owner_id != user_id)
        )
    if public is not None:
        conditions.append(Strategy.is_public.is_(public))
    if category is not None:
        conditions.append(Strategy.category == category)
    if tag is not None:
        conditions.append(
            exists().where(
                and_(StrategyTag.strategy_id == Strategy.id, StrategyTag.tag == tag.strip().lower())
            )
        )
    if search:
        conditions.append(
            or_(
                Strategy.name.icontains(search, autoescape=True),
                Strategy.description.icontains(search, autoescape=True),
            )
        )
    query = _with_tags().where(*conditions)
    if order.field in _NULLS_LAST:
        query = query.order_by(_NULLS_LAST[order.field].is_(None))
    return query.order_by(*order.clauses)


async def get_visible(session: AsyncSession, user_id: int, strategy_id: int) -> Strategy:
    """A strategy `user_id` may read: public, or their own."""
    strategy = await session.scalar(
        _with_tags().where(
            Strategy.id == strategy_id,
            or_(Strategy.is_public.is_(True), Strategy.owner_id == user_id),
        )
    )
    if strategy is None:
        raise NotFound(NOT_FOUND)
    return strategy


async def get_own(session: AsyncSession, user_id: int, strategy_id: int) -> Strategy:
    """A strategy `user_id` may change: 404 unless they can see it, 403 unless it is theirs."""
    strategy = await get_visible(session, user_id, strategy_id)
    if strategy.owner_id != user_id:
        raise Forbidden("Only the owner may change or delete a strategy.")
    return strategy


# -- writing ---------------------------------------------------------------------------------


def _may_publish(principal: Principal, is_public: bool) -> None:
    if is_public and not principal.has_feature(Feature.STRATEGY_PUBLISHING):
        raise Forbidden(
            f"Your plan ({principal.tier}) does not include publishing strategies. "
            "Keep it private or upgrade.",
            errors=[field_error("body.is_public", "needs strategy publishing", "forbidden")],
            extra={"required_feature": Feature.STRATEGY_PUBLISHING.value},
        )


def _set_tags(strategy: Strategy, tags: list[str]) -> None:
    # Keep the rows of tags that stay: deleting and re-adding one would insert before the
    # delete and clash on the primary key.
    wanted = set(tags)
    kept = [row for row in strategy.tags if row.tag in wanted]
    have = {row.tag for row in kept}
    strategy.tags = kept + [StrategyTag(tag=tag) for tag in sorted(wanted - have)]


def _apply(strategy: Strategy, values: Mapping[str, Any], checked: FormulaCheck) -> None:
    strategy.name = values["name"]
    strategy.description = values["description"]
    strategy.formula = values["formula"]
    strategy.declared_params = checked.parameters
    strategy.rules = checked.rules
    strategy.default_params = dict(values["default_params"])
    strategy.category = str(values["category"])
    strategy.is_public = values["is_public"]
    _set_tags(strategy, list(values["tags"]))


async def create_strategy(
    session: AsyncSession, principal: Principal, values: Mapping[str, Any]
) -> Strategy:
    """A new strategy of the principal, within their plan's MAX_STRATEGIES."""
    _may_publish(principal, values["is_public"])
    # Checked before the quota: a bad formula is told as such, whatever the count.
    checked = _checked_for_saving(values["formula"], values["default_params"])
    limit = plan_for(principal.tier).quota(Quota.MAX_STRATEGIES)
    if limit is not None:
        await accounts.lock_owner(session, principal.user_id)
        count = await session.scalar(
            select(func.count()).select_from(Strategy).where(Strategy.owner_id == principal.user_id)
        )
        if int(count or 0) >= limit:
            raise Forbidden(
                f"Your plan allows {limit} strategies. Delete one or upgrade your plan.",
                extra={"quota": Quota.MAX_STRATEGIES.value, "limit": limit},
            )
    now = utcnow()
    strategy = Strategy(owner_id=principal.user_id, tags=[], created_at=now, updated_at=now)
    _apply(strategy, values, checked)
    session.add(strategy)
    await session.flush()
    return await _reloaded(session, strategy.id)


async def replace_strategy(
    session: AsyncSession, principal: Principal, strategy: Strategy, values: Mapping[str, Any]
) -> Strategy:
    """PUT and PATCH alike: `values` is the whole new state of the writable fields."""
    if values["is_public"] and not strategy.is_public:
        _may_publish(principal, True)
    _apply(strategy, values, _checked_for_saving(values["formula"], values["default_params"]))
    strategy.updated_at = utcnow()
    await session.flush()
    return await _reloaded(session, strategy.id)


def current_values(strategy: Strategy) -> dict[str, Any]:
    """The writable fields as they are, for a PATCH to change some of them."""
    return {
        "name": strategy.name,
        "description": strategy.description,
        "formula": strategy.formula,
        "default_params": dict(strategy.default_params),
        "category": strategy.category,
        "tags": [tag.tag for tag in strategy.tags],
        "is_public": strategy.is_public,
    }


async def delete_strategy(session: AsyncSession, strategy: Strategy) -> None:
    await session.delete(strategy)
    await session.flush()


async def record_performance(
    session: AsyncSession, strategy_id: int, total_return: Decimal | str
) -> None:
    """Store a backtest's total return (a fraction) as the strategy's performance figure."""
    strategy = await session.get(Strategy, strategy_id)
    if strategy is None:
        raise NotFound(NOT_FOUND)
    strategy.performance = to_exact_decimal(total_return)
    strategy.performance_updated_at = utcnow()
    await session.flush()


async def _reloaded(session: AsyncSession, strategy_id: int) -> Strategy:
    # populate_existing: the columns the database set (timestamps) and the tags, as stored.
    strategy = await session.scalar(
        _with_tags().where(Strategy.id == strategy_id).execution_options(populate_existing=True)
    )
    assert strategy is not None
    return strategy
