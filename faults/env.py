"""A fresh local environment for one fault scenario: a real control plane whose audit log records every request of
spotq's ServiceAccounts, an SQS queue behind the recording proxy, and spotq processes started the way the Helm chart
runs them.

* **Audit.** Every spotq process gets a ServiceAccount of its own in `spotq-system`; the policy records the whole
  group `system:serviceaccounts:spotq-system` (blocking mode: a request is on record before it is answered), so
  the log says which process sent each request: a restarted process, a rolling update's new pod and each replica
  are told apart without reading spotq's logs.
* **RBAC.** The chart's ClusterRole and its Lease Role, read from `helm/spotq/templates/rbac.yaml` (without the
  optional pods/delete), bound to the group: the scenarios also prove the chart's rules suffice.
* **The chart's downward API.** Each process runs with `SPOTQ_KUBE__POD_NAME` / `SPOTQ_KUBE__POD_NAMESPACE` as a
  pod would; a restarted container keeps its pod's name, a new pod (rolling update, replica) has its own.
* **SQS.** ElasticMQ (a child process: it can be SIGSTOPped) or moto (in this process, for the integration tests);
  spotq reaches it through `faults.sqs_proxy.SqsProxy`, which records deletions and can refuse connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.sqs_endpoint import ElasticMQ
from faults.sqs_proxy import SqsProxy
from testenv import LocalCluster, MotoServer
from testenv.kube import JSON, KubeClient
from testenv.spotq import SpotqProcess

ROOT = Path(__file__).resolve().parent.parent
SPOTQ_NS = "spotq-system"
SPOTQ_GROUP = f"system:serviceaccounts:{SPOTQ_NS}"
REGION = "us-east-1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def chart_rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ClusterRole rules, Lease Role rules) as helm/spotq/templates/rbac.yaml grants them by default (with the
    pods/delete that drain.completeAdmittedEvictions, on by default, adds)."""
    cluster_rules: list[dict[str, Any]] = []
    lease_rules: list[dict[str, Any]] = []
    for doc in re.split(r"^---\s*$", (ROOT / "helm/spotq/templates/rbac.yaml").read_text(), flags=re.M):
        body = re.sub(r"\{\{ if include \"spotq.deletesPods\" \. \}\}(.*?)\{\{ end \}\}", r"\1", doc)  # on by default
        body = re.sub(r"\{\{ if include .*?\}\}.*?\{\{ end \}\}", "", body)
        body = re.sub(r"^\s*\{\{.*?\}\}\s*$", "", body, flags=re.M)  # lines that are only template directives
        body = re.sub(r"\{\{.*?\}\}", "x", body)
        loaded = yaml.safe_load(body)
        if isinstance(loaded, dict) and loaded.get("kind") == "ClusterRole":
            cluster_rules = list(loaded["rules"])
        elif isinstance(loaded, dict) and loaded.get("kind") == "Role":
            lease_rules = list(loaded["rules"])
    if not cluster_rules or not lease_rules:
        raise RuntimeError("helm/spotq/templates/rbac.yaml: no ClusterRole or Lease Role found")
    return cluster_rules, lease_rules


def audit_policy(path: Path) -> Path:
    path.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\n"
        f"rules:\n- level: Metadata\n  userGroups: {json.dumps([SPOTQ_GROUP])}\n- level: None\n"
    )
    return path


# -- SQS ------------------------------------------------------------------------------------------------------------


