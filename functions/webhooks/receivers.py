"""Which URLs may receive webhooks, and the one HTTP request a delivery attempt makes.

A receiver's host must resolve only to public addresses (functions/common/addresses.py), or to
ones WEBHOOK_ALLOWED_NETWORKS admits, when its endpoint is created **and at every attempt**: a
name may be pointed at 127.0.0.1 or 169.254.169.254 after it was checked. The attempt then
connects to the very address that was checked (TLS still verifies the certificate for the
name), so the name cannot change between the check and the connection. URLs are read with
urllib3's parser, the one that sends the request. Redirects are not followed: a 3xx is a failure.
"""
from __future__ import annotations

import socket
import time
from email.utils import parsedate_to_datetime
from dataclasses import dataclass
from functools import lru_cache

import certifi
import dns.exception
import dns.resolver
import urllib3
from urllib3.exceptions import HTTPError, LocationParseError

from functions.common.addresses import IpAddress, IpNetwork, internal_address, literal_address, parse_networks
from functions.common.settings import Settings

USER_AGENT = "Vexa-Webhooks/1"
MAX_URL_LENGTH = 2000


class ReceiverRefused(ValueError):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True)
class Receiver:
    """A receiver's URL as urllib3 reads it, and the addresses its host resolved to."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    addresses: tuple[IpAddress, ...]


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
    for address in addresses:
        if internal_address(address) and not any(address in network for network in allowed):
            shown = host if literal_address(host) else f"{host} resolves to {address}, which"
            raise ReceiverRefused(
                f"{shown} is not a public address (loopback, private, link-local or reserved); "
                "receivers inside your own network need WEBHOOK_ALLOWED_NETWORKS"
            )
    if scheme == "http" and not all(any(a in network for network in allowed) for a in addresses):
        raise ReceiverRefused("a webhook URL must be https:// (http:// only for hosts in WEBHOOK_ALLOWED_NETWORKS)")
    return Receiver(scheme, host, port, parts.request_uri, addresses)


def post(receiver: Receiver, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body` to the receiver's first checked address; what came of it."""
    host_header = receiver.host if ":" not in receiver.host else f"[{receiver.host}]"
    if receiver.port != (443 if receiver.scheme == "https" else 80):
        host_header += f":{receiver.port}"
    options = dict(timeout=urllib3.Timeout(total=timeout), retries=False, maxsize=1)
    address = str(receiver.addresses[0])
    if receiver.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address, receiver.port, server_hostname=receiver.host, assert_hostname=receiver.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), **options,
        )  # fmt: skip
    else:
        pool = urllib3.HTTPConnectionPool(address, receiver.port, **options)
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
    literal = literal_address(host)
    if literal is not None:
        return (literal,)
    try:
        if dns_servers:
            return _resolve_with(host, _nameservers(dns_servers))
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, dns.exception.DNSException) as exc:
        raise ReceiverRefused(f"{host} does not resolve: {exc}") from None
    addresses = tuple(dict.fromkeys(literal_address(info[4][0].split("%")[0]) for info in infos))
    return tuple(a for a in addresses if a is not None)


def _resolve_with(host: str, resolver: dns.resolver.Resolver) -> tuple[IpAddress, ...]:
    found: list[IpAddress] = []
    for record_type in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, record_type, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
        found.extend(a for a in (literal_address(r.to_text()) for r in answer) if a is not None)
    if not found:
        raise ReceiverRefused(f"{host} does not resolve: no A or AAAA records")
    return tuple(found)


@lru_cache(maxsize=4)
def _nameservers(text: str) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.lifetime = 5.0
    for entry in (part.strip() for part in text.split(",") if part.strip()):
        address, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        resolver.nameservers = [*resolver.nameservers, address]
        if port:
            resolver.nameserver_ports[address] = int(port)
    return resolver


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
