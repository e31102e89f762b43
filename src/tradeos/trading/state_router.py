"""The trading state endpoint: PUT /accounts/{id}/trading-state."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.core.deps import EventsDep, ResourceId, SessionDep
from tradeos.core.fields import NoNul, text
from tradeos.core.routing import APIRouter
from tradeos.market.deps import ProviderDep
from tradeos.risk.rules import TradingState
from tradeos.trading import service, state
from tradeos.trading.models import TradingAccount
from tradeos.trading.schemas import AccountOut

accounts = APIRouter(prefix="/accounts", tags=["trading"])


class TradingStateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: TradingState = Field(
        description="active; reducing (only orders that reduce a position); halted."
    )
    reason: Annotated[str, text(200), NoNul] | None = None


class AccountStateOut(AccountOut):
    """The account, with why its trading state is what it is."""

    trading_state_reason: str | None
    trading_state_set_by: str | None = Field(description='"user", or "risk" (daily loss limit).')
    trading_state_resumes_to: str | None = Field(
        description="An automatic halt: the state the account returns to at the next UTC day."
    )
    trading_state_changed_at: datetime | None
    resumes_at: datetime | None = Field(description="When an automatic halt ends.")


def state_out(account: TradingAccount) -> AccountStateOut:
    automatic = state.status_of(account).halted_automatically
    changed = account.trading_state_changed_at
    return AccountStateOut(
        **service.account_out(account).model_dump(),
        trading_state_reason=account.trading_state_reason,
        trading_state_set_by=account.trading_state_set_by,
        trading_state_resumes_to=account.trading_state_resumes_to if automatic else None,
        trading_state_changed_at=changed,
        resumes_at=state.next_day_start(changed) if automatic and changed else None,
    )


@accounts.get("/{account_id}/trading-state")
async def get_trading_state(
    account_id: ResourceId, principal: ReaderDep, session: SessionDep
) -> AccountStateOut:
    """The account with its trading state, why, by whom and since when."""
    account = await service.get_account(session, principal.user_id, account_id)
    return state_out(account)


@accounts.put(
    "/{account_id}/trading-state",
    responses={409: {"description": "The daily loss limit halted the account until 00:00 UTC."}},
)
async def put_trading_state(
    account_id: ResourceId,
    body: TradingStateIn,
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    provider: ProviderDep,
) -> AccountStateOut:
    """Set the account's trading state: `active`, `reducing` (only orders that reduce a
    position, closes included) or `halted` (no new risk; reducing orders and closes still go).
    409 while the daily loss limit's automatic halt holds: it lifts itself at the next UTC
    day."""
    account = await state.set_trading_state(
        session, events, provider, principal.user_id, account_id, body.state, body.reason
    )
    return state_out(account)


routers = (accounts,)
