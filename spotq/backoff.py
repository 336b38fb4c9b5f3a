"""The one back-off formula of every retry loop (deletes, receives, evictions, watches, IMDS reads).

The wait after the n-th failure in a row is min(max, initial * 2^(n-1)); with jitter a share of it is drawn at
random so that many replicas (or a DaemonSet's pods) retrying after one outage do not arrive in step; it is never
less than what the server asked for (Retry-After).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2^62 times any sensible initial wait is past every cap: a longer run of failures must not overflow a float.
_MAX_DOUBLINGS = 62


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float
    max_seconds: float
    jitter: float = 0.0
    """The share of each wait drawn at random: 0 none, 0.5 between half and all of it, 1 anywhere up to it."""
    min_seconds: float = 0.0

    def seconds(self, failures: int, *, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """The wait after the `failures`-th failure in a row (1 for the first)."""
        doublings = min(max(0, failures - 1), _MAX_DOUBLINGS)
        full = min(self.max_seconds, self.initial_seconds * 2.0**doublings)
        if self.jitter:
            uniform = rng.uniform if rng is not None else random.uniform
            full = uniform(full * (1.0 - self.jitter), full)
        return max(full, retry_after or 0.0, self.min_seconds)
