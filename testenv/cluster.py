"""A real, loopback-only Kubernetes control plane with kwok-simulated nodes.

    with LocalCluster() as cluster:
        nodes = cluster.create_spot_nodes(3)
        cluster.create_deployment_with_pdb("default", "web", 4, min_available=3)
        cluster.wait_deployments_ready("default", ["web"])
        print(cluster.kubeconfig_path)

Processes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) run from the binaries that
``make testenv`` caches; each logs to ``<workdir>/logs/<name>.log``. ``stop()`` signals exactly the PIDs it
started (SIGTERM, then SIGKILL) and removes the work directory.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import tools, workloads
from .certs import Pki, create_pki
from .kube import JSON, KubeApiError, KubeClient
from .procs import ManagedProcess, free_port, wait_until
from .workloads import NodeInfo

KWOK_STAGE_FILES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",  # the *general* pod-delete stage: honours the grace period (deletionTimestamp)
)

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"  # kwok hands pod IPs out of this range; nothing ever connects to them


def audit_flags(policy: Path, log: Path, *, blocking: bool = False) -> list[str]:
    """kube-apiserver flags for an audit log at `log` by `policy`, never rotated: written in batches within 1 s, or
    (`blocking`) each request on record before it is answered."""
    flags = [f"--audit-policy-file={policy}", f"--audit-log-path={log}", "--audit-log-maxsize=0"]
    return flags + (
        ["--audit-log-mode=blocking"] if blocking else ["--audit-log-mode=batch", "--audit-log-batch-max-wait=1s"]
    )


def _has_default_route() -> bool:
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return True
    return any(line.split()[1:2] == ["00000000"] for line in lines)


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def write_kubeconfig(
    path: Path,
    *,
    server_url: str,
    ca_path: Path,
    user: Mapping[str, str],
    cluster_name: str = "spotq-testenv",
    user_name: str = "admin",
    namespace: str | None = None,
) -> Path:
    """Write a kubeconfig with the CA embedded; ``user`` holds kubeconfig user fields (token, client-*-data).
    Written whole or not at all (a new file renamed over the old): a process may read it again at any time."""
    ca_data = base64.b64encode(ca_path.read_bytes()).decode()
    context_ns = f"\n    namespace: {_yaml_str(namespace)}" if namespace else ""
    user_lines = "".join(f"\n    {key}: {_yaml_str(value)}" for key, value in user.items())
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {cluster_name}
  cluster:
    server: {_yaml_str(server_url)}
    certificate-authority-data: {ca_data}
users:
- name: {user_name}
  user:{user_lines}
contexts:
- name: {user_name}@{cluster_name}
  context:
    cluster: {cluster_name}
    user: {user_name}{context_ns}
current-context: {user_name}@{cluster_name}
preferences: {{}}
"""
    )
    partial.chmod(0o600)
    partial.replace(path)
    return path


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1 random ports.

    A sync context manager (``with LocalCluster() as cluster: ...``); also ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        verbose: bool = True,
        kube_api_qps: int = 200,
        kube_api_burst: int = 400,
        pod_ready_delay: float = 1.0,
        extra_args: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """
        ``pod_ready_delay``: seconds kwok waits before a scheduled pod turns Running/Ready (0 = at once; a
        pod can override it with the annotation ``pod-ready.stage.kwok.x-k8s.io/delay: "5s"``).
        ``extra_args`` maps a component name (e.g. "kube-apiserver") to additional command-line flags.
        """
        self._given_workdir = workdir
        self.keep_workdir = keep_workdir
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.verbose = verbose
        self.kube_api_qps = kube_api_qps
        self.kube_api_burst = kube_api_burst
        self.pod_ready_delay = pod_ready_delay
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}

        self.workdir: Path = Path()
        self.pki: Pki | None = None
        self.kubeconfig_path: Path = Path()
        self.server_url = ""
        self.ca_path: Path = Path()
        self.etcd_url = ""
        self.startup_seconds = 0.0
        self.startup_phases: dict[str, float] = {}
        self._procs: dict[str, ManagedProcess] = {}
        self._client: KubeClient | None = None
        self._created_workdir = False
        self._started = False

    # -- context manager -------------------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- properties ------------------------------------------------------------------------------------------

    @property
    def client(self) -> KubeClient:
        """Admin (system:masters) client."""
        if self._client is None:
            raise RuntimeError("the cluster is not started")
        return self._client

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items()}

    def _pid(self, name: str) -> int:
        return self._procs[name].pid

    @property
    def etcd_pid(self) -> int:
        return self._pid("etcd")

    @property
    def apiserver_pid(self) -> int:
        return self._pid("kube-apiserver")

    @property
    def controller_manager_pid(self) -> int:
        return self._pid("kube-controller-manager")

    @property
    def scheduler_pid(self) -> int:
        return self._pid("kube-scheduler")

    @property
    def kwok_pid(self) -> int:
        return self._pid("kwok")

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def env(self) -> dict[str, str]:
        """Environment variables pointing a kubectl/client at this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig_path)}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        if self.verbose:
            print(f"[testenv] {message}", file=sys.stderr, flush=True)

    def start(self) -> LocalCluster:
        if self._started:
            return self
        binaries = {
            name: tools.tool(name)
            for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        }
        t0 = time.monotonic()
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="spotq-testenv-"))
            self._created_workdir = True
        self._started = True
        self.logs_dir.mkdir(exist_ok=True)
        try:
            self._start(binaries, t0)
        except BaseException:
            self._log(f"start failed; logs in {self.logs_dir}")
            self.stop(remove_workdir=False)
            raise
        self.startup_seconds = time.monotonic() - t0
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in self.startup_phases.items())
        self._log(f"cluster ready in {self.startup_seconds:.1f}s ({phases}); KUBECONFIG={self.kubeconfig_path}")
        return self

    def _phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.startup_phases[name] = now - since
        return now

    def _spawn(self, name: str, binary: Path, args: Sequence[str]) -> ManagedProcess:
        argv = [str(binary), *args, *self.extra_args.get(name, [])]
        proc = ManagedProcess(name, argv, self.log_path(name), cwd=self.workdir)
        self._procs[name] = proc
        return proc

    def _start(self, binaries: Mapping[str, Path], t0: float) -> None:
        pki_dir = self.workdir / "pki"
        self.pki = pki = create_pki(pki_dir)
        self.ca_path = pki.ca_cert
        t = self._phase("certs", t0)

        # etcd
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            binaries["etcd"],
            [
                "--name=testenv",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testenv={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
        )

        def etcd_healthy() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        wait_until("etcd /health", etcd_healthy, timeout=self.start_timeout, processes=[etcd])
        t = self._phase("etcd", t)

        # kube-apiserver
        port = free_port()
        self.server_url = f"https://127.0.0.1:{port}"
        apiserver_args = [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--max-requests-inflight=800",
            "--max-mutating-requests-inflight=400",
            "--profiling=false",
        ]
        if not _has_default_route():
            # The API server derives its advertise address from the default route; loopback is rejected.
            # Without a route, advertise a documentation address and do not reconcile endpoints for it.
            apiserver_args += ["--advertise-address=192.0.2.1", "--endpoint-reconciler-type=none"]
        apiserver = self._spawn("kube-apiserver", binaries["kube-apiserver"], apiserver_args)

        self._client = KubeClient(
            self.server_url, pki.ca_cert, client_cert=pki.admin_cert, client_key=pki.admin_key, timeout=30
        )
        self.kubeconfig_path = write_kubeconfig(
            self.workdir / "admin.kubeconfig",
            server_url=self.server_url,
            ca_path=pki.ca_cert,
            user={
                "client-certificate-data": base64.b64encode(pki.admin_cert.read_bytes()).decode(),
                "client-key-data": base64.b64encode(pki.admin_key.read_bytes()).decode(),
            },
        )

        def apiserver_ready() -> bool:
            status, text = self.client.raw("GET", "/readyz", accept="text/plain")
            return status == 200 and text.strip() == "ok"

        wait_until("kube-apiserver /readyz", apiserver_ready, timeout=self.start_timeout, processes=[etcd, apiserver])
        t = self._phase("kube-apiserver", t)

        # kube-controller-manager, kube-scheduler and kwok start together.
        qps = [f"--kube-api-qps={self.kube_api_qps}", f"--kube-api-burst={self.kube_api_burst}"]
        kcm = self._spawn(
            "kube-controller-manager",
            binaries["kube-controller-manager"],
            [
                f"--kubeconfig={self.kubeconfig_path}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--controllers=*",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--cluster-name=spotq-testenv",
                "--concurrent-replicaset-syncs=20",
                "--concurrent-deployment-syncs=20",
                "--concurrent-gc-syncs=40",
                "--concurrent-namespace-syncs=20",
                "--concurrent-serviceaccount-token-syncs=10",
                *qps,
            ],
        )
        scheduler_config = self.workdir / "kube-scheduler.yaml"
        scheduler_config.write_text(
            f"""apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {_yaml_str(str(self.kubeconfig_path))}
  qps: {self.kube_api_qps}
  burst: {self.kube_api_burst}
