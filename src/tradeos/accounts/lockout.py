"""Brute-force protection wherever a password is checked (sign-in, password change)."""

from __future__ import annotations

from dataclasses import dataclass

from tradeos.config import Settings
from tradeos.core.errors import RateLimited
from tradeos.core.ratelimit import RateLimiter


class AccountLocked(RateLimited):
    slug, title = "account-locked", "Too many failed password attempts"


# What a lock stops, in the words of the refusal.
SIGN_IN = "signing in to this account"
PASSWORD_CHANGE = "changing this account's password (signing in still works)"  # noqa: S105


@dataclass(frozen=True)
class LoginGuard:
    """Brute-force protection wherever a password is checked (sign-in, password change).

    Each attempt is counted *before* its password is checked, so a burst of parallel guesses
    cannot slip past the count: at most LOGIN_MAX_FAILURES passwords are checked per window,
    however many requests arrive at once. A success wipes the count; the failure that uses up
    the last attempt locks the key for LOGIN_LOCKOUT_MINUTES. Failures are also counted per
    client network, whatever accounts they aim at. The counters live in the rate limiter's
    storage: in-process, or Redis shared by every API process.
    """

    limiter: RateLimiter
    settings: Settings

    @property
    def _attempts(self) -> str:
        s = self.settings
        return f"{s.login_max_failures} per {s.login_failure_window_minutes} minutes"

    @property
    def _lock(self) -> str:
        return f"1 per {self.settings.login_lockout_minutes} minutes"

    @property
    def _network_failures(self) -> str:
        s = self.settings
        return f"{s.login_max_failures_per_ip} per {s.login_failure_window_minutes} minutes"

    async def begin(self, key: str, network: str, *, locks: str = SIGN_IN) -> None:
        """Refuse the attempt if the network or the key is locked out; otherwise count it.
        `locks` names, for the refusal, what a lock of this key stops."""
        by_network = await self.limiter.peek(self._network_failures, "login-failures-ip", network)
        if not by_network.allowed:
            raise RateLimited(
                "Too many failed sign-in attempts from your network address. "
                f"Try again in {by_network.retry_after} s.",
                retry_after=by_network.retry_after,
            )
        lock = await self.limiter.peek(self._lock, "login-lock", key)
        if not lock.allowed:
            raise self._locked(lock.retry_after, locks)
        attempt = await self.limiter.hit(self._attempts, "login-attempts", key)
        if not attempt.allowed:  # more attempts in flight than the key has left
            raise self._locked(self.settings.login_lockout_minutes * 60, locks)

    async def failed(self, key: str, network: str) -> bool:
        """The attempt failed; True when it used up the last one and so locked the key."""
        await self.limiter.hit(self._network_failures, "login-failures-ip", network)
        left = await self.limiter.peek(self._attempts, "login-attempts", key)
        if left.allowed:
            return False
        await self.limiter.hit(self._lock, "login-lock", key)
        # After the lock ends the key gets its full number of attempts again.
        await self.limiter.clear(self._attempts, "login-attempts", key)
        return True

    async def succeeded(self, key: str) -> None:
        await self.limiter.clear(self._attempts, "login-attempts", key)

    async def locked_error(self, key: str, *, locks: str = SIGN_IN) -> AccountLocked:
        lock = await self.limiter.peek(self._lock, "login-lock", key)
        return self._locked(lock.retry_after, locks)

    def _locked(self, retry_after: int, locks: str) -> AccountLocked:
        minutes = max(1, round(retry_after / 60))
        # The same words whether or not the account exists.
        return AccountLocked(
            f"Too many failed password attempts: {locks} is locked; "
            f"try again in about {minutes} minute{'s' if minutes != 1 else ''}.",
            retry_after=retry_after,
        )
