"""gateway/tenants/throttle.py: failures per address, bounded memory, trusted proxies only."""

from __future__ import annotations

from gateway.tenants.throttle import FailedAuthThrottle, client_address, parse_networks


class Clock:
    def __init__(self) -> None:
        self.now = 6000.0 + 30  # half a minute in

    def __call__(self) -> float:
        return self.now


def test_an_address_over_its_failures_waits_for_the_next_minute_others_do_not():
    clock = Clock()
    throttle = FailedAuthThrottle(3, clock=clock)
    assert [throttle.failed("10.0.0.1") for _ in range(3)] == [None, None, None]
    assert throttle.failed("10.0.0.1") == 30.0
    assert throttle.failed("10.0.0.2") is None
    clock.now += 30
    assert throttle.failed("10.0.0.1") is None


def test_memory_is_bounded_by_forgetting_the_least_recent_address():
    throttle = FailedAuthThrottle(1, max_addresses=100, clock=Clock())
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert throttle.tracked == 100
    assert throttle.failed("10.0.3.231") is not None  # the last one is still remembered (its second failure)


def test_an_address_failing_again_in_a_new_minute_is_remembered_as_recent():
    """Hostile testing: an address's first failure of a new minute reset its count where its
    entry stood, so the address failing minute after minute stayed the oldest in the table and
    was the first forgotten when others failed: its count went back to 0 (another minute's
    worth of guesses) while addresses that had failed once, long ago, were kept."""
    clock = Clock()
    throttle = FailedAuthThrottle(2, max_addresses=3, clock=clock)
    throttle.failed("10.0.0.1")  # the guesser, first in the table
    throttle.failed("10.0.0.2")
    throttle.failed("10.0.0.3")
    clock.now += 60  # a new minute: the guesser goes on, the others are quiet
    assert throttle.failed("10.0.0.1") is None
    throttle.failed("10.0.0.4")  # a new address: the least recently failing one is forgotten
    assert throttle.tracked == 3
    # The guesser's count was kept: its third failure this minute is refused.
    assert [throttle.failed("10.0.0.1") for _ in range(2)] == [None, 30.0]


def test_x_forwarded_for_is_read_only_from_a_trusted_peer():
    trusted = parse_networks("10.1.0.0/16, 127.0.0.1")
    assert client_address("203.0.113.9", "1.2.3.4", trusted) == "203.0.113.9"  # untrusted peer: header ignored
    assert client_address("10.1.2.3", "1.2.3.4", trusted) == "1.2.3.4"
    # A client cannot pick its address by prepending one: the right-most untrusted hop counts.
    assert client_address("10.1.2.3", "6.6.6.6, 1.2.3.4, 10.1.9.9", trusted) == "1.2.3.4"
    assert client_address("10.1.2.3", None, trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", "1.2.3.4", ()) == "10.1.2.3"  # no trusted proxies configured


def test_an_ipv6_client_is_counted_by_its_64_prefix():
    """Hostile testing: every address counted alone let a host, which holds a whole IPv6 /64,
    fail from a fresh address each time: never throttled, and each one pushed another
    address's count out of the table."""
    throttle = FailedAuthThrottle(3, clock=Clock())
    waits = [throttle.failed(client_address(f"2001:db8:1:2::{i:x}", None, ())) for i in range(1, 5)]
    assert waits == [None, None, None, 30.0]
    assert throttle.failed(client_address("2001:db8:1:3::1", None, ())) is None  # another /64: another client
    assert throttle.tracked == 2
    assert client_address("::ffff:192.0.2.7", None, ()) == "192.0.2.7"  # a dual-stack socket's IPv4 client
    trusted = parse_networks("10.1.0.0/16")
    assert client_address("10.1.2.3", "2001:db8:1:2:aaaa::1", trusted) == "2001:db8:1:2::/64"
    assert client_address("10.1.2.3", "not-an-address", trusted) == "not-an-address"