leaderElection:
  leaderElect: false
"""
        )
        scheduler = self._spawn(
            "kube-scheduler",
            binaries["kube-scheduler"],
            [f"--config={scheduler_config}", "--bind-address=127.0.0.1", "--secure-port=0"],
        )
        kwok_config = self.workdir / "kwok.yaml"
        kwok_config.write_text(self._kwok_config())
        kwok = self._spawn(
            "kwok",
            binaries["kwok"],
            [
                f"--kubeconfig={self.kubeconfig_path}",
                f"--config={kwok_config}",
                f"--manage-nodes-with-annotation-selector={workloads.KWOK_ANNOTATION}=fake",
                "--node-ip=127.0.0.1",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
            ],
        )
        everything = [etcd, apiserver, kcm, scheduler, kwok]

        # The serviceaccount controller (kube-controller-manager) creates "default" in every namespace.
        def default_sa() -> bool:
            return self.client.get_or_none("/api/v1/namespaces/default/serviceaccounts/default") is not None

        wait_until("the default ServiceAccount", default_sa, timeout=self.start_timeout, processes=everything)
        t = self._phase("kube-controller-manager", t)

        # A probe node made Ready by kwok, and a probe pod the scheduler binds and kwok runs; then both go.
        self._probe(everything)
        self._phase("scheduler+kwok probe", t)

    def _kwok_config(self) -> str:
        stages_dir = tools.TESTENV_DIR / "kwok"
        docs = [
            """apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  nodeLeaseDurationSeconds: 40
  nodeLeaseParallelism: 16
  nodePlayStageParallelism: 16
  podPlayStageParallelism: 16
  podsOnNodeSyncParallelism: 4
