"""HTTP to a host a user named: resolve it, check every address, connect to the very one checked.

Webhook receivers (functions/webhooks/receivers.py) and recordings a bot downloads
(bot/sources/download.py) share this. A name may be pointed at 127.0.0.1 or 169.254.169.254 after
it was checked, so a connection never resolves the name again: it goes to an address that was
checked, and TLS still verifies the certificate for the name. Which addresses are acceptable is
functions/common/addresses.py's rule plus the caller's allow-list.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import lru_cache

import certifi
import dns.exception
import dns.resolver
import urllib3

from .addresses import IpAddress, IpNetwork, internal_address, literal_address

DEFAULT_PORTS = {"http": 80, "https": 443}


class Unresolvable(ValueError):
    """The host has no address (or the resolver failed); the message says why."""


@dataclass(frozen=True)
class Destination:
    """Where one request goes: the URL as the sender reads it, and the addresses its host resolved to."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    addresses: tuple[IpAddress, ...]

    def host_header(self) -> str:
        header = self.host if ":" not in self.host else f"[{self.host}]"
        if self.port != DEFAULT_PORTS[self.scheme]:
            header += f":{self.port}"
        return header


def resolve(host: str, port: int, dns_servers: str = "") -> tuple[IpAddress, ...]:
    """Every address `host` resolves to now (a literal address is itself); Unresolvable if none.

    `dns_servers`: comma-separated nameservers (IP or IP:port) to ask; empty: the system's resolver.
    """
    literal = literal_address(host)
    if literal is not None:
        return (literal,)
    try:
        if dns_servers:
            return _resolve_with(host, nameservers(dns_servers))
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, dns.exception.DNSException) as exc:
        raise Unresolvable(f"{host} does not resolve: {exc}") from None
    addresses = tuple(dict.fromkeys(literal_address(info[4][0].split("%")[0]) for info in infos))
    found = tuple(a for a in addresses if a is not None)
    if not found:
        raise Unresolvable(f"{host} does not resolve: no addresses")
    return found


def refused_address(addresses: tuple[IpAddress, ...], allowed: tuple[IpNetwork, ...]) -> IpAddress | None:
    """The first of `addresses` that is internal and in none of the `allowed` networks; None if all may be used."""
    for address in addresses:
        if internal_address(address) and not any(address in network for network in allowed):
            return address
    return None


def pinned_pool(destination: Destination, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    """A one-connection pool to the destination's first checked address; for https, TLS verifies
    the certificate for its host name, as if it had been resolved by name."""
    address = str(destination.addresses[0])
    options = dict(timeout=timeout, retries=False, maxsize=1)
    if destination.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address, destination.port, server_hostname=destination.host, assert_hostname=destination.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), **options,
        )  # fmt: skip
    return urllib3.HTTPConnectionPool(address, destination.port, **options)


def _resolve_with(host: str, resolver: dns.resolver.Resolver) -> tuple[IpAddress, ...]:
    found: list[IpAddress] = []
    for record_type in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, record_type, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
        found.extend(a for a in (literal_address(r.to_text()) for r in answer) if a is not None)
    if not found:
        raise Unresolvable(f"{host} does not resolve: no A or AAAA records")
    return tuple(found)


@lru_cache(maxsize=4)
def nameservers(text: str) -> dns.resolver.Resolver:
    """A resolver that asks only these comma-separated nameservers (IP or IP:port)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.lifetime = 5.0
    for entry in (part.strip() for part in text.split(",") if part.strip()):
        address, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        resolver.nameservers = [*resolver.nameservers, address]
        if port:
            resolver.nameserver_ports[address] = int(port)
    return resolver
