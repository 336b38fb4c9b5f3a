"""Forward one HTTP request to an upstream server and relay its answer: the core of the benchmark's AWS router
(bench/aws_router.py) and the fault report's recording SQS proxy (faults/sqs_proxy.py), which each add their own
routing, counting and holding around it."""

from __future__ import annotations

import http.client
import http.server
from typing import Any

# Headers that describe one connection, or that the relay sets itself, not the message.
HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})

Reply = tuple[int, list[tuple[str, str]], bytes]


def forward(request: http.server.BaseHTTPRequestHandler, body: bytes, host: str, port: int | None) -> Reply:
    """Send `request` (its already-read `body`) to host:port; 502 with no body if the upstream cannot be reached."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(request.command, request.path, body=body, headers=headers)
        reply = connection.getresponse()
        return reply.status, reply.getheaders(), reply.read()
    except OSError:
        return 502, [], b""
    finally:
        connection.close()


def answer(
    request: http.server.BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], data: bytes
) -> None:
    """Relay an upstream answer; a client that has gone (stopped during a long poll) gets nothing."""
    request.send_response(status)
    for key, value in headers:
        if key.lower() not in HOP_BY_HOP:
            request.send_header(key, value)
    request.send_header("Content-Length", str(len(data)))
    try:
        request.end_headers()
        request.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    """A threading server whose handlers' connection errors are not printed: a client that goes away mid-request
    (a contender stopped during a long poll, a connection a fault cut) is what these relays expect."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass
