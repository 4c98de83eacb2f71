"""The address a request comes from, read through the proxies the gateway trusts
(TRUSTED_PROXY_NETWORKS).

Every proxy on the way (a load balancer, Knative's ingress, its activator, the queue-proxy next to
the gateway) appends the address it got the request from to X-Forwarded-For. So the header holds,
from the left, whatever the client wrote itself, then what each proxy saw; and an entry is as
true as the proxy that appended it. Reading from the right (the connection's own address first),
the client is the first address that is not a trusted proxy's; nothing to its left is read, so a
client cannot choose its address by writing the header.

Trusted proxies are named by network, not counted in hops: on Knative the activator is on the
path only at times (while scaling from zero, in bursts), so the number of proxies changes from
one request to the next.
"""
from __future__ import annotations

import ipaddress

from functions.common.addresses import IpAddress, IpNetwork

# An IPv6 client holds a whole /64 (SLAAC, privacy addresses): counted as one.
IPV6_CLIENT_PREFIX = 64
# Longest text kept of an entry that is no address (a client's own writing, or "unknown").
MAX_ENTRY_CHARS = 64


def client_address(remote_addr: str, forwarded_for: str, trusted: tuple[IpNetwork, ...]) -> str:
    """Who sent the request, as a key to count its failures by: an IPv4 address, an IPv6 /64."""
    chain = [remote_addr]
    if trusted and forwarded_for:
        chain = [entry.strip() for entry in forwarded_for.split(",")] + chain
    for entry in reversed(chain):
        address = parse_entry(entry)
        if address is None or not any(address in network for network in trusted):
            return _client_key(address, entry)
    # Every address on the way is a trusted proxy's: the client is the leftmost, inside those networks.
    return _client_key(parse_entry(chain[0]), chain[0])


def parse_entry(entry: str) -> IpAddress | None:
    """The address of an X-Forwarded-For entry (`203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::1]:443`);
    None for anything else. An IPv4-mapped IPv6 address is its IPv4 address."""
    text = entry.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _client_key(address: IpAddress | None, entry: str) -> str:
    if address is None:
        return entry[:MAX_ENTRY_CHARS] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)
