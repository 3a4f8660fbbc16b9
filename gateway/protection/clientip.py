"""Who the client is: the socket peer, unless the peer is a trusted proxy. Pure; no I/O.

Behind trusted proxies ``X-Forwarded-For`` is walked right to left, skipping trusted hops: the
first address that is not a trusted proxy is the client. Everything left of it was written by
the client itself and is ignored, as is the whole header when the peer is not trusted (anyone
can send ``X-Forwarded-For: 1.2.3.4``). Bucketing, rate limits, logs and the
``X-Forwarded-For`` sent upstream all use this one answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from multidict import MultiMapping

from gateway.fields import IPNetwork

__all__ = ["ClientAddress", "TrustedProxies"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=4096)
def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """The resolved client: IP, the chain to forward upstream, and whether its side is HTTPS."""

    __slots__ = ("forwarded_for", "https", "ip")

    def __init__(self, ip: str, forwarded_for: str, https: bool) -> None:
        self.ip = ip
        self.forwarded_for = forwarded_for
        self.https = https


class TrustedProxies:
    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusted(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def trusted_peer(self, peer: str) -> bool:
        return bool(self._networks) and self.trusted(_parse(peer))

    def resolve(self, peer: str | None, headers: MultiMapping[str], secure: bool) -> ClientAddress:
        """The client behind ``peer`` given the request headers; ``secure``: TLS on our socket."""
        peer_ip = peer or "unknown"
        if not self._networks or not self.trusted(_parse(peer_ip)):
            return ClientAddress(peer_ip, peer_ip, secure)
        hops: list[str] = [hop.strip() for value in headers.getall("X-Forwarded-For", ()) for hop in value.split(",")]
        client = peer_ip
        kept: list[str] = [peer_ip]
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                break  # garbage written by someone we do not trust: stop at the last good hop
            client = str(address)
            kept.append(client)
            if not self.trusted(address):
                break
        proto = headers.get("X-Forwarded-Proto", "")
        https = secure or proto.rpartition(",")[2].strip().lower() == "https"
        return ClientAddress(client, ", ".join(reversed(kept)), https)
