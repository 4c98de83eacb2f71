"""The client address the gateway counts failed keys by (functions/gateway/clients.py): read from
X-Forwarded-For through trusted proxies only, so a client cannot choose it by writing the header."""
from __future__ import annotations

import pytest

from functions.common.addresses import parse_networks
from functions.gateway.clients import client_address, parse_entry

# What the chart trusts by default: loopback (the queue-proxy) and the private ranges (Knative's pods).
CLUSTER = parse_networks("127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7")
QUEUE_PROXY, KOURIER, ACTIVATOR = "127.0.0.1", "10.8.0.5", "10.8.1.9"
CLIENT = "198.51.100.7"


@pytest.mark.parametrize("forwarded_for", [
    f"{CLIENT}, {KOURIER}",  # Kourier appended the client, the queue-proxy Kourier
    f"{CLIENT}, {KOURIER}, {ACTIVATOR}",  # the activator on the path too (scaling from zero)
    f"203.0.113.9, {CLIENT}, {KOURIER}",  # what the client wrote itself is never read
    f"10.0.0.1, 1.2.3.4, {CLIENT}, {KOURIER}, {ACTIVATOR}",
    f"{CLIENT}:53122, {KOURIER}",  # an entry with a port
    f"::ffff:{CLIENT},{KOURIER}",  # IPv4-mapped
])  # fmt: skip
def test_the_client_is_the_rightmost_address_no_trusted_proxy_has(forwarded_for):
    assert client_address(QUEUE_PROXY, forwarded_for, CLUSTER) == CLIENT


def test_without_trusted_proxies_the_header_is_ignored():
    assert client_address(CLIENT, "203.0.113.9", ()) == CLIENT
    assert client_address("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"


def test_a_header_from_an_untrusted_peer_is_not_read():
    """A client that reaches the gateway directly cannot pose as another by writing X-Forwarded-For."""
    assert client_address(CLIENT, "10.8.0.5, 203.0.113.9", CLUSTER) == CLIENT


def test_a_client_inside_the_trusted_networks_is_the_leftmost():
    assert client_address(QUEUE_PROXY, f"10.20.0.3, {KOURIER}", CLUSTER) == "10.20.0.3"
    assert client_address(QUEUE_PROXY, "", CLUSTER) == QUEUE_PROXY


def test_rotating_what_the_client_writes_changes_nothing():
    seen = {client_address(QUEUE_PROXY, f"203.0.113.{n}, {CLIENT}, {KOURIER}", CLUSTER) for n in range(50)}
    assert seen == {CLIENT}


def test_an_ipv6_client_is_its_64():
    """Anyone with an IPv6 connection holds a /64: counted per address, it could rotate through 2**64."""
    first = client_address(QUEUE_PROXY, f"2001:db8:7:1::1, {KOURIER}", CLUSTER)
    other = client_address(QUEUE_PROXY, f"[2001:db8:7:1:ffff::9]:443, {KOURIER}", CLUSTER)
    assert first == other == "2001:db8:7:1::/64"
    assert client_address(QUEUE_PROXY, f"2001:db8:7:2::1, {KOURIER}", CLUSTER) == "2001:db8:7:2::/64"


def test_an_entry_that_is_no_address_stops_the_reading():
    assert client_address(QUEUE_PROXY, f"{CLIENT}, unknown, {KOURIER}", CLUSTER) == "unknown"
    assert len(client_address(QUEUE_PROXY, f"{'x' * 500}, {KOURIER}", CLUSTER)) == 64
    assert parse_entry("not an address") is None and parse_entry("") is None
