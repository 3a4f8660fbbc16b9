"""Client address resolution (pure): socket peer unless it is a trusted proxy."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.protection.clientip import TrustedProxies

PROXIES = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")])


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("peer", "xff", "client", "chain"),
    [
        # Untrusted peer: its X-Forwarded-For is a spoof, whatever it says.
        ("198.51.100.9", ["10.0.0.1"], "198.51.100.9", "198.51.100.9"),
        ("198.51.100.9", [], "198.51.100.9", "198.51.100.9"),
        # Trusted peer: walk right to left past trusted hops.
        ("10.0.0.2", ["203.0.113.5"], "203.0.113.5", "203.0.113.5, 10.0.0.2"),
        ("10.0.0.2", ["1.1.1.1, 203.0.113.5, 10.9.9.9"], "203.0.113.5", "203.0.113.5, 10.9.9.9, 10.0.0.2"),
        ("10.0.0.2", ["1.1.1.1", "203.0.113.5"], "203.0.113.5", "203.0.113.5, 10.0.0.2"),  # several lines
        # Only trusted hops: the leftmost one is the best answer there is.
        ("10.0.0.2", ["10.0.0.3"], "10.0.0.3", "10.0.0.3, 10.0.0.2"),
        # Garbage stops the walk at the last good hop.
        ("10.0.0.2", ["203.0.113.5, not-an-ip"], "10.0.0.2", "10.0.0.2"),
        ("10.0.0.2", ["203.0.113.5, 10.0.0.7, <script>"], "10.0.0.2", "10.0.0.2"),
        ("10.0.0.2", ["203.0.113.5:4711"], "203.0.113.5", "203.0.113.5, 10.0.0.2"),
        ("2001:db8::1", ["[2001:db8:1::5]:80, 2a00::1"], "2a00::1", "2a00::1, 2001:db8::1"),
        ("::ffff:10.0.0.2", ["203.0.113.5"], "203.0.113.5", "203.0.113.5, ::ffff:10.0.0.2"),
    ],
)
def test_client_ip(peer: str, xff: list[str], client: str, chain: str) -> None:
    resolved = PROXIES.resolve(peer, headers(*[("X-Forwarded-For", v) for v in xff]), secure=False)
    assert (resolved.ip, resolved.forwarded_for) == (client, chain)


def test_forwarded_proto_only_from_trusted_peers() -> None:
    proto = headers(("X-Forwarded-Proto", "https"))
    assert PROXIES.resolve("10.0.0.2", proto, secure=False).https
    assert not PROXIES.resolve("198.51.100.9", proto, secure=False).https
    assert PROXIES.resolve("198.51.100.9", headers(), secure=True).https


def test_no_trusted_proxies_means_the_socket_peer() -> None:
    resolved = TrustedProxies([]).resolve("127.0.0.1", headers(("X-Forwarded-For", "1.2.3.4")), secure=False)
    assert (resolved.ip, resolved.forwarded_for) == ("127.0.0.1", "127.0.0.1")
    assert TrustedProxies([]).resolve(None, headers(), secure=False).ip == "unknown"
