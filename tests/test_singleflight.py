"""SingleFlight: concurrent callers of one key share one computation (no model, no app)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from webapp.render.singleflight import SingleFlight


def test_32_concurrent_callers_of_one_key_share_one_computation():
    flights: SingleFlight[str, int] = SingleFlight()
    barrier = threading.Barrier(32)
    computed = []

    def call() -> int:
        barrier.wait()
        future, leader = flights.claim("key")
        if leader:
            computed.append(1)
            barrier.wait()  # every caller has claimed before the leader settles
            flights.resolve("key", 42)
        else:
            barrier.wait()
        return future.result(timeout=10)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: call(), range(32)))
    assert results == [42] * 32
    assert computed == [1]
    assert "key" not in flights and len(flights) == 0


def test_a_settled_key_is_free_to_compute_again():
    flights: SingleFlight[str, int] = SingleFlight()
    first, leader = flights.claim("key")
    assert leader
    flights.resolve("key", 1)
    second, leader_again = flights.claim("key")
    assert leader_again and second is not first and not second.done()
    assert first.result() == 1


def test_an_error_reaches_every_caller():
    flights: SingleFlight[str, int] = SingleFlight()
    futures = [flights.claim("key")[0] for _ in range(3)]
    flights.fail("key", OSError("gone"))
    for future in futures:
        with pytest.raises(OSError, match="gone"):
            future.result(timeout=1)


def test_keys_are_independent():
    flights: SingleFlight[tuple[str, int | None], str] = SingleFlight()
    a, a_leads = flights.claim(("a", None))
    b, b_leads = flights.claim(("a", 256))
    assert a_leads and b_leads and a is not b and len(flights) == 2
    flights.resolve(("a", 256), "thumbnail")
    assert b.result() == "thumbnail" and not a.done() and ("a", None) in flights
