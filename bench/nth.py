"""aws-node-termination-handler (NTH), the incumbent, as a contender: its two configurations, the EC2 instances it
looks up, its in-cluster identity and its process (queue mode). Built by nth_build.py; measured by phases.py.

* AWS: it takes one endpoint for every service (`AWS_ENDPOINT`); aws_router.py sends its SQS calls to the
  benchmark's ElasticMQ and its EC2 calls (a DescribeInstances per message) to moto, whose instances carry the
  Spot nodes' instance ids, private DNS names equal to the node names (how NTH finds a node) and NTH's managed tag
  (its default `CHECK_TAG_BEFORE_DRAINING`).
* Kubernetes: it reads its configuration only from `rest.InClusterConfig()`. A private mount namespace
  (`unshare --mount`) shows it, and it alone, the ServiceAccount token, CA and namespace at
  /var/run/secrets/kubernetes.io/serviceaccount: an overlay on /run (nothing written below the real /run) makes
  the mount point, a bind mount puts the files from the phase's work directory there. Both end with the process.
  The token's ServiceAccount is bound to a copy of its chart's ClusterRole (world.NTH_RULES).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from testenv.aws import ACCOUNT_ID, CREDENTIALS, REGION, MotoServer
from testenv.procs import ManagedProcess

TAINT = "aws-node-termination-handler/spot-itn"
MANAGED_TAG = "aws-node-termination-handler/managed"
SECRETS = "/var/run/secrets/kubernetes.io/serviceaccount"

# Its defaults, with the taint on so "tainted+cordoned" means the same for every contender; and tuned as its users
# are told for large waves.
CONFIGS: dict[str, dict[str, str]] = {
    "defaults": {"TAINT_NODE": "true"},
    "tuned": {"TAINT_NODE": "true", "WORKERS": "50", "KUBE_API_QPS": "100", "KUBE_API_BURST": "200"},
}

# sh -c script run inside the private mount namespace: $1 the overlay's upper dir, $2 its work dir, $3 the
# directory holding token/ca.crt/namespace; the rest is NTH's argv. `mount -n` writes no /run/mount/utab.
_MOUNT_AND_EXEC = f"""set -e
if [ ! -d {SECRETS} ]; then
  mkdir -p "$1/secrets/kubernetes.io/serviceaccount"
  mount -n -t overlay overlay -o "lowerdir=/run,upperdir=$1,workdir=$2" /run
fi
mount -n --bind "$3" {SECRETS}
shift 3
exec "$@"
"""


def register_instances(moto: MotoServer, nodes: Sequence[tuple[str, str, str]]) -> None:
    """Running moto instances for (node name, instance id, zone): the warnings' instance ids, private IPs whose
    DNS names are the node names (ip-10-0-X-Y.ec2.internal in us-east-1), tagged as NTH-managed."""
    from moto.ec2.models import ec2_backends  # type: ignore[import-untyped,unused-ignore]

    ec2 = moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    backend = ec2_backends[ACCOUNT_ID][REGION]
    for zone in sorted({zone for _, _, zone in nodes}):
        wanted = [(name, instance_id) for name, instance_id, z in nodes if z == zone]
        made = ec2.run_instances(
            ImageId=image, MinCount=len(wanted), MaxCount=len(wanted), InstanceType="m5.xlarge",
            Placement={"AvailabilityZone": zone},
        )["Instances"]  # fmt: skip
        for instance, (name, instance_id) in zip(made, wanted, strict=True):
            ip = re.match(r"ip-(\d+)-(\d+)-(\d+)-(\d+)\.", name)
            if ip is None:
                raise ValueError(f"node name {name} does not carry an IP (ip-A-B-C-D.…): NTH could not find it")
            record = backend.get_instance(instance["InstanceId"])
            record.id = instance_id
            record.nics[0].private_ip_address = ".".join(ip.groups())
    ec2.create_tags(Resources=[i for _, i, _ in nodes], Tags=[{"Key": MANAGED_TAG, "Value": "true"}])
    found = {
        i["InstanceId"]: i["PrivateDnsName"]
        for r in ec2.describe_instances(InstanceIds=[i for _, i, _ in nodes])["Reservations"]
        for i in r["Instances"]
    }
    wrong = [(name, found.get(i)) for name, i, _ in nodes if found.get(i) != name]
    if wrong:
        raise RuntimeError(f"moto does not describe the nodes as NTH needs: {wrong[:3]}")


def in_cluster_files(run_dir: Path, token: str, ca_cert: Path, namespace: str) -> Path:
    """The phase's directory: `serviceaccount/` (what rest.InClusterConfig() reads) and the overlay's dirs."""
    secrets = run_dir / "serviceaccount"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "token").write_text(token)
    shutil.copy(ca_cert, secrets / "ca.crt")
    (secrets / "namespace").write_text(namespace)
    for name in ("upper", "work"):
        (run_dir / name).mkdir(exist_ok=True)
    return run_dir


def environment(
    *, server_url: str, aws_endpoint: str, queue_url: str, node_name: str, config: Mapping[str, str]
) -> dict[str, str]:
    """NTH's whole environment: queue mode, the router as its AWS endpoint, the API server as its cluster.

    No HOME (the SDK reads no shared config or credentials file), no instance metadata; NODE_NAME is required
    and names the node NTH itself runs on (an on-demand node, as its chart's queue-mode Deployment would)."""
    host, _, port = server_url.removeprefix("https://").partition(":")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": REGION,
        "AWS_ENDPOINT": aws_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "QUEUE_URL": queue_url,
        "ENABLE_SQS_TERMINATION_DRAINING": "true",
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port or "443",
        "NODE_NAME": node_name,
        "JSON_LOGGING": "true",
        **config,
    }


def start(binary: Path, run_dir: Path, log_path: Path, env: Mapping[str, str]) -> ManagedProcess:
    """NTH in its own mount namespace; `run_dir` from in_cluster_files."""
    argv = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT_AND_EXEC, "nth",
        str(run_dir / "upper"), str(run_dir / "work"), str(run_dir / "serviceaccount"), str(binary),
    ]  # fmt: skip
    return ManagedProcess("nth", argv, log_path, env=env)


def why_not_run() -> str | None:
    """Why NTH cannot be started here (one line), or None: it needs unshare and mount (root)."""
    if shutil.which("unshare") is None:
        return "no `unshare` (util-linux) for its private mount namespace"
    if os.geteuid() != 0:
        return "a private mount namespace with an overlay needs root"
    return None
