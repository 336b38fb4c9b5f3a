"""Streaming watches for the benchmark's observers: list, then watch from the list's resourceVersion, in a thread.

Each event reaches a callback with the wall-clock time it arrived, so every figure comes from what the API server
said, not from polling. Stopping closes the connection, which ends the blocking read at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
Handler = Callable[[str, JSON, float], None]


class Watch:
    """`path` listed once (each item as an ADDED event), then watched until `stop()`; relists on 410 Gone."""

    def __init__(
        self,
        server_url: str,
        ca: Path,
        cert: Path,
        key: Path,
        path: str,
        handler: Handler,
        *,
        params: dict[str, str] | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(server_url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 443
        self._ssl = ssl.create_default_context(cafile=str(ca))
        self._ssl.load_cert_chain(str(cert), str(key))
        self._path = path
        self._params = params or {}
        self._handler = handler
        self._stop = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self.synced = threading.Event()
        self.errors = 0

    def start(self) -> Watch:
        self._thread.start()
        if not self.synced.wait(60):
            raise TimeoutError(f"watch of {self._path} did not list within 60 s")
        return self

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def _get(self, params: dict[str, str]) -> http.client.HTTPResponse:
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._ssl, timeout=600)
        self._conn = conn
        conn.request("GET", f"{self._path}?{urllib.parse.urlencode(params)}", headers={"Accept": "application/json"})
        return conn.getresponse()

    def _list(self) -> str:
        params = {**self._params, "limit": "1000"}
        version = ""
        while True:
            response = self._get(params)
            page = json.loads(response.read())
            stamp = time.time()
            for item in page.get("items") or []:
                self._handler("ADDED", item, stamp)
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion", version))
            if not meta.get("continue"):
                return version
            params = {**self._params, "limit": "1000", "continue": meta["continue"]}

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                    self.synced.set()
                params = {
                    **self._params,
                    "watch": "true",
                    "allowWatchBookmarks": "true",
                    "resourceVersion": version,
                    "timeoutSeconds": "600",
                }
                response = self._get(params)
                if response.status != 200:
                    response.read()
                    version = ""
                    continue
                while not self._stop.is_set():
                    line = response.readline()
                    if not line:
                        break
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    kind = event.get("type", "")
                    if kind == "ERROR":
                        version = ""  # 410 Gone and friends: list again
                        break
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if kind != "BOOKMARK":
                        self._handler(kind, obj, time.time())
            except (OSError, http.client.HTTPException, ValueError):
                if self._stop.is_set():
                    return
                self.errors += 1
                time.sleep(0.2)
            finally:
                if self._conn is not None:
                    self._conn.close()
