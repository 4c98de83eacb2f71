"""Failed API keys, counted per client address (clients.py) in Redis, so every replica counts
together: an address that has presented FAILED_KEY_LIMIT unknown, revoked or expired keys within
FAILED_KEY_WINDOW_SECONDS is answered 429 before any key it sends is looked up, until the window
(which starts with its first failure) ends.

A key is 256 random bits: no one guesses one. What the count stops is a client trying key after
key (a scanner, a leaked list, a script retrying a revoked key), each a database lookup, and it
names that client in the logs. A key that worked within the last day still passes, so a client
that shares its address with a failing one (behind the same NAT, or all clients alike where the
proxies do not pass clients' addresses on) is not locked out with it; the key is remembered by its
SHA-256, as the database keeps it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from functions.common.web import ApiError

log = logging.getLogger(__name__)
FAILURES_PREFIX = "vexa:keyfail:"
WORKED_PREFIX = "vexa:keyok:"
WORKED_SECONDS = 86_400  # how long a key that worked passes an address's block


@dataclass(frozen=True)
class FailedKeys:
    """The failed-key counts of client addresses. Without Redis nothing is counted (and this is
    logged): like the rate limit, the count protects capacity, not data."""

    client: redis.Redis
    limit: int  # failures an address may have in a window; 0: no limit
    window_seconds: int

    def check(self, address: str, digest: str) -> None:
        """429 `too_many_failed_keys` if `address` is over the limit and the key (its SHA-256) has not worked lately."""
        if self.limit <= 0:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(FAILURES_PREFIX + address)
            pipe.ttl(FAILURES_PREFIX + address)
            failures, ttl = pipe.execute()
            if int(failures or 0) < self.limit or self.client.exists(WORKED_PREFIX + digest):
                return
        except redis.RedisError as exc:
            log.warning("failed_keys.unavailable", extra={"error": str(exc)})
            return
        retry_after = ttl if ttl > 0 else self.window_seconds
        raise ApiError(429, "too_many_failed_keys",
                       f"too many invalid API keys came from your address; retry in {retry_after} s",
                       headers={"Retry-After": str(retry_after)})  # fmt: skip

    def failed(self, address: str, digest: str) -> None:
        """Count a key `address` presented that is unknown, revoked or expired."""
        if self.limit <= 0:
            return
        counter = FAILURES_PREFIX + address
        try:
            # One transaction: a window, once opened, always ends (its expiry is set with the counter).
            pipe = self.client.pipeline()
            pipe.set(counter, 0, ex=self.window_seconds, nx=True)
            pipe.incr(counter)
            pipe.delete(WORKED_PREFIX + digest)  # a key revoked or expired since it worked passes no more
            failures = pipe.execute()[1]
        except redis.RedisError as exc:
            log.warning("failed_keys.unavailable", extra={"error": str(exc)})
            return
        if failures == self.limit:  # once per window, however long the client keeps trying
            log.warning("auth.too_many_failed_keys", extra={"client": address, "window_seconds": self.window_seconds})

    def worked(self, digest: str) -> None:
        """Remember that the key with this SHA-256 was found live."""
        if self.limit <= 0:
            return
        try:
            self.client.set(WORKED_PREFIX + digest, 1, ex=WORKED_SECONDS)
        except redis.RedisError as exc:
            log.warning("failed_keys.unavailable", extra={"error": str(exc)})
