"""Which URLs may receive webhooks, and the one HTTP request a delivery attempt makes.

A receiver's host must resolve only to public addresses (functions/common/addresses.py), or to
ones WEBHOOK_ALLOWED_NETWORKS admits, when its endpoint is created **and at every attempt**: a
name may be pointed at 127.0.0.1 or 169.254.169.254 after it was checked. The attempt then
connects to the very address that was checked (TLS still verifies the certificate for the
name), so the name cannot change between the check and the connection (functions/common/outbound.py,
shared with the recordings bots download). URLs are read with urllib3's parser, the one that sends
the request. Redirects are not followed: a 3xx is a failure.
"""
from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from dataclasses import dataclass
from functools import lru_cache

import urllib3
from urllib3.exceptions import HTTPError, LocationParseError

from functions.common import outbound
from functions.common.addresses import IpAddress, IpNetwork, literal_address, parse_networks
from functions.common.outbound import Destination, Unresolvable, pinned_pool, refused_address, resolve
from functions.common.settings import Settings

USER_AGENT = "Vexa-Webhooks/1"
MAX_URL_LENGTH = 2000


class ReceiverRefused(ValueError):
    """The URL may not receive webhooks; the message says why."""


# A receiver's URL as urllib3 reads it, and the addresses its host resolved to.
Receiver = Destination
# tests/chart/test_security.py reads the workers' resolver through it.
_nameservers = outbound.nameservers


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no response
    latency_ms: int
    error: str | None  # None: delivered (2xx)
    retry_after: float | None = None  # seconds the receiver asked us to wait


def check(url: str, settings: Settings) -> Receiver:
    """`url`'s receiver, resolved now; ReceiverRefused naming what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise ReceiverRefused(f"a webhook URL may be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urllib3.util.parse_url(url)
    except LocationParseError:
        raise ReceiverRefused(f"{url!r} is not a URL") from None
    scheme = (parts.scheme or "").lower()
    if scheme not in ("https", "http"):
        raise ReceiverRefused(f"a webhook URL must be https://, not {url!r}")
    if not parts.host:
        raise ReceiverRefused("a webhook URL must name a host")
    if parts.auth is not None or parts.fragment is not None:
        raise ReceiverRefused("a webhook URL may not carry credentials (user:password@) or a #fragment")
    host = parts.host.strip("[]").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    allowed = _allowed_networks(settings.webhook_allowed_networks)
    addresses = _resolve(host, port, settings.webhook_dns_servers)
    refused = refused_address(addresses, allowed)
    if refused is not None:
        shown = host if literal_address(host) else f"{host} resolves to {refused}, which"
        raise ReceiverRefused(
            f"{shown} is not a public address (loopback, private, link-local or reserved); "
            "receivers inside your own network need WEBHOOK_ALLOWED_NETWORKS"
        )
    if scheme == "http" and not all(any(a in network for network in allowed) for a in addresses):
        raise ReceiverRefused("a webhook URL must be https:// (http:// only for hosts in WEBHOOK_ALLOWED_NETWORKS)")
    return Receiver(scheme, host, port, parts.request_uri, addresses)


def post(receiver: Receiver, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body` to the receiver's first checked address; what came of it."""
    host_header = receiver.host_header()
    pool = pinned_pool(receiver, urllib3.Timeout(total=timeout))
    started = time.monotonic()
    try:
        response = pool.urlopen(
            "POST", receiver.target, body=body, redirect=False, preload_content=False,
            headers={"Host": host_header, "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
        )  # fmt: skip
        response.close()  # the body is not read: a receiver cannot keep an attempt busy with it
    except HTTPError as exc:
        return Answer(None, _ms_since(started), f"no response: {_reason(exc)}")
    finally:
        pool.close()
    latency = _ms_since(started)
    if 200 <= response.status < 300:
        return Answer(response.status, latency, None)
    return Answer(response.status, latency, f"answered {response.status}", _retry_after(response.headers.get("Retry-After")))


def _resolve(host: str, port: int, dns_servers: str) -> tuple[IpAddress, ...]:
    try:
        return resolve(host, port, dns_servers)
    except Unresolvable as exc:
        raise ReceiverRefused(str(exc)) from None


@lru_cache(maxsize=4)
def _allowed_networks(text: str) -> tuple[IpNetwork, ...]:
    return parse_networks(text)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason)[:300]


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
