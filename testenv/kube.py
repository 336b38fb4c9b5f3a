"""A small synchronous Kubernetes API client (stdlib only) for fixtures, demos and benchmarks.

It speaks JSON over HTTPS with either the admin client certificate or a bearer token, keeps one keep-alive
connection per thread, and has a thread pool helper for issuing many requests at once (e.g. 1000 Nodes).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

JSON = dict[str, Any]


class KubeApiError(RuntimeError):
    """A non-2xx answer from the API server."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        try:
            self.reason: str = json.loads(body).get("reason", "")
            self.message: str = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            self.reason = ""
            self.message = body
        super().__init__(f"{method} {path}: HTTP {status} {self.reason}: {self.message}")


class KubeClient:
    """Sync JSON client for one API server.

    ``client_cert``/``client_key`` authenticate with a certificate, ``token`` with a bearer token.
    """

    def __init__(
        self,
        server_url: str,
        ca_path: Path,
        *,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(server_url)
        if parsed.scheme != "https" or parsed.hostname is None:
            raise ValueError(f"expected an https:// server URL, got {server_url!r}")
        self.server_url = server_url
        self._host = parsed.hostname
        self._port = parsed.port or 443
        self._timeout = timeout
        self._token = token
        self._ssl = ssl.create_default_context(cafile=str(ca_path))
        if client_cert is not None:
            self._ssl.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
        self._local = threading.local()

    # -- transport -------------------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, str]:
        """Send one request; returns (status, body text). Retries once on a dropped keep-alive connection."""
        status, text, _ = self.exchange(method, path, body, params=params, content_type=content_type, accept=accept)
        return status, text

    def exchange(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, str, dict[str, str]]:
        """`raw`, with the response's headers too, names lowercased (e.g. which API Priority and Fairness level
        served it)."""
        if params:
            encoded = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
            path = f"{path}?{urllib.parse.urlencode(encoded)}"
        headers = {"Accept": accept, "User-Agent": "spotq-testenv"}
        payload: bytes | None = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                text = response.read().decode("utf-8", errors="replace")
                return response.status, text, {k.lower(): v for k, v in response.getheaders()}
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                self._drop_connection()
                if attempt == 2:
                    raise
            except Exception:
                self._drop_connection()
                raise
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        content_type: str = "application/json",
        ok: Iterable[int] = (),
    ) -> JSON:
        """JSON request; raises :class:`KubeApiError` unless 2xx or in ``ok``. Returns the decoded body."""
        status, text = self.raw(method, path, body, params=params, content_type=content_type)
        if not (200 <= status < 300 or status in set(ok)):
            raise KubeApiError(method, path, status, text)
        if not text:
            return {}
        decoded = json.loads(text)
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    def get(self, path: str, **params: str | int | bool) -> JSON:
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> JSON | None:
        status, text = self.raw("GET", path)
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise KubeApiError("GET", path, status, text)
        result: JSON = json.loads(text)
        return result

    def create(self, path: str, body: JSON, *, exist_ok: bool = False) -> JSON:
        return self.request("POST", path, body, ok=(409,) if exist_ok else ())

    def patch(self, path: str, body: JSON, *, patch_type: str = "merge") -> JSON:
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        return self.request("PATCH", path, body, content_type=content_type)

    def apply(self, path: str, body: JSON, *, field_manager: str = "spotq-testenv", force: bool = True) -> JSON:
        """Server-side apply (``path`` names the object itself)."""
        return self.request(
            "PATCH",
            path,
            body,
            params={"fieldManager": field_manager, "force": force},
            content_type="application/apply-patch+yaml",
        )

    def delete(self, path: str, *, missing_ok: bool = True, grace_period_seconds: int | None = None) -> JSON:
        body = None
        if grace_period_seconds is not None:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace_period_seconds}
        return self.request("DELETE", path, body, ok=(404,) if missing_ok else ())

    def list_items(self, path: str, **params: str | int | bool) -> list[JSON]:
        items: list[JSON] = self.get(path, **params).get("items") or []
        return items

    # -- helpers ---------------------------------------------------------------------------------------------

    def map_concurrently(self, func: Callable[[T], R], items: Iterable[T], *, workers: int = 16) -> list[R]:
        """Run ``func`` over ``items`` on a thread pool (each worker keeps its own connection)."""
        materialized = list(items)
        if len(materialized) <= 1:
            return [func(item) for item in materialized]
        with ThreadPoolExecutor(max_workers=min(workers, len(materialized))) as pool:
            return list(pool.map(func, materialized))

    def wait_for(
        self, what: str, predicate: Callable[[], bool], *, timeout: float = 60.0, interval: float = 0.2
    ) -> None:
        """Poll ``predicate`` until true or raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def close(self) -> None:
        self._drop_connection()
