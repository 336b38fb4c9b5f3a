"""An in-process moto server (SQS, EventBridge, EC2, Auto Scaling, CloudFormation, ...) for integration tests.

moto 5.x does not implement the Auto Scaling actions ``CompleteLifecycleAction`` and
``RecordLifecycleActionHeartbeat``. :func:`install_lifecycle_actions` adds both to moto's Auto Scaling
response handler: calls are accepted (or rejected, see :class:`LifecycleActionLog`) and recorded, so a test can
assert what a handler reported. The record is readable in-process (``MotoServer.lifecycle_actions()``) and over
HTTP (``GET <endpoint>/_testenv/lifecycle-actions``) for a handler or test running in another process.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

from .procs import free_port

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
LIFECYCLE_ROUTE = "/_testenv/lifecycle-actions"


@dataclass(frozen=True)
class LifecycleActionCall:
    """One ``CompleteLifecycleAction`` or ``RecordLifecycleActionHeartbeat`` request that reached moto."""

    action: str  # "CompleteLifecycleAction" | "RecordLifecycleActionHeartbeat"
    auto_scaling_group_name: str | None
    lifecycle_hook_name: str | None
    instance_id: str | None
    lifecycle_action_token: str | None
    lifecycle_action_result: str | None  # CONTINUE | ABANDON (CompleteLifecycleAction only)
    account_id: str
    region: str
    accepted: bool
    error: str | None = None
    at: float = field(default_factory=time.time)


class LifecycleActionLog:
    """Thread-safe record of lifecycle-action calls, plus knobs for how moto answers them.

    ``strict``: answer like AWS when the group or hook does not exist in moto (ValidationError "No active
    Lifecycle Action found ..."); default lenient (accept anything that names an instance or a token).
    ``fail_with``: make every call fail with this ValidationError message (e.g. to test retries).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[LifecycleActionCall] = []
        self.strict = False
        self.fail_with: str | None = None

    def add(self, call: LifecycleActionCall) -> None:
        with self._lock:
            self._calls.append(call)

    def calls(self, action: str | None = None) -> list[LifecycleActionCall]:
        with self._lock:
            return [c for c in self._calls if action is None or c.action == action]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self.strict = False
            self.fail_with = None


#: The process-wide record (moto's backends are process-wide too).
LIFECYCLE_ACTIONS = LifecycleActionLog()

_installed = False
_install_lock = threading.Lock()


def install_lifecycle_actions() -> None:
    """Teach moto's Auto Scaling handler CompleteLifecycleAction and RecordLifecycleActionHeartbeat."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from moto.autoscaling.exceptions import ValidationError
        from moto.autoscaling.responses import AutoScalingResponse
        from moto.core.responses import EmptyResult

        def handle(self: Any, action: str) -> Any:
            group = self._get_param("AutoScalingGroupName")
            hook = self._get_param("LifecycleHookName")
            instance_id = self._get_param("InstanceId")
            token = self._get_param("LifecycleActionToken")
            result = self._get_param("LifecycleActionResult") if action == "CompleteLifecycleAction" else None
            error: str | None = None
            if not instance_id and not token:
                error = "Either LifecycleActionToken or InstanceId must be specified."
            elif action == "CompleteLifecycleAction" and result not in ("CONTINUE", "ABANDON"):
                error = f"Invalid value for LifecycleActionResult: {result}"
            elif LIFECYCLE_ACTIONS.fail_with is not None:
                error = LIFECYCLE_ACTIONS.fail_with
            elif LIFECYCLE_ACTIONS.strict:
                backend = self.autoscaling_backend
                hooks = backend.lifecycle_hooks if group in backend.autoscaling_groups else {}
                if f"{group}_{hook}" not in hooks:
                    error = f"No active Lifecycle Action found with instance ID {instance_id or token}"
            LIFECYCLE_ACTIONS.add(
                LifecycleActionCall(
                    action=action,
                    auto_scaling_group_name=group,
                    lifecycle_hook_name=hook,
                    instance_id=instance_id,
                    lifecycle_action_token=token,
                    lifecycle_action_result=result,
                    account_id=self.current_account,
                    region=self.region,
                    accepted=error is None,
                    error=error,
                )
            )
            if error is not None:
                raise ValidationError(error)
            return EmptyResult()

        def complete_lifecycle_action(self: Any) -> Any:
            return handle(self, "CompleteLifecycleAction")

        def record_lifecycle_action_heartbeat(self: Any) -> Any:
            return handle(self, "RecordLifecycleActionHeartbeat")

        AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action  # type: ignore[attr-defined]
        AutoScalingResponse.record_lifecycle_action_heartbeat = (  # type: ignore[attr-defined]
            record_lifecycle_action_heartbeat
        )
        _installed = True


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _with_testenv_routes(app: WsgiApp) -> WsgiApp:
    """WSGI middleware: ``GET /_testenv/lifecycle-actions`` (JSON list) and ``DELETE`` (clear)."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != LIFECYCLE_ROUTE:
            return app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method == "DELETE":
            LIFECYCLE_ACTIONS.clear()
            body = b"[]"
        elif method == "GET":
            body = json.dumps([asdict(c) for c in LIFECYCLE_ACTIONS.calls()]).encode()
        else:
            start_response("405 Method Not Allowed", [("Content-Length", "0")])
            return [b""]
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return middleware


class MotoServer:
    """moto's server app on 127.0.0.1 (a free port) in a thread of this process.

    Every service moto implements is served from the one endpoint (SQS, EventBridge, EC2, Auto Scaling,
    CloudFormation, ...). Use :meth:`client` or :meth:`env` to point boto3/aioboto3 (or a subprocess) at it.
    """

    def __init__(
        self, *, port: int | None = None, region: str = REGION, verbose: bool = True, log_requests: bool = False
    ) -> None:
        self.port = port or free_port()
        self.log_requests = log_requests
        self.region = region
        self.verbose = verbose
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> MotoServer:
        if self._server is not None:
            return self
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass  # one line per AWS call drowns test output; errors still go to log_error

        install_lifecycle_actions()
        t0 = time.monotonic()
        app = _with_testenv_routes(DomainDispatcherApplication(create_backend_app))
        handler = MotoRequestHandler if self.log_requests else QuietHandler
        self._server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()
        with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=10) as resp:
            resp.read()
        if self.verbose:
            print(
                f"[testenv] moto server at {self.endpoint_url} ready in {time.monotonic() - t0:.2f}s",
                file=sys.stderr,
                flush=True,
            )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def reset(self) -> None:
        """Forget every AWS resource (POST /moto-api/reset) and every recorded lifecycle action."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
        LIFECYCLE_ACTIONS.clear()

    # -- lifecycle actions -----------------------------------------------------------------------------------

    @property
    def lifecycle_log(self) -> LifecycleActionLog:
        return LIFECYCLE_ACTIONS

    def lifecycle_actions(self, action: str | None = None) -> list[LifecycleActionCall]:
        """Recorded CompleteLifecycleAction / RecordLifecycleActionHeartbeat calls (optionally one kind)."""
        return LIFECYCLE_ACTIONS.calls(action)

    def completed_lifecycle_actions(self) -> list[LifecycleActionCall]:
        return LIFECYCLE_ACTIONS.calls("CompleteLifecycleAction")

    def lifecycle_heartbeats(self) -> list[LifecycleActionCall]:
        return LIFECYCLE_ACTIONS.calls("RecordLifecycleActionHeartbeat")

    # -- clients ---------------------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment for a process (or aioboto3 session) that should talk to this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client`` / ``aioboto3.Session().client``."""
        return {"endpoint_url": self.endpoint_url, "region_name": self.region, **CREDENTIALS}

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` bound to this server."""
        import boto3  # type: ignore[import-untyped,unused-ignore]

        return boto3.client(service, **self.client_kwargs())