"""
        ]
        for name in KWOK_STAGE_FILES:
            text = (stages_dir / name).read_text()
            if name == "pod-ready.yaml":
                delay_ms = max(0, round(self.pod_ready_delay * 1000))
                text = text.replace("durationMilliseconds: 1000", f"durationMilliseconds: {delay_ms}", 1)
            docs.append(text)
        return "\n---\n".join(doc.strip() + "\n" for doc in docs)

    def _probe(self, processes: Sequence[ManagedProcess]) -> None:
        name = "testenv-probe"
        client = self.client
        node = workloads.node_manifest(name, workloads.new_instance_id(), capacity_type="ON_DEMAND")
        node["metadata"]["labels"]["testenv/probe"] = "true"
        client.create("/api/v1/nodes", node, exist_ok=True)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeSelector": {"testenv/probe": "true"},
                "containers": [{"name": "probe", "image": workloads.DEFAULT_IMAGE}],
                "terminationGracePeriodSeconds": 0,
            },
        }

        def node_ready() -> bool:
            got = client.get_or_none(f"/api/v1/nodes/{name}")
            return got is not None and workloads._node_ready(got)

        wait_until("kwok to make a node Ready", node_ready, timeout=self.start_timeout, processes=processes)

        def pod_created() -> bool:
            try:
                client.create("/api/v1/namespaces/default/pods", pod, exist_ok=True)
            except KubeApiError as exc:  # e.g. the ServiceAccount admission racing the token controller
                if exc.status >= 500 or exc.status == 403:
                    return False
                raise
            return True

        wait_until("the probe pod to be created", pod_created, timeout=self.start_timeout, processes=processes)

        def pod_running() -> bool:
            got = client.get_or_none(f"/api/v1/namespaces/default/pods/{name}")
            return got is not None and workloads.pod_is_running_ready(got)

        wait_until(
            "kube-scheduler to bind and kwok to run a pod", pod_running, timeout=self.start_timeout,
            processes=processes,
        )  # fmt: skip
        client.delete(f"/api/v1/namespaces/default/pods/{name}", grace_period_seconds=0)
        client.delete(f"/api/v1/nodes/{name}")

    def stop(self, *, remove_workdir: bool | None = None) -> None:
        """Stop the processes this object started (reverse order, by PID) and remove the work directory."""
        if self._client is not None:
            self._client.close()
        for name in reversed(list(self._procs)):
            proc = self._procs[name]
            code = proc.stop(self.stop_timeout)
            self._log(f"stopped {name} (pid {proc.pid}, exit {code})")
        self._procs.clear()
        self._client = None
        remove = (not self.keep_workdir) if remove_workdir is None else remove_workdir
        if remove and self._created_workdir and self.workdir != Path():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._started = False

    def check_alive(self) -> None:
        """Raise :class:`StartupError` (with the log tail) if a component has died."""
        for proc in self._procs.values():
            proc.check_running()

    # -- conveniences ----------------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        """Run the built kubectl against this cluster; returns the CompletedProcess (text mode)."""
        import subprocess

        return subprocess.run(
            [str(tools.tool("kubectl")), f"--kubeconfig={self.kubeconfig_path}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def metrics(self) -> str:
        """The API server's Prometheus metrics text (``apiserver_request_total`` and friends)."""
        status, text = self.client.raw("GET", "/metrics", accept="text/plain")
        if status != 200:
            raise KubeApiError("GET", "/metrics", status, text)
        return text

    def apiserver_request_total(self, **labels: str) -> float:
        """Sum of ``apiserver_request_total`` samples whose labels match (e.g. verb="POST", resource="pods")."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            label_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
            parsed = dict(part.split("=", 1) for part in label_text.split(",") if "=" in part)
            if all(parsed.get(k, "").strip('"') == v for k, v in labels.items()):
                total += float(value)
        return total

    def create_namespace(self, name: str, *, labels: Mapping[str, str] | None = None) -> str:
        workloads.create_namespace(self.client, name, labels=labels)
        return name

    def delete_namespace(self, name: str, *, wait: bool = False) -> None:
        workloads.delete_namespace(self.client, name, wait=wait)

    def create_spot_nodes(self, n: int, **kwargs: Any) -> list[NodeInfo]:
        """See :func:`testenv.workloads.create_nodes` for keyword arguments."""
        return workloads.create_spot_nodes(self.client, n, **kwargs)

    def create_on_demand_nodes(self, n: int, **kwargs: Any) -> list[NodeInfo]:
        return workloads.create_on_demand_nodes(self.client, n, **kwargs)

    def wait_nodes_ready(self, names: Iterable[str], *, timeout: float = 120.0) -> None:
        workloads.wait_nodes_ready(self.client, names, timeout=timeout)

    def delete_nodes(self, names: Iterable[str]) -> None:
        workloads.delete_nodes(self.client, names)

    def cordon(self, node_name: str) -> None:
        workloads.cordon(self.client, node_name)

    def uncordon(self, node_name: str) -> None:
        workloads.cordon(self.client, node_name, unschedulable=False)

    def get_node(self, name: str) -> JSON | None:
        return self.client.get_or_none(f"/api/v1/nodes/{name}")

    def create_deployment_with_pdb(self, namespace: str, name: str, replicas: int, **kwargs: Any) -> None:
        """See :func:`testenv.workloads.create_deployment_with_pdb`."""
        workloads.create_deployment_with_pdb(self.client, namespace, name, replicas, **kwargs)

    def wait_deployments_ready(
        self, namespace: str, names: Iterable[str] | None = None, *, timeout: float = 120.0
    ) -> None:
        workloads.wait_deployments_ready(self.client, namespace, names, timeout=timeout)

    def list_pods(
        self, namespace: str | None = None, *, label_selector: str | None = None, node_name: str | None = None
    ) -> list[JSON]:
        return workloads.list_pods(self.client, namespace, label_selector=label_selector, node_name=node_name)

    def evict(self, namespace: str, pod_name: str, *, grace_period_seconds: int | None = None) -> tuple[int, JSON]:
        return workloads.evict(self.client, namespace, pod_name, grace_period_seconds=grace_period_seconds)

    def create_service_account(self, namespace: str, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        self.client.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", body, exist_ok=True)

    def token_kubeconfig(
        self,
        namespace: str,
        service_account: str,
        *,
        expiration_seconds: int = 3600,
        path: Path | None = None,
        bound_to: JSON | None = None,
    ) -> Path:
        """Mint a token for the ServiceAccount (TokenRequest API) and write a kubeconfig that uses it; `bound_to`:
        a Secret (as the API returned it) whose deletion revokes the token."""
        token = workloads.mint_token(
            self.client, namespace, service_account, expiration_seconds=expiration_seconds, bound_to=bound_to
        )
        if path is None:
            kubeconfigs = self.workdir / "kubeconfigs"
            kubeconfigs.mkdir(exist_ok=True)
            path = kubeconfigs / f"{namespace}-{service_account}-{int(time.time() * 1000)}.kubeconfig"
        return write_kubeconfig(
            path,
            server_url=self.server_url,
            ca_path=self.ca_path,
            user={"token": token},
            user_name=f"{namespace}-{service_account}",
            namespace=namespace,
        )

    def token_client(self, namespace: str, service_account: str, *, expiration_seconds: int = 3600) -> KubeClient:
        """A :class:`KubeClient` authenticating as the ServiceAccount (bearer token, no client cert)."""
        token = workloads.mint_token(self.client, namespace, service_account, expiration_seconds=expiration_seconds)
        return KubeClient(self.server_url, self.ca_path, token=token)