class Queue:
    """One queue on the upstream endpoint, reached by spotq through the proxy."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.elasticmq: ElasticMQ | None = None
        self.moto: MotoServer | None = None
        if kind == "elasticmq":
            self.elasticmq = ElasticMQ(workdir / "elasticmq")
            self.elasticmq.start()
            upstream = self.elasticmq.endpoint_url
        elif kind == "moto":
            self.moto = MotoServer(verbose=False).start()
            upstream = self.moto.endpoint_url
        else:
            raise ValueError(f"unknown SQS endpoint {kind!r} (elasticmq or moto)")
        self.upstream = upstream
        self.proxy = SqsProxy(upstream).start()
        self.name = f"spotq-{uuid.uuid4().hex[:8]}"
        reply = self.client().create_queue(QueueName=self.name, Attributes={"MessageRetentionPeriod": "1209600"})
        self.url = str(reply["QueueUrl"])
        self.paused = False

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped,unused-ignore]
        from botocore.config import Config

        config = Config(max_pool_connections=16, retries={"max_attempts": 3, "mode": "standard"})
        return boto3.client(
            "sqs", endpoint_url=self.upstream, region_name=REGION, config=config,
            aws_access_key_id="faults", aws_secret_access_key="faults",
        )  # fmt: skip

    @property
    def spotq_url(self) -> str:
        """The queue's URL on the proxy (what spotq is given)."""
        return f"{self.proxy.url}/{self.url.split('/', 3)[3]}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "faults",
            "AWS_SECRET_ACCESS_KEY": "faults",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "SPOTQ_AWS__ENDPOINT_URL": self.proxy.url,
            "SPOTQ_AWS__REGION": REGION,
            "SPOTQ_QUEUE__URL": self.spotq_url,
        }

    def send(self, bodies: Sequence[str]) -> list[str]:
        """SendMessageBatch in tens, straight to the upstream; the message ids in the order of `bodies`."""
        client = self.client()
        ids: list[str] = [""] * len(bodies)
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": bodies[i]} for i in range(start, min(start + 10, len(bodies)))]
            reply = client.send_message_batch(QueueUrl=self.url, Entries=entries)
            if reply.get("Failed"):
                raise RuntimeError(f"send_message_batch failed: {reply['Failed'][:3]}")
            for ok in reply["Successful"]:
                ids[int(ok["Id"])] = str(ok["MessageId"])
        return ids

    def depth(self) -> int | None:
        """Messages still in the queue, visible or in flight (None while the upstream does not answer)."""
        if self.paused:
            return None
        try:
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            attrs = self.client().get_queue_attributes(QueueUrl=self.url, AttributeNames=names)["Attributes"]
        except Exception:
            return None
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def hang(self) -> str:
        """The endpoint stops answering: SIGSTOP ElasticMQ, or hold every request in the proxy (moto)."""
        self.paused = True
        if self.elasticmq is not None:
            os.kill(self.elasticmq.pid, signal.SIGSTOP)
            return "ElasticMQ SIGSTOP"
        self.proxy.hold()
        return "proxy holds every request"

    def unhang(self) -> None:
        if self.elasticmq is not None:
            os.kill(self.elasticmq.pid, signal.SIGCONT)
        self.proxy.release()
        self.paused = False

    def close(self) -> None:
        self.proxy.stop()
        if self.elasticmq is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.elasticmq.pid, signal.SIGCONT)
            self.elasticmq.stop()
        if self.moto is not None:
            self.moto.stop()


# -- spotq ----------------------------------------------------------------------------------------------------------


