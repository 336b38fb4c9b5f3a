"""Exceptions named by what happens to the message that raised them.

SpotqError
├── PermanentError   the message can never succeed: delete it (counted, logged)
│   └── MorePdbsError  a pod is covered by several PDBs: the API server will never evict it
├── TransientError   try again later: leave the message for redelivery
│   ├── ApiError       an HTTP error from Kubernetes or AWS (status kept for the caller to decide)
│   └── ImdsError      the instance metadata service did not answer usefully (IMDS mode polls again)
└── ConfigError      a setting is wrong: fail at start with one line naming it
"""

from __future__ import annotations


class SpotqError(Exception):
    pass


class PermanentError(SpotqError):
    pass


class MorePdbsError(PermanentError):
    pass


class TransientError(SpotqError):
    pass


class ApiError(TransientError):
    def __init__(self, status: int, reason: str, body: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {body[:300]}")
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after = retry_after


class ImdsError(TransientError):
    """IMDS did not answer usefully. `reason` is a short bounded word, fit for a metric label."""

    def __init__(self, message: str, *, reason: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class ConfigError(SpotqError):
    pass
