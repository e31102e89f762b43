"""Work that must happen only once a session's transaction has committed.

Jobs and events a request asks for go out after its commit and are dropped on rollback
(DESIGN.md). `after_commit(session, action)` queues an async action on the session: it runs once
the outermost transaction commits, and is dropped if the transaction rolls back, if the session
closes without committing, or if the savepoint it was queued in rolls back.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import structlog
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["AfterCommitAction", "after_commit", "flush_after_commit"]

AfterCommitAction = Callable[[], Awaitable[None]]

logger = structlog.get_logger("tradeos.transactions")

_PENDING_KEY: Final = "tradeos.after_commit.pending"
_SAVEPOINT_MARKS_KEY: Final = "tradeos.after_commit.savepoint_marks"
# Running actions, referenced until done: the loop keeps only weak references to tasks.
_running: set[asyncio.Task[None]] = set()


def after_commit(session: AsyncSession, action: AfterCommitAction) -> None:
    """Run `action()` once the session's transaction commits (see the module docstring).
    Actions of one commit run in the order they were queued, in a task of their own with a
    fresh context (the request's unit of work is over by then). An action's exception is
    logged, never raised: the commit has happened."""
    pending: list[AfterCommitAction] = session.sync_session.info.setdefault(_PENDING_KEY, [])
    pending.append(action)


def _after_commit(session: Session) -> None:
    # SQLAlchemy also reports a released savepoint as a commit; only the outermost counts.
    if session.in_nested_transaction():
        return
    pending: list[AfterCommitAction] = session.info.pop(_PENDING_KEY, [])
    if not pending:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logger.error("after_commit_dropped_no_event_loop", count=len(pending))
        return
    # A fresh context: the committing unit of work's context variables (the open-session
    # marker among them) must not leak into the actions, which may open units of work.
    task = loop.create_task(
        _run_all(pending), name="tradeos:after-commit", context=contextvars.Context()
    )
    _running.add(task)
    task.add_done_callback(_running.discard)


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    # Remember how many actions were queued when a savepoint began, to drop what it queued if
    # it rolls back.
    if transaction.nested:
        marks: dict[int, int] = session.info.setdefault(_SAVEPOINT_MARKS_KEY, {})
        marks[id(transaction)] = len(session.info.get(_PENDING_KEY, []))


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
    elif previous_transaction.nested:
        marks: dict[int, int] = session.info.get(_SAVEPOINT_MARKS_KEY, {})
        mark = marks.pop(id(previous_transaction), None)
        pending = session.info.get(_PENDING_KEY)
        if mark is not None and pending is not None:
            del pending[mark:]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without a commit (after a commit the list is already
    # gone): close() without commit, for instance. Nothing carries over to the next one.
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_SAVEPOINT_MARKS_KEY, None)


# Listened to on every session once, here, not per session when an action is queued: adding
# listeners to a session instance costs more than a request's SQL statement. Each handler
# looks at the session's own `info` and does nothing for a session with nothing queued.
sa_event.listen(Session, "after_commit", _after_commit)
sa_event.listen(Session, "after_soft_rollback", _after_soft_rollback)
sa_event.listen(Session, "after_transaction_end", _after_transaction_end)
sa_event.listen(Session, "after_transaction_create", _after_transaction_create)


async def _run_all(pending: list[AfterCommitAction]) -> None:
    for action in pending:
        try:
            await action()
        except Exception as exc:
            logger.error("after_commit_action_failed", action=_name(action), error=repr(exc))


def _name(action: AfterCommitAction) -> str:
    return getattr(action, "__qualname__", None) or repr(action)


async def flush_after_commit() -> None:
    """Wait for the actions of sessions committed so far (at shutdown, before the ports they
    use close; in tests)."""
    while _running:
        await asyncio.gather(*list(_running), return_exceptions=True)
