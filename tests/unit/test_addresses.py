"""functions/common/addresses.py: which hosts and addresses lead inside, read the way resolvers
read them (issue 17 §4). A name is judged after normalisation (case, one trailing dot, IDNA); an
IPv6 address that carries an IPv4 one by that IPv4 address."""
from __future__ import annotations

import ipaddress

import pytest

from functions.common.addresses import embedded_ipv4, internal_address, internal_host, normalise_host
from functions.common.outbound import refused_address
from functions.common.recording_sources import RecordingNotAllowed, allowed_recording, parse_sources

METADATA = ipaddress.IPv4Address("169.254.169.254")

# Names that can only mean this machine, mDNS or a cloud's metadata server, spelled as resolvers
# still read them: fully qualified (a trailing dot), in capitals, in Unicode look-alikes.
INTERNAL_NAMES = [
    "localhost.",
    "LOCALHOST.",
    "x.localhost.",
    "metadata.google.internal.",
    "Metadata.Google.Internal.",
    "foo.local.",
    "printer.LOCAL.",
    "metadata.google.ｉｎｔｅｒｎａｌ",  # full-width letters: IDNA maps them to ASCII
    "metadata.google．internal",  # a full-width full stop separates labels too
    "metadata.google.internal。",  # an ideographic full stop, trailing
    "x.ｌｏｃａｌｈｏｓｔ。",
    "127.0.0.1.",  # an address with a trailing dot
    "169.254.169.254.",
]

# IPv6 addresses that carry 169.254.169.254 or 127.0.0.1 and lead there.
EMBEDDED = [
    "64:ff9b::a9fe:a9fe",  # NAT64, the well-known prefix
    "64:ff9b::169.254.169.254",
    "64:ff9b::7f00:1",
    "2002:a9fe:a9fe::",  # 6to4
    "2002:a9fe:a9fe:1::1",
    "2002:7f00:1::",
    "::a9fe:a9fe",  # IPv4-compatible
    "::169.254.169.254",
    "::7f00:1",
    "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
]
# Internal before this rule too (IPv4-mapped was read as IPv4 already; Python's ipaddress calls all
# of 2001::/23, Teredo's 2001::/32 included, not global), and still: now by what they carry as well.
ALSO_EMBEDDED = [
    "::ffff:a9fe:a9fe",  # IPv4-mapped
    "2001:0:a9fe:a9fe::1",  # Teredo whose server is the metadata address
    "2001:0:808:808:0:0:5601:5601",  # Teredo whose client is (stored inverted: 5601:5601)
]

# Local-use NAT64 (64:ff9b:1::/48): a translator inside someone's own network, whatever it carries.
LOCAL_NAT64 = ["64:ff9b:1::a9fe:a9fe", "64:ff9b:1:a9fe:a9:fe00::", "64:ff9b:1::808:808"]

# What stays public: these lead to public IPv4 addresses (NAT64 is how IPv6-only clusters reach them).
PUBLIC = ["64:ff9b::808:808", "64:ff9b::8.8.8.8", "2002:808:808::1", "::ffff:8.8.8.8", "2001:4860:4860::8888"]


@pytest.mark.parametrize("host", INTERNAL_NAMES)
def test_internal_names_are_internal_however_spelled(host: str) -> None:
    assert internal_host(host)


@pytest.mark.parametrize("text", EMBEDDED + ALSO_EMBEDDED)
def test_ipv6_addresses_are_judged_by_the_ipv4_address_they_carry(text: str) -> None:
    address = ipaddress.IPv6Address(text)
    assert internal_address(address)
    assert internal_host(text) and internal_host(f"[{text}]")
    # What a resolver's answer goes through (webhook receivers, recording downloads): refused too.
    assert refused_address((address,), ()) == address


@pytest.mark.parametrize("text", LOCAL_NAT64)
def test_local_use_nat64_is_internal(text: str) -> None:
    assert internal_address(ipaddress.IPv6Address(text))
    assert internal_host(f"[{text}]")


@pytest.mark.parametrize(
    "text, carried",
    [
        ("64:ff9b::a9fe:a9fe", [METADATA]),
        ("2002:a9fe:a9fe::", [METADATA]),
        ("::a9fe:a9fe", [METADATA]),
        ("::ffff:0:a9fe:a9fe", [METADATA]),
        ("::ffff:a9fe:a9fe", [METADATA]),
        ("2001:0:a9fe:a9fe:0:0:f7f7:f7f7", [METADATA, ipaddress.IPv4Address("8.8.8.8")]),  # Teredo: server, client
        ("2001:0:808:808:0:0:5601:5601", [ipaddress.IPv4Address("8.8.8.8"), METADATA]),
        ("::1", []),  # loopback itself, not an IPv4-compatible address
        ("::", []),
        ("2001:4860:4860::8888", []),
    ],
)
def test_embedded_ipv4(text: str, carried: list[ipaddress.IPv4Address]) -> None:
    assert list(embedded_ipv4(ipaddress.IPv6Address(text))) == carried


@pytest.mark.parametrize("text", PUBLIC)
def test_public_ipv4_behind_ipv6_stays_public(text: str) -> None:
    assert not internal_address(ipaddress.IPv6Address(text))
    assert not internal_host(f"[{text}]")


@pytest.mark.parametrize("host", ["example.com.", "EXAMPLE.com", "bücher.example.", "8.8.8.8"])
def test_public_names_stay_public(host: str) -> None:
    assert not internal_host(host)


@pytest.mark.parametrize(
    "host, normal",
    [
        ("LocalHost.", "localhost"),
        ("Bücher.Example.", "xn--bcher-kva.example"),
        ("ｌｏｃａｌｈｏｓｔ。", "localhost"),
        ("[::FFFF:A9FE:A9FE]", "::ffff:a9fe:a9fe"),
        ("64:FF9B:0::A9FE:A9FE", "64:ff9b::a9fe:a9fe"),
        ("169.254.169.254.", "169.254.169.254"),
    ],
)
def test_normalise_host(host: str, normal: str) -> None:
    assert normalise_host(host) == normal


@pytest.mark.parametrize("host", ["", ".", "a..b", "exa mple.com", "a/b", "user@host", "[::1", "x" * 64 + ".com"])
def test_hosts_that_cannot_be_read_are_refused(host: str) -> None:
    with pytest.raises(ValueError):
        normalise_host(host)
    assert internal_host(host)  # what cannot be read is never let through as public


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost./meeting.ogg",
        "https://metadata.google.internal./computeMetadata/v1/",
        "https://foo.local./meeting.ogg",
        "https://127.0.0.1./meeting.ogg",
        "https://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "https://[2002:a9fe:a9fe::]/latest/meta-data/",
        "https://[::a9fe:a9fe]/latest/meta-data/",
        "https://[64:ff9b:1::a9fe:a9fe]/latest/meta-data/",
    ],
)
def test_a_prefix_without_a_host_refuses_them_as_recordings(url: str) -> None:
    with pytest.raises(RecordingNotAllowed, match="local or internal host"):
        allowed_recording(url, parse_sources("https://"))
