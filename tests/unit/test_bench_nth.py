"""The benchmark's aws-node-termination-handler contender: the deadline figures, the one AWS endpoint, the report's
NTH columns, NTH's environment and private mount namespace, and the audit log's per-pod eviction times."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import figures, nth, nth_build, report
from bench.audit import AuditLog
from bench.aws_router import AwsRouter, action_of, service_of
from bench.observing import Observer

EVENT = 1_000_000.0  # the warnings' event time
GRACE = 30


def test_deadline_splits_pods_by_when_their_eviction_was_accepted() -> None:
    evicted_at = {
        "a": EVENT + 10,  # 30 s of grace end at +40: graceful
        "b": EVENT + 90,  # grace ends exactly at the deadline: graceful
        "c": EVENT + 90.5,  # cut short
        "d": EVENT + 120,  # accepted at the deadline: cut short
        "e": EVENT + 121,  # after the deadline
    }
    on_interrupted = [(EVENT + 1, 6), (EVENT + 50, 4), (EVENT + 119, 3), (EVENT + 125, 1)]
    found = figures.deadline(evicted_at, 6, EVENT, GRACE, on_interrupted, start=EVENT + 1)
    assert found["evicted_with_grace_before_deadline"] == 2
    assert found["evicted_grace_cut_short"] == 2
    assert found["evicted_by_deadline"] == 4
    assert found["not_evicted_by_deadline"] == 2
    assert found["bound_at_deadline"] == 3
    assert found["deadline_after_start_seconds"] == 119
    assert found["share_evicted_with_grace"] == pytest.approx(2 / 6, abs=1e-3)


def test_value_at_is_none_before_the_series_starts() -> None:
    assert figures.value_at([(5.0, 2)], 4.0) is None
    assert figures.value_at([(5.0, 2), (6.0, 1)], 5.5) == 2


def _observer() -> Observer:
    return Observer(
        server_url="https://127.0.0.1:1", ca=Path("ca"), cert=Path("c"), key=Path("k"), namespace="bench",
        interrupted={"spot-1"}, taint_key=None, min_available={}, wanted_pods=2,
    )  # fmt: skip


def _pod(uid: str, node: str) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid}, "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def test_observer_counts_pods_still_bound_to_interrupted_nodes() -> None:
    observer = _observer()
    observer._on_pod("ADDED", _pod("p1", "spot-1"), 1.0)
    observer._on_pod("ADDED", _pod("p2", "spot-1"), 1.0)
    observer._on_pod("ADDED", _pod("p3", "on-demand-1"), 1.0)
    observer.begin(2.0)
    observer._on_pod("MODIFIED", _pod("p1", "spot-1"), 3.0)  # an update is not a new pod
    observer._on_pod("DELETED", _pod("p1", "spot-1"), 4.0)
    observer._on_pod("DELETED", _pod("p3", "on-demand-1"), 5.0)
    assert observer.snapshot()["on_interrupted"] == [(2.0, 2), (4.0, 1)]


def test_audit_log_keeps_each_pods_first_accepted_eviction(tmp_path: Path) -> None:
    user = "system:serviceaccount:spotq-system:nth"

    def event(n: int, pod: str, code: int, done: str) -> str:
        return json.dumps({
            "auditID": str(n), "verb": "create", "user": {"username": user}, "responseStatus": {"code": code},
            "objectRef": {"resource": "pods", "subresource": "eviction", "name": pod},
            "requestReceivedTimestamp": "2026-01-01T00:00:00.000000Z", "stageTimestamp": done,
        })  # fmt: skip

    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    audit.mark()
    lines = [
        event(1, "a", 429, "2026-01-01T00:00:01.000000Z"),  # refused by the PDB: not an eviction
        event(2, "a", 201, "2026-01-01T00:00:02.500000Z"),
        event(3, "a", 201, "2026-01-01T00:00:09.000000Z"),  # again, while terminating: the first one counts
        event(4, "b", 201, "2026-01-01T00:00:03.000000Z"),
    ]
    path.write_text("\n".join(lines) + "\n")
    found = audit.since_mark([user])[user]
    base = 1767225600.0  # 2026-01-01T00:00:00Z
    assert found.evicted_at == {"a": base + 2.5, "b": base + 3.0}


# -- the one AWS endpoint -------------------------------------------------------------------------------------


def test_service_and_action_come_from_the_signature_and_the_request() -> None:
    auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=x"
    assert service_of(auth) == "sqs"
    assert service_of("") == ""
    assert action_of("AmazonSQS.ReceiveMessage", b"{}") == "ReceiveMessage"
    assert action_of("", b"Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0") == "DescribeInstances"


class _Upstream:
    """A server answering every POST with `body`, remembering what it was sent."""

    def __init__(self, body: bytes) -> None:
        upstream = self
        self.seen: list[tuple[str, bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.seen.append((self.path, data))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def router() -> Iterator[tuple[AwsRouter, _Upstream, _Upstream]]:
    sqs = _Upstream(b'{"Messages": [{"Body": "{\\"detail\\": {\\"instance-id\\": \\"i-0123456789abcdef0\\"}}"}]}')
    ec2 = _Upstream(b"<DescribeInstancesResponse/>")
    routed = AwsRouter({"sqs": sqs.url, "ec2": ec2.url}).start()
    yield routed, sqs, ec2
    routed.stop()
    sqs.close()
    ec2.close()


def _call(router: AwsRouter, service: str, body: bytes, target: str = "") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    headers = {"Authorization": f"AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/{service}/aws4_request, S=x"}
    if target:
        headers["X-Amz-Target"] = target
    connection.request("POST", "/", body=body, headers=headers)
    reply = connection.getresponse()
    reply.read()
    connection.close()
    return reply.status


def test_router_sends_each_service_to_its_server_and_records_what_the_figures_need(
    router: tuple[AwsRouter, _Upstream, _Upstream],
) -> None:
    routed, sqs, ec2 = router
    mark = routed.mark()
    assert _call(routed, "sqs", b'{"QueueUrl": "q"}', "AmazonSQS.ReceiveMessage") == 200
    assert _call(routed, "ec2", b"Action=DescribeInstances&InstanceId.1=i-0123456789abcdef0") == 200
    assert _call(routed, "autoscaling", b"Action=CompleteLifecycleAction") == 400  # no route: refused, counted
    assert [body for _, body in sqs.seen] == [b'{"QueueUrl": "q"}']
    assert [body for _, body in ec2.seen] == [b"Action=DescribeInstances&InstanceId.1=i-0123456789abcdef0"]
    described, calls = routed.since(mark)
    assert calls == {"sqs ReceiveMessage": 1, "ec2 DescribeInstances": 1}
    assert len(described) == 1
    assert set(routed.received) == {"i-0123456789abcdef0"}
    assert routed.unrouted == 1


# -- the report -----------------------------------------------------------------------------------------------


def test_ratio_says_how_many_times_better_spotq_is() -> None:
    assert report.ratio(0.5, 15.0, lower_is_better=True) == "30.0x"
    assert report.ratio(60, 80, lower_is_better=False) == "0.8x"
    assert report.ratio(0, 0, lower_is_better=True) == "="
    assert report.ratio(None, 3, lower_is_better=True) == "-"


def _phase(who: str, p99: float, graceful: int) -> dict[str, Any]:
    return {
        "who": who, "nodes": 2, "marked": 2, "enqueued_to_marked": {"p50": p99 / 2, "p99": p99, "max": p99},
        "deadline": {"evicted_with_grace_before_deadline": graceful, "pods": 20},
    }  # fmt: skip


def test_summary_has_nth_columns_and_spotqs_ratios() -> None:
    scale = {
        "scale": "2x10", "nodes": 2, "pods_per_node": 10, "cluster": {"grace_seconds": 30},
        "spotq": _phase("spotq", 0.5, 20), "nth-tuned": _phase("nth-tuned", 15.0, 10),
        "nth-defaults": _phase("nth-defaults", 300.0, 4),
    }  # fmt: skip
    lines = report.contender_table(scale)
    assert lines[0] == "| figure | spotq | NTH tuned | NTH defaults | spotq vs NTH tuned | spotq vs NTH defaults |"
    marked = next(line for line in lines if line.startswith("| enqueued → tainted+cordoned"))
    assert marked.endswith("| 30.0x | 600.0x |")
    graceful = next(line for line in lines if "finish their grace" in line)
    assert "| 20/20 | 10/20 | 4/20 | 2.0x | 5.0x |" in graceful


def test_summary_says_when_each_contenders_first_eviction_was_accepted_and_how_many_followed_soon() -> None:
    spotq, nth_tuned = _phase("spotq", 0.5, 20), _phase("nth-tuned", 15.0, 10)
    spotq["deadline"]["eviction_offsets"] = [3.07, 4.0, 9.9, 10.0, 12.5]
    nth_tuned["deadline"]["eviction_offsets"] = [0.79, 1.5, 11.0]
    scale = {
        "scale": "2x10", "nodes": 2, "pods_per_node": 10, "cluster": {"grace_seconds": 30},
        "spotq": spotq, "nth-tuned": nth_tuned, "nth-defaults": _phase("nth-defaults", 300.0, 4),
    }  # fmt: skip
    row = next(line for line in report.contender_table(scale) if line.startswith("| first eviction accepted"))
    # Within 10 s: four of spotq's (10.0 counts), two of NTH tuned's; none recorded for NTH defaults.
    assert row.endswith("| 3.07 / 4 | 0.79 / 2 | - | 2.0x | - |")


# -- NTH's process --------------------------------------------------------------------------------------------


def test_nth_environment_is_queue_mode_in_cluster_without_home() -> None:
    env = nth.environment(
        server_url="https://127.0.0.1:6443", aws_endpoint="http://127.0.0.1:5000", queue_url="http://q/1/nth",
        node_name="on-demand-1", config=nth.CONFIGS["tuned"],
    )  # fmt: skip
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert env["ENABLE_SQS_TERMINATION_DRAINING"] == "true"
    assert env["NODE_NAME"] == "on-demand-1"  # NTH refuses to start without one
    assert env["WORKERS"] == "50" and env["TAINT_NODE"] == "true"
    assert "HOME" not in env
    assert nth.CONFIGS["defaults"] == {"TAINT_NODE": "true"}


@pytest.mark.skipif(nth.why_not_run() is not None, reason=str(nth.why_not_run()))
def test_nth_sees_its_token_at_the_in_cluster_path_and_the_machine_does_not(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("CA")
    run_dir = nth.in_cluster_files(tmp_path / "run", "the-token", ca, "spotq-system")
    fake = tmp_path / "fake-nth"  # stands in for the binary: shows what it can read
    fake.write_text(f"#!/bin/sh\ncat {nth.SECRETS}/token {nth.SECRETS}/namespace {nth.SECRETS}/ca.crt\nls /run\n")
    fake.chmod(0o755)
    run_before = sorted(os.listdir("/run"))
    secrets_before = Path("/run/secrets").exists()
    process = nth.start(fake, run_dir, tmp_path / "nth.log", {"PATH": os.environ["PATH"]})
    assert process.popen.wait(30) == 0
    process.stop()
    log = (tmp_path / "nth.log").read_text()
    assert "the-tokenspotq-systemCA" in log
    assert all(name in log for name in run_before)  # the rest of /run is still there for it
    assert sorted(os.listdir("/run")) == run_before  # and nothing changed outside its namespace
    assert Path("/run/secrets").exists() == secrets_before


# -- the build ------------------------------------------------------------------------------------------------


def test_build_is_skipped_with_one_line_when_the_archive_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOTQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPOTQ_PEERS", str(tmp_path / "peers"))
    said: list[str] = []
    assert nth_build.build(said.append) is None
    assert said == [f"NTH skipped: no archive at {tmp_path / 'peers' / nth_build.ARCHIVE} (set SPOTQ_PEERS to the "
                    f"folder holding {nth_build.ARCHIVE})"]  # fmt: skip


def test_build_is_skipped_without_go_or_with_another_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPOTQ_PEERS", str(tmp_path))
    (tmp_path / nth_build.ARCHIVE).write_bytes(b"not the archive")
    said: list[str] = []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert nth_build.build(said.append) is None
    monkeypatch.setattr(nth_build.shutil, "which", lambda name: "/usr/bin/go")
    assert nth_build.build(said.append) is None
    assert said[0] == "NTH skipped: no Go toolchain on PATH (needed to build it from the archive)"
    assert said[1].startswith(f"NTH skipped: {tmp_path / nth_build.ARCHIVE} has sha256 ")


def test_a_complete_build_in_the_cache_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTQ_CACHE", str(tmp_path))
    target = tmp_path / "tools" / f"nth-{nth_build.VERSION}-{nth_build.ARCHIVE_SHA256[:12]}"
    assert nth_build.tool_dir() == target
    target.mkdir(parents=True)
    (target / "nth").write_text("#!/bin/sh\n")
    (target / "nth").chmod(0o755)
    assert nth_build.built() is None  # no .complete stamp: a build that did not finish
    (target / ".complete").write_text("2026-01-01T00:00:00Z\n")
    said: list[str] = []
    assert nth_build.build(said.append) == target / "nth"
    assert said == []
