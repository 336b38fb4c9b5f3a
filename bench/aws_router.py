"""One AWS endpoint in front of several servers, for a client that takes a single endpoint for every service
(aws-node-termination-handler's `AWS_ENDPOINT`): each request goes to the server for the service named in its
SigV4 credential scope (SQS to ElasticMQ, EC2 and Auto Scaling to moto).

On the way it records what the figures need and the client does not report: calls per service and action, how
long each EC2 DescribeInstances took upstream (moto's latency is part of NTH's cost per message), and when each
instance id first came back in a ReceiveMessage reply (the contender's "received", read off the wire).
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from testenv import forwarding
from testenv.procs import free_port

_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
_INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


def service_of(authorization: str) -> str:
    """The service in a SigV4 Authorization header's credential scope ('' if there is none)."""
    found = _SCOPE.search(authorization)
    return found.group(1) if found else ""


def action_of(target: str, body: bytes) -> str:
    """The API action: from X-Amz-Target (JSON protocols, `AmazonSQS.ReceiveMessage`) or the query body."""
    if target:
        return target.rsplit(".", 1)[-1]
    values = parse_qs(body.decode(errors="replace")).get("Action") or [""]
    return values[0]


class AwsRouter:
    """A threaded HTTP server on 127.0.0.1 forwarding each request to `routes[service]` (a base URL)."""

    def __init__(self, routes: Mapping[str, str]) -> None:
        self.routes = dict(routes)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls: Counter[str] = Counter()  # "service Action" → count
        self.errors: Counter[str] = Counter()  # "service Action status" → count of non-2xx answers
        self.describe_seconds: list[float] = []  # upstream time of each EC2 DescribeInstances
        self.received: dict[str, float] = {}  # instance id → first ReceiveMessage reply carrying it
        self.unrouted = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> AwsRouter:
        router = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                router._forward(self)

            do_GET = do_POST  # noqa: N815 (the name http.server dispatches to)

        self._server = forwarding.QuietServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="aws-router", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def mark(self) -> tuple[int, dict[str, int]]:
        """Where the counters stand, to count one phase: pass it to `since`."""
        with self._lock:
            return len(self.describe_seconds), dict(self.calls)

    def since(self, mark: tuple[int, dict[str, int]]) -> tuple[list[float], dict[str, int]]:
        described, calls = mark
        with self._lock:
            counted = {k: n - calls.get(k, 0) for k, n in self.calls.items() if n - calls.get(k, 0)}
            return self.describe_seconds[described:], counted

    def _forward(self, request: http.server.BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        service = service_of(request.headers.get("Authorization") or "")
        action = action_of(request.headers.get("X-Amz-Target") or "", body)
        base = self.routes.get(service)
        if base is None:
            with self._lock:
                self.unrouted += 1
            forwarding.answer(request, 400, [], b"")
            return
        target = urlsplit(base)
        started = time.monotonic()
        status, reply_headers, data = forwarding.forward(request, body, target.hostname or "127.0.0.1", target.port)
        took = time.monotonic() - started
        now = time.time()
        with self._lock:
            self.calls[f"{service} {action}"] += 1
            if not 200 <= status < 300:
                self.errors[f"{service} {action} {status}"] += 1
            if service == "ec2" and action == "DescribeInstances":
                self.describe_seconds.append(took)
            if service == "sqs" and action == "ReceiveMessage":
                for instance_id in _INSTANCE_ID.findall(data.decode(errors="replace")):
                    self.received.setdefault(instance_id, now)
        forwarding.answer(request, status, reply_headers, data)
