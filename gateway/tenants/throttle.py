"""Failed authentication, throttled per client address.

Only failures are counted, and only a failure can be answered with 429 instead of 401: a
request with a valid key never reaches this code, so a valid key is never refused for its
address's failures (a NAT shared with a key-guessing neighbour costs it nothing). Counts
are per process (fixed one-minute windows) for at most `max_addresses` addresses, the
least recently failing forgotten first, so a spray from many addresses cannot grow it.

Behind a load balancer every request comes from the balancer's address: the client's is
read from X-Forwarded-For, but only when the direct peer is a trusted proxy
(GATEWAY_TRUSTED_PROXIES), else anyone could name any address.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.1, 10.1.0.0/16` -> networks; raises ValueError naming a bad entry."""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(out)


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The address to throttle: the peer, or, when the peer is a trusted proxy, the
    right-most X-Forwarded-For entry that is not itself a trusted proxy; an IPv6 one as its
    /64 (`_counted_as`)."""
    address = peer or "unknown"
    if not trusted or not forwarded_for or not _trusted(address, trusted):
        return _counted_as(address)
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if not hop:
            continue
        address = hop
        if not _trusted(hop, trusted):
            break
    return _counted_as(address[:64])


def _counted_as(address: str) -> str:
    """What failures are counted under: an IPv6 address's /64, since one host is handed a
    whole /64 and could fail from a fresh address each time (never throttled, and pushing
    every other address out of the table); an IPv4-mapped one as its IPv4 address."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class FailedAuthThrottle:
    def __init__(
        self, per_minute: int = 30, *, max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self._max = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, list[int]] = OrderedDict()  # address -> [window, count]

    @property
    def tracked(self) -> int:
        """How many addresses are remembered (at most `max_addresses`)."""
        return len(self._failures)

    def blocked(self, address: str) -> bool:
        """Whether `address` used up this minute's failures: its next one is refused."""
        entry = self._failures.get(address)
        return entry is not None and entry[0] == int(self._clock() // 60) and entry[1] >= self.per_minute

    def failed(self, address: str) -> float | None:
        """Count one failure from `address`; seconds to wait if it is over the limit, else None."""
        now = self._clock()
        window = int(now // 60)
        entry = self._failures.get(address)
        if entry is None:
            entry = self._failures[address] = [window, 0]
            if len(self._failures) > self._max:
                self._failures.popitem(last=False)
        else:
            # The most recent now, whichever minute: an entry reset where it stood stayed the
            # oldest, and the address failing on was the first one forgotten.
            self._failures.move_to_end(address)
            if entry[0] != window:
                entry[0], entry[1] = window, 0
        entry[1] += 1
        if entry[1] > self.per_minute:
            return (window + 1) * 60 - now
        return None
