"""The SQS endpoint spotq talks to in a fault scenario: a recording HTTP proxy in front of the real one (ElasticMQ or
moto), in this process.

It records, off the wire, what the figures need from the queue and spotq does not report: which message each
receipt handle belongs to (ReceiveMessage replies) and when each message was deleted (a DeleteMessage or a
DeleteMessageBatch entry the upstream confirmed). It is also the place two of the faults happen:

* `refuse()` closes the listening socket and every open connection (what spotq sees of an endpoint that is down:
  connection refused), `reopen()` listens again on the same port; the queue upstream keeps its messages;
* `hold()` keeps every request unanswered until `release()` (a hung endpoint, for an upstream that cannot be
  SIGSTOPped because it runs in this process: moto; ElasticMQ is stopped with SIGSTOP itself).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from testenv import forwarding
from testenv.procs import free_port


@dataclass
class QueueRecord:
    """What crossed the proxy: per message id, when it was first received and when it was deleted."""

    handles: dict[str, str] = field(default_factory=dict)  # receipt handle → message id
    received: dict[str, float] = field(default_factory=dict)  # message id → first ReceiveMessage reply with it
    receives: dict[str, int] = field(default_factory=dict)  # message id → times handed out
    deleted: dict[str, float] = field(default_factory=dict)  # message id → first confirmed delete
    calls: dict[str, int] = field(default_factory=dict)  # action → requests
    failures: dict[str, int] = field(default_factory=dict)  # action → answers that were not 2xx (or no answer)
    receives_ok: list[tuple[float, float]] = field(default_factory=list)  # (arrived, answered) of 2xx receives

    def as_dict(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "failures": dict(self.failures), "deleted": len(self.deleted)}


def _action(headers: Any) -> str:
    return str(headers.get("X-Amz-Target") or "").rpartition(".")[2] or "unknown"


class SqsProxy:
    """Forwards every request to `upstream` (a base URL) and records the queue's fate of each message."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.record = QueueRecord()
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> SqsProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()
                with proxy._lock:
                    proxy._connections.discard(self.connection)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy._forward(self)

            do_GET = do_POST  # noqa: N815 (the name http.server dispatches to)

        server = forwarding.QuietServer(("127.0.0.1", self.port), Handler)  # a cut connection is the fault
        self._server = server
        threading.Thread(target=server.serve_forever, name="sqs-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._open.set()
        self.refuse()

    def refuse(self) -> None:
        """Stop listening and cut every open connection: new connections are refused until `reopen`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def reopen(self) -> None:
        """Listen again on the same port."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def hold(self) -> None:
        """Answer nothing (requests wait) until `release`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    # -- forwarding ---------------------------------------------------------------------------------------------

    def _forward(self, request: http.server.BaseHTTPRequestHandler) -> None:
        arrived = time.time()
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        action = _action(request.headers)
        self._count("calls", action)
        self._open.wait()
        status, reply_headers, data = forwarding.forward(request, body, *self._upstream)
        self._open.wait()  # held while upstream answered: the answer waits too
        if 200 <= status < 300:
            self._note(action, body, data, time.time(), arrived)
        else:
            self._count("failures", action)
        forwarding.answer(request, status, reply_headers, data)

    def _count(self, what: str, action: str) -> None:
        with self._lock:
            counts = self.record.calls if what == "calls" else self.record.failures
            counts[action] = counts.get(action, 0) + 1

    def _note(self, action: str, body: bytes, data: bytes, now: float, arrived: float) -> None:
        try:
            sent = json.loads(body or b"{}")
            answer = json.loads(data or b"{}")
        except ValueError:
            return
        record = self.record
        with self._lock:
            if action == "ReceiveMessage":
                record.receives_ok.append((arrived, now))
                for message in answer.get("Messages") or []:
                    mid = str(message.get("MessageId"))
                    record.handles[str(message.get("ReceiptHandle"))] = mid
                    record.received.setdefault(mid, now)
                    record.receives[mid] = record.receives.get(mid, 0) + 1
            elif action == "DeleteMessage":
                self._deleted(str(sent.get("ReceiptHandle")), now)
            elif action == "DeleteMessageBatch":
                handles = {str(e.get("Id")): str(e.get("ReceiptHandle")) for e in sent.get("Entries") or []}
                for entry in answer.get("Successful") or []:
                    self._deleted(handles.get(str(entry.get("Id")), ""), now)

    def _deleted(self, handle: str, now: float) -> None:
        mid = self.record.handles.get(handle)
        if mid is not None:
            self.record.deleted.setdefault(mid, now)

    def receiving_again(self, after: float) -> float | None:
        """From `after` on, the first moment a ReceiveMessage was pending that the endpoint then answered 2xx
        (one that arrived before and was answered after counts from `after`): spotq receives again."""
        with self._lock:
            return min((max(a, after) for a, done in self.record.receives_ok if done >= after), default=None)

    def deleted(self) -> dict[str, float]:
        with self._lock:
            return dict(self.record.deleted)
