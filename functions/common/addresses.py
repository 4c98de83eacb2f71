"""Which hosts and addresses lead outside to the public internet: the one rule for every URL a
user gives us that a Vexa process or its bot will open (recordings, webhook receivers).

A loopback, private, link-local (the clouds' metadata servers at 169.254.169.254), shared,
reserved or multicast address is internal; so are names that can only mean one. Hosts are
read the way the C resolver reads them (`127.1`, `0x7f.0.0.1` and `2130706433` are all
127.0.0.1), since that is what the program that opens the URL will do. Names are read as a
resolver reads them too: case, one trailing dot (`localhost.`) and Unicode look-alikes (IDNA) make
no difference. An IPv6 address that carries an IPv4 one (IPv4-mapped or -compatible, NAT64, 6to4,
Teredo) leads where that IPv4 address does, so it is judged by it.
"""
from __future__ import annotations

import ipaddress
import socket

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that never lead to the public internet: this machine, mDNS / cluster-local DNS, and the
# clouds' metadata servers (metadata.google.internal).
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal")

# IPv6 ranges whose last 32 bits are an IPv4 address a packet ends up at (RFC 4291, 6052, 6145).
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Local-use NAT64 (RFC 8215): only ever a translator inside someone's own network.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def normalise_host(host: str) -> str:
    """`host` as a resolver reads it: an IPv6 literal in its canonical form; a name or IPv4
    literal lowercased, without one trailing dot, IDNA-encoded. ValueError if it is no valid host."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            raise ValueError(f"{host!r} is not a valid host") from None
    try:
        # IDNA maps look-alikes (full-width letters, the ideographic full stop) to what they resolve as.
        name = text.lower().encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"{host!r} is not a valid host name") from None
    if name.endswith("."):  # `localhost.` is the fully qualified spelling of `localhost`
        name = name[:-1]
    if not name or any(c.isspace() or c in "/\\@%" for c in name):
        raise ValueError(f"{host!r} is not a valid host name")
    return name


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


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries and leads to: IPv4-mapped, -translated and
    -compatible, NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo (2001::/32: its server and client)."""
    last32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in _IPV4_TRANSLATED or address in _NAT64:
        return (last32,)
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # `::` and `::1` are themselves
        return (last32,)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


def internal_address(address: IpAddress) -> bool:
    """Whether `address` is anything but a public unicast address. An IPv6 address that carries an
    IPv4 one is judged by it; Teredo's are internal whatever they carry (2001::/32 is not global)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return True
        carried = embedded_ipv4(address)
        if any(internal_address(ipv4) for ipv4 in carried):
            return True
        if carried and address.teredo is None:
            return False  # NAT64 and the like to a public IPv4 address: the public internet
    return not address.is_global or address.is_multicast


def internal_host(host: str) -> bool:
    """Whether `host` is an internal address, or a name that can only mean one (read as
    normalise_host reads it; a host that cannot be read counts as internal). A name that merely
    resolves to one is for the caller that resolves it to refuse (functions/common/outbound.py)
    or for the network to stop (the chart's NetworkPolicy for bots)."""
    try:
        name = normalise_host(host)
    except ValueError:
        return True
    address = literal_address(name)
    if address is None:  # a name: single-label names resolve through the cluster's search domains
        return name == "localhost" or name.endswith(_INTERNAL_SUFFIXES) or "." not in name
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
