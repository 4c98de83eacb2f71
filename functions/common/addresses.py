"""Which hosts and addresses lead outside to the public internet: the one rule for every URL a
user gives us that a Vexa process or its bot will open (recordings, webhook receivers).

A loopback, private, link-local (the clouds' metadata servers at 169.254.169.254), shared,
reserved or multicast address is internal; so are names that can only mean one. Hosts are
read the way the C resolver reads them (`127.1`, `0x7f.0.0.1` and `2130706433` are all
127.0.0.1), since that is what the program that opens the URL will do.
"""
from __future__ import annotations

import ipaddress
import socket

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that never lead to the public internet: this machine, mDNS / cluster-local DNS, and the
# clouds' metadata servers (metadata.google.internal).
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal")


def literal_address(host: str) -> IpAddress | None:
    """The address `host` is written as, in any form the resolver accepts; None for a name."""
    if host and all(c in "0123456789abcdefx." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def internal_address(address: IpAddress) -> bool:
    """Whether `address` is anything but a public unicast address (IPv4-mapped IPv6 read as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def internal_host(host: str) -> bool:
    """Whether `host` is an internal address, or a name that can only mean one. A name that merely
    resolves to one is for the caller that resolves it to refuse (functions/webhooks/receivers.py)
    or for the network to stop (the chart's NetworkPolicy for bots)."""
    address = literal_address(host)
    if address is None:  # a name: single-label names resolve through the cluster's search domains
        return host == "localhost" or host.endswith(_INTERNAL_SUFFIXES) or "." not in host
    return internal_address(address)


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """A comma-separated list of addresses and networks; ValueError naming a bad entry."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is neither an IP address nor a network like 10.0.0.0/8") from None
    return tuple(networks)
