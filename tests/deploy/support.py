"""Helpers for the deployable-artifact tests: paths, a thin helm runner, a CloudFormation YAML reader, spotq explain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from testenv import LocalCluster, MotoServer, tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "spotq"
CFN_TEMPLATE = REPO / "infra" / "cloudformation" / "spotq.yaml"
EVENTS = REPO / "tests" / "data" / "events" / "eventbridge"

#: A queue URL shaped like the stack's QueueURL output.
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/spotq-Queue-0A1B2C3D4E5F"

JSON = dict[str, Any]


@dataclass(frozen=True)
class Helm:
    """The helm binary with its config, cache and data kept in a temporary home (never the user's)."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def with_kubeconfig(self, kubeconfig: Path) -> Helm:
        return replace(self, kubeconfig=kubeconfig)

    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env(), cwd=REPO, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def template(self, *args: str, release: str = "spotq", namespace: str = "kube-system") -> list[JSON]:
        """`helm template` the chart; the rendered objects, parsed."""
        out = self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def sets(values: Mapping[str, str]) -> list[str]:
    """`--set k=v` arguments."""
    args: list[str] = []
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def of_kind(objects: Sequence[JSON], kind: str) -> list[JSON]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Sequence[JSON], kind: str) -> JSON:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(workload: JSON) -> JSON:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: JSON = containers[0]
    return result


def env_values(workload: JSON) -> dict[str, str]:
    """The container's literal environment (name → value); downward-API variables are left out."""
    return {e["name"]: e["value"] for e in container(workload).get("env", []) if "value" in e}


def env_field_refs(workload: JSON) -> dict[str, str]:
    """name → fieldPath of the container's downward-API variables."""
    return {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container(workload).get("env", [])
        if "fieldRef" in e.get("valueFrom", {})
    }


# -- CloudFormation -------------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML, turning short-form intrinsics (!Ref, !GetAtt, !Sub, ...) into their long form."""


def _intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> JSON:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_cfn(path: Path = CFN_TEMPLATE) -> JSON:
    template: JSON = yaml.load(path.read_text(), Loader=_CfnLoader)
    return template


# -- spotq ----------------------------------------------------------------------------------------------------


def explain(body: str | bytes) -> JSON:
    """`python -m spotq explain -` with the body on stdin; its JSON verdict."""
    data = body.encode() if isinstance(body, str) else body
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "spotq", "explain", "-"],
        input=data,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    verdict: JSON = json.loads(result.stdout)
    return verdict


def ready(log_path: Path) -> bool:
    """Whether the spotq logging to `log_path` (JSON lines, SPOTQ_SERVER__PORT=0) answers /readyz with 200."""
    for line in log_path.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "spotq started":
            port = json.loads(line)["port"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
    return False


def refusals(log: str) -> list[str]:
    """Lines of a spotq log (JSON lines) that tell of a call the API server refused: RBAC is missing something."""
    refused = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        text = json.dumps(record).lower()
        if record.get("status") in (401, 403) or "forbidden" in text or "http 403" in text:
            refused.append(line)
    return refused


def sample_event(name: str) -> JSON:
    event: JSON = json.loads((EVENTS / name).read_text())
    return event


# -- AWS ------------------------------------------------------------------------------------------------------

#: Exactly the AWS calls spotq makes, as IAM actions (the batch calls use the same actions as the single ones).
SPOTQ_AWS_ACTIONS = frozenset(
    {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "ec2:DescribeInstances",
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:RecordLifecycleActionHeartbeat",
        "events:ListRuleNamesByTarget",  # the periodic audit's stack check
        "events:DescribeRule",
    }
)


def as_list(value: Any) -> list[Any]:
    """An IAM field that may be one value or a list, as a list."""
    return value if isinstance(value, list) else [value]


def web_pods_on_one_node(cluster: LocalCluster, namespace: str) -> tuple[str, str, str]:
    """Four `web` pods (PDB maxUnavailable 1, grace 1 s) all on a fresh Spot node, then a spare Spot node that joins
    afterwards to take them: (target node, its instance ID, spare node)."""
    group = {"testenv/group": namespace}
    ((target, instance_id),) = cluster.create_spot_nodes(1, labels=group)
    cluster.create_deployment_with_pdb(
        namespace, "web", 4, max_unavailable=1, node_selector=group, termination_grace_period_seconds=1
    )
    cluster.wait_deployments_ready(namespace, ["web"], timeout=60)
    assert len(cluster.list_pods(namespace, node_name=target)) == 4
    ((spare, _),) = cluster.create_spot_nodes(1, labels=group)
    return target, instance_id, spare


def tainted_cordoned_and_empty(cluster: LocalCluster, namespace: str, node_name: str, taint: str) -> bool:
    node = cluster.get_node(node_name)
    assert node is not None
    tainted = any(t["key"] == taint for t in node["spec"].get("taints", []))
    return (
        tainted and node["spec"].get("unschedulable") is True and not cluster.list_pods(namespace, node_name=node_name)
    )


def can_i(kubeconfig: Path, verb: str, resource: str, scope: str | None = None) -> bool:
    """`kubectl auth can-i` as the kubeconfig's user; `scope` is extra arguments, e.g. "-n=default"."""
    argv = [str(tools.tool("kubectl")), f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource]
    if scope:
        argv += scope.split()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def create_stack(moto: MotoServer, parameters: dict[str, str] | None = None) -> dict[str, str]:
    """infra/cloudformation/spotq.yaml deployed into moto under a fresh name; its outputs and StackName."""
    cfn = moto.client("cloudformation")
    name = f"spotq-{uuid.uuid4().hex[:8]}"
    cfn.create_stack(
        StackName=name,
        TemplateBody=CFN_TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    outputs["StackName"] = name
    return outputs