@dataclass
class Spotq:
    """One spotq process: its pod (the downward API's name), its own ServiceAccount (its user in the audit log)."""

    label: str
    pod: str
    user: str
    log_path: Path
    process: SpotqProcess
    started: float = 0.0
    ready: float | None = None
    ended: float | None = None
    how_ended: str = ""

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def alive(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None

    def kill(self) -> float:
        """kill -9: no hand-back, nothing flushed."""
        assert self.process.process is not None
        self.process.process.kill()
        self.process.process.wait(10)
        self.ended, self.how_ended = time.time(), "SIGKILL"
        return self.ended

    def terminate(self) -> float:
        """SIGTERM, without waiting (the kubelet's stop); `wait_exit` waits."""
        assert self.process.process is not None
        self.process.process.send_signal(signal.SIGTERM)
        self.how_ended = "SIGTERM"
        return time.time()

    def wait_exit(self, timeout: float) -> int | None:
        assert self.process.process is not None
        try:
            code = self.process.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.ended = self.ended or time.time()
        return code

    def stop(self) -> None:
        if self.alive():
            self.process.stop(30)
            self.ended = time.time()
            self.how_ended = self.how_ended or "stopped at the end"


@dataclass
class Environment:
    """Control plane + queue + spotq processes for one scenario; `close()` stops what it started."""

    workdir: Path
    sqs_kind: str = "elasticmq"
    settings: dict[str, str] = field(default_factory=dict)  # extra SPOTQ_* for every process
    keep: bool = False
    cluster: LocalCluster | None = None
    queue: Queue | None = None
    processes: list[Spotq] = field(default_factory=list)
    _accounts: int = 0
    _secrets: int = 0
    _bound: dict[str, str] = field(default_factory=dict)  # account → the Secret its current token is bound to

    @classmethod
    def create(
        cls, workdir: Path | None = None, *, sqs: str = "elasticmq", settings: dict[str, str] | None = None,
        keep: bool = False, verbose: bool = False,
    ) -> Environment:  # fmt: skip
        base = workdir or Path(tempfile.mkdtemp(prefix="spotq-faults-"))
        base.mkdir(parents=True, exist_ok=True)
        env = cls(base, sqs, dict(settings or {}), keep)
        try:
            env._start(verbose)
        except BaseException:
            env.close()
            raise
        return env

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def kube(self) -> LocalCluster:
        assert self.cluster is not None
        return self.cluster

    @property
    def sqs(self) -> Queue:
        assert self.queue is not None
        return self.queue

    def _start(self, verbose: bool) -> None:
        policy = audit_policy(self.workdir / "audit-policy.yaml")
        self.cluster = LocalCluster(
            workdir=self.workdir / "cluster",
            keep_workdir=True,
            verbose=verbose,
            extra_args={
                "kube-apiserver": [
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={self.audit_log}",
                    "--audit-log-maxsize=0",
                    "--audit-log-mode=blocking",
                ]
            },
        )
        self.cluster.start()
        self._grant()
        self.queue = Queue(self.sqs_kind, self.workdir)

    def _grant(self) -> None:
        client = self.kube.client
        self.kube.create_namespace(SPOTQ_NS)
        cluster_rules, lease_rules = chart_rules()
        subjects = [{"kind": "Group", "name": SPOTQ_GROUP, "apiGroup": "rbac.authorization.k8s.io"}]
        ref = {"apiGroup": "rbac.authorization.k8s.io", "name": "spotq"}
        client.create(f"{RBAC}/clusterroles", {"metadata": {"name": "spotq"}, "rules": cluster_rules})
        client.create(f"{RBAC}/namespaces/{SPOTQ_NS}/roles", {"metadata": {"name": "spotq"}, "rules": lease_rules})
        client.create(
            f"{RBAC}/clusterrolebindings",
            {"metadata": {"name": "spotq"}, "roleRef": {**ref, "kind": "ClusterRole"}, "subjects": subjects},
        )
        client.create(
            f"{RBAC}/namespaces/{SPOTQ_NS}/rolebindings",
            {"metadata": {"name": "spotq"}, "roleRef": {**ref, "kind": "Role"}, "subjects": subjects},
        )

    def spotq(
        self, pod: str, *, settings: dict[str, str] | None = None, wait_ready: bool = True, revocable: bool = False
    ) -> Spotq:
        """Start `spotq run` as pod `pod` with a ServiceAccount of its own; returns once /readyz says 200.
        `revocable`: its token is bound to a Secret, so that revoke_token() can take it away mid-wave."""
        self._accounts += 1
        account = f"{pod}-p{self._accounts}"
        self.kube.create_service_account(SPOTQ_NS, account)
        kubeconfig = self._kubeconfig(account, self._token_secret(account) if revocable else None)
        env = {
            **self.sqs.env(),
            "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig),
            "SPOTQ_KUBE__NODE_SELECTOR": "lifecycle=Ec2Spot",
            "SPOTQ_KUBE__POD_NAME": pod,
            "SPOTQ_KUBE__POD_NAMESPACE": SPOTQ_NS,
            **self.settings,
            **(settings or {}),
        }
        log_path = self.workdir / f"{account}.log"
        process = SpotqProcess(env, log_path=log_path, ready_timeout=120)
        proc = Spotq(account, pod, f"system:serviceaccount:{SPOTQ_NS}:{account}", log_path, process)
        self.processes.append(proc)
        proc.started = time.time()
        if wait_ready:
            process.start()
            proc.ready = time.time()
        return proc

    def _kubeconfig(self, account: str, bound_to: JSON | None) -> Path:
        return self.kube.token_kubeconfig(
            SPOTQ_NS, account, expiration_seconds=12 * 3600, path=self.workdir / f"{account}.kubeconfig",
            bound_to=bound_to,
        )  # fmt: skip

    def _token_secret(self, account: str) -> JSON:
        """A new Secret for the account's next token to be bound to (its deletion revokes that token)."""
        self._secrets += 1
        self._bound[account] = f"{account}-token-{self._secrets}"
        body = {"metadata": {"name": self._bound[account]}, "type": "Opaque"}
        return self.kube.client.create(f"/api/v1/namespaces/{SPOTQ_NS}/secrets", body)

    def revoke_token(self, proc: Spotq, timeout: float = 60.0) -> float:
        """Delete the Secret proc's token is bound to; returns when the API server first refuses that token (401).
        (It caches a token's authentication for a few seconds, so the refusals begin a little after the delete.)"""
        kubeconfig = yaml.safe_load((self.workdir / f"{proc.label}.kubeconfig").read_text())
        token = kubeconfig["users"][0]["user"]["token"]
        probe = KubeClient(self.kube.server_url, self.kube.ca_path, token=token)
        self.kube.client.delete(f"/api/v1/namespaces/{SPOTQ_NS}/secrets/{self._bound[proc.label]}")
        deadline = time.time() + timeout
        while probe.raw("GET", f"/api/v1/namespaces/{SPOTQ_NS}/pods", params={"limit": 1})[0] != 401:
            if time.time() > deadline:
                raise RuntimeError(f"the API server still takes {proc.label}'s revoked token after {timeout:g} s")
            time.sleep(0.1)
        return time.time()

    def renew_token(self, proc: Spotq) -> float:
        """A new token for proc's ServiceAccount in its kubeconfig (as a rotation would put it there)."""
        self._kubeconfig(proc.label, self._token_secret(proc.label))
        return time.time()

    def close(self) -> None:
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.stop()
        if self.queue is not None:
            self.queue.close()
        if self.cluster is not None:
            self.cluster.stop(remove_workdir=not self.keep)
