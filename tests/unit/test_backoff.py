"""The one back-off formula: doubling from the first wait, capped, jittered by a share, never under Retry-After."""

from __future__ import annotations

import random

import pytest

from spotq.backoff import Backoff


def test_waits_double_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(initial_seconds=0.25, max_seconds=3.0)
    assert [backoff.seconds(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_run_of_failures_of_any_length_waits_the_cap() -> None:
    # 2.0 ** 1100 is past what a float holds: a day-long outage must not crash the loop that retries it.
    assert Backoff(initial_seconds=1.0, max_seconds=30.0).seconds(100_000) == 30.0


@pytest.mark.parametrize(("jitter", "low"), [(0.5, 2.0), (1.0, 0.0)])
def test_jitter_draws_its_share_of_the_wait_at_random(jitter: float, low: float) -> None:
    backoff = Backoff(initial_seconds=1.0, max_seconds=30.0, jitter=jitter)
    waits = [backoff.seconds(3, rng=random.Random(seed)) for seed in range(200)]
    assert all(low <= wait <= 4.0 for wait in waits)
    assert min(waits) < low + 0.5 and max(waits) > 3.5  # spread over the range, not stuck at one end


def test_a_given_rng_makes_the_waits_repeatable() -> None:
    backoff = Backoff(initial_seconds=0.1, max_seconds=1.0, jitter=0.5)
    assert backoff.seconds(2, rng=random.Random(7)) == backoff.seconds(2, rng=random.Random(7))


def test_retry_after_and_the_minimum_are_floors() -> None:
    backoff = Backoff(initial_seconds=0.01, max_seconds=5.0, min_seconds=0.05)
    assert backoff.seconds(1) == 0.05
    assert backoff.seconds(1, retry_after=3.0) == 3.0
    assert backoff.seconds(10, retry_after=60.0) == 60.0  # the server's word beats the cap
    assert backoff.seconds(20, retry_after=None) == 5.0
