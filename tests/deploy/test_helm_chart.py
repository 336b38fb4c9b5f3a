"""helm/spotq rendered by the real helm: lint, both modes, RBAC, settings pass-through, values schema, README table."""

from __future__ import annotations

import enum
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from spotq.settings import Settings

from .support import (
    CHART,
    JSON,
    QUEUE_URL,
    Helm,
    container,
    env_field_refs,
    env_values,
    of_kind,
    one,
    sets,
)

QUEUE = ["--set", f"queue.url={QUEUE_URL}"]
IMDS = ["--set", "mode=imds", "--set", "nodeSelector.lifecycle=Ec2Spot"]
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "helm.sh/chart",
}


def _pod_spec(workload: JSON) -> JSON:
    spec: JSON = workload["spec"]["template"]["spec"]
    return spec


def _walk(value: Any) -> list[Any]:
    """Every scalar inside a rendered object."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _walk(v)] + list(value)
    if isinstance(value, list):
        return [x for v in value for x in _walk(v)]
    return [value]


# -- lint ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], QUEUE, IMDS, [*QUEUE, "--set", "replicas=3", "--set", "drain.forceDeleteBeforeDeadlineSeconds=30"]],
    ids=["defaults", "queue", "imds", "queue-force-delete"],
)
def test_chart_passes_strict_lint(helm: Helm, args: list[str]) -> None:
    result = helm.run("lint", "--strict", str(CHART), *args)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_queue_mode_without_a_queue_url_is_refused_with_the_fix(helm: Helm) -> None:
    result = helm.run("template", "spotq", str(CHART), check=False)
    assert result.returncode != 0
    assert "queue.url is required in queue mode" in result.stderr


# -- queue mode ---------------------------------------------------------------------------------------------------


def test_queue_mode_renders_a_deployment_running_spotq_run_and_no_daemonset(helm: Helm) -> None:
    objects = helm.template(*QUEUE)
    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "FlowSchema",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == "kube-system"
    assert deployment["spec"]["replicas"] == 1
    spotq = container(deployment)
    assert spotq["args"] == ["run"]
    assert spotq["image"] == "spotq:0.1.0"
    env = env_values(deployment)
    assert env["SPOTQ_QUEUE__URL"] == QUEUE_URL
    assert env["SPOTQ_AWS__REGION"] == "eu-west-1"  # taken from the queue URL
    assert env["SPOTQ_SERVER__PORT"] == "8080"
    assert env_field_refs(deployment) == {
        "SPOTQ_KUBE__POD_NAME": "metadata.name",
        "SPOTQ_KUBE__POD_NAMESPACE": "metadata.namespace",
    }
    assert "NODE_NAME" not in env_field_refs(deployment)


def test_every_object_carries_the_standard_labels_and_selectors_match_the_pods(helm: Helm) -> None:
    objects = helm.template(*QUEUE, "--set", "replicas=2")
    for obj in objects:
        assert set(obj["metadata"]["labels"]) >= STANDARD_LABELS, obj["kind"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "spotq"
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert one(objects, "Service")["spec"]["selector"] == selector
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector


def test_pods_are_hardened_and_probed_on_healthz_and_readyz(helm: Helm) -> None:
    for objects in (helm.template(*QUEUE), helm.template(*IMDS)):
        (workload,) = of_kind(objects, "Deployment") + of_kind(objects, "DaemonSet")
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        spotq = container(workload)
        security = spotq["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security.get("privileged", False) is False
        assert spotq["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
        assert spotq["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
        assert spotq["ports"] == [{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}]
        assert spotq["resources"]["requests"] and spotq["resources"]["limits"]["memory"]
        assert {"name": "tmp", "mountPath": "/tmp"} in spotq["volumeMounts"]
        assert pod.get("hostNetwork", False) is False


def test_termination_grace_outlasts_the_stop_grace_so_messages_are_handed_back(helm: Helm) -> None:
    default = one(helm.template(*QUEUE), "Deployment")
    assert _pod_spec(default)["terminationGracePeriodSeconds"] == 35
    assert env_values(default)["SPOTQ_QUEUE__STOP_GRACE_SECONDS"] == "20"

    longer = one(helm.template(*QUEUE, "--set", "queue.stopGraceSeconds=60"), "Deployment")
    assert _pod_spec(longer)["terminationGracePeriodSeconds"] == 75

    given = one(helm.template(*QUEUE, "--set", "terminationGracePeriodSeconds=90"), "Deployment")
    assert _pod_spec(given)["terminationGracePeriodSeconds"] == 90

    too_short = helm.run(
        "template", "spotq", str(CHART), *QUEUE, "--set", "terminationGracePeriodSeconds=20", check=False
    )
    assert too_short.returncode != 0
    assert "must be longer than queue.stopGraceSeconds" in too_short.stderr


@pytest.mark.parametrize(("replicas", "expected"), [(1, None), (2, 1), (3, 1)])
def test_pod_disruption_budget_only_when_more_than_one_replica(helm: Helm, replicas: int, expected: int | None) -> None:
    objects = helm.template(*QUEUE, "--set", f"replicas={replicas}")
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert [b["spec"]["minAvailable"] for b in budgets] == ([] if expected is None else [expected])


def test_placement_and_priority_values_reach_the_pod(helm: Helm) -> None:
    values = {
        "nodeSelector.role": "system",
        "tolerations[0].key": "CriticalAddonsOnly",
        "tolerations[0].operator": "Exists",
        "priorityClassName": "system-cluster-critical",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].key": "eks.amazonaws.com/capacityType",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].operator": "In",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].values[0]": "ON_DEMAND",
    }
    pod = _pod_spec(one(helm.template(*QUEUE, *sets(values)), "Deployment"))
    assert pod["nodeSelector"] == {"role": "system"}
    assert pod["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["ON_DEMAND"]


def test_service_account_carries_the_irsa_role_annotation(helm: Helm) -> None:
    role = "arn:aws:iam::123456789012:role/spotq-Role-ABC"
    objects = helm.template(*QUEUE, "--set", f"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role}")
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    assert _pod_spec(one(objects, "Deployment"))["serviceAccountName"] == account["metadata"]["name"] == "spotq"


def test_an_existing_service_account_can_be_used_instead(helm: Helm) -> None:
    objects = helm.template(*QUEUE, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=mine")
    assert of_kind(objects, "ServiceAccount") == []
    assert _pod_spec(one(objects, "Deployment"))["serviceAccountName"] == "mine"
    assert one(objects, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "mine", "namespace": "kube-system"}
    ]


# -- IMDS mode ----------------------------------------------------------------------------------------------------


def test_imds_mode_renders_a_daemonset_running_spotq_imds_on_the_selected_nodes(helm: Helm) -> None:
    objects = helm.template(*IMDS, "--set", "replicas=3")
    assert of_kind(objects, "Deployment") == []
    assert of_kind(objects, "PodDisruptionBudget") == []
    daemonset = one(objects, "DaemonSet")
    assert daemonset["metadata"]["labels"]["app.kubernetes.io/component"] == "imds-monitor"
    assert container(daemonset)["args"] == ["imds"]
    assert env_field_refs(daemonset)["NODE_NAME"] == "spec.nodeName"
    assert "SPOTQ_QUEUE__URL" not in env_values(daemonset)
    pod = _pod_spec(daemonset)
    assert pod["nodeSelector"] == {"lifecycle": "Ec2Spot"}
    # It must keep running on nodes that spotq (or anyone) has tainted.
    assert {"operator": "Exists"} in pod["tolerations"]


def test_imds_mode_can_use_the_host_network_for_imds_hop_limit_one(helm: Helm) -> None:
    pod = _pod_spec(one(helm.template(*IMDS, "--set", "daemonset.hostNetwork=true"), "DaemonSet"))
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_imds_settings_pass_through_without_a_chart_change(helm: Helm) -> None:
    values = {"imds.pollIntervalSeconds": "2", "imds.tokenTtlSeconds": "21600"}
    daemonset = one(helm.template(*IMDS, *sets(values)), "DaemonSet")
    env = env_values(daemonset)
    assert env["SPOTQ_IMDS__POLL_INTERVAL_SECONDS"] == "2"
    assert env["SPOTQ_IMDS__TOKEN_TTL_SECONDS"] == "21600"


# -- RBAC ---------------------------------------------------------------------------------------------------------


def _rules(objects: list[JSON]) -> dict[str, list[str]]:
    """resource (with its API group, if any) → verbs."""
    rules = one(objects, "ClusterRole")["rules"]
    granted: dict[str, list[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = f"{group}/{resource}" if group else resource
                assert key not in granted, f"{key} granted twice"
                granted[key] = sorted(rule["verbs"])
    return granted


@pytest.mark.parametrize("mode", [QUEUE, IMDS], ids=["queue", "imds"])
def test_cluster_role_grants_exactly_what_spotq_calls(helm: Helm, mode: list[str]) -> None:
    objects = helm.template(*mode)
    assert _rules(objects) == {
        "nodes": ["get", "list", "patch", "watch"],
        "pods": ["delete", "list", "watch"],  # drain.completeAdmittedEvictions, on by default
        "pods/eviction": ["create"],
        "events": ["create"],
        "policy/poddisruptionbudgets": ["list", "watch"],
    }
    scalars = _walk(one(objects, "ClusterRole")["rules"])
    assert "*" not in scalars and "secrets" not in scalars
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spotq", "namespace": "kube-system"}]


def test_force_delete_option_adds_pod_delete_and_sets_the_setting(helm: Helm) -> None:
    off = ("--set", "drain.completeAdmittedEvictions=false")
    objects = helm.template(*QUEUE, *off, "--set", "drain.forceDeleteBeforeDeadlineSeconds=30")
    assert _rules(objects)["pods"] == ["delete", "list", "watch"]
    assert env_values(one(objects, "Deployment"))["SPOTQ_DRAIN__FORCE_DELETE_BEFORE_DEADLINE_SECONDS"] == "30"


def test_a_flow_schema_puts_the_service_account_in_its_own_priority_level(helm: Helm) -> None:
    for mode in (QUEUE, IMDS):
        schema = one(helm.template(*mode), "FlowSchema")
        assert schema["apiVersion"] == "flowcontrol.apiserver.k8s.io/v1"
        assert schema["spec"]["priorityLevelConfiguration"] == {"name": "workload-high"}
        assert schema["spec"]["matchingPrecedence"] < 9000  # ahead of the default service-accounts schema
        (rule,) = schema["spec"]["rules"]
        assert rule["subjects"] == [
            {"kind": "ServiceAccount", "serviceAccount": {"name": "spotq", "namespace": "kube-system"}}
        ]
    assert of_kind(helm.template(*QUEUE, "--set", "flowSchema.create=false"), "FlowSchema") == []
    other = one(helm.template(*QUEUE, "--set", "flowSchema.priorityLevel=spotq"), "FlowSchema")
    assert other["spec"]["priorityLevelConfiguration"] == {"name": "spotq"}


def test_pods_are_never_deleted_with_both_deleting_options_off(helm: Helm) -> None:
    objects = helm.template(*QUEUE, "--set", "drain.completeAdmittedEvictions=false")
    assert _rules(objects)["pods"] == ["list", "watch"]
    assert env_values(one(objects, "Deployment"))["SPOTQ_DRAIN__COMPLETE_ADMITTED_EVICTIONS"] == "false"


def test_volume_attachments_are_readable_only_when_hooks_wait_for_them(helm: Helm) -> None:
    assert "storage.k8s.io/volumeattachments" not in _rules(helm.template(*QUEUE))
    objects = helm.template(*QUEUE, "--set", "drain.waitForVolumeDetach=true")
    assert _rules(objects)["storage.k8s.io/volumeattachments"] == ["list", "watch"]
    assert env_values(one(objects, "Deployment"))["SPOTQ_DRAIN__WAIT_FOR_VOLUME_DETACH"] == "true"


def test_the_periodic_audit_gets_the_apps_lists_only_when_it_runs(helm: Helm) -> None:
    apps = {f"apps/{r}" for r in ("deployments", "statefulsets", "replicasets", "daemonsets")}
    assert not apps & set(_rules(helm.template(*QUEUE)))
    objects = helm.template(*QUEUE, "--set", "audit.intervalSeconds=900", "--set", "audit.namespaces=shop")
    assert {key: verbs for key, verbs in _rules(objects).items() if key in apps} == {key: ["list"] for key in apps}
    env = env_values(one(objects, "Deployment"))
    assert env["SPOTQ_AUDIT__INTERVAL_SECONDS"] == "900" and env["SPOTQ_AUDIT__NAMESPACES"] == "shop"
    assert not apps & set(_rules(helm.template(*IMDS, "--set", "audit.intervalSeconds=900")))  # queue mode only


def test_rbac_can_be_left_to_the_operator(helm: Helm) -> None:
    kinds = {o["kind"] for o in helm.template(*QUEUE, "--set", "rbac.create=false")}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}


# -- settings -----------------------------------------------------------------------------------------------------

# Set by the chart: the pod's identity from the downward API, and in-cluster config instead of a kubeconfig.
CHART_OWNED = {"SPOTQ_KUBE__POD_NAME", "SPOTQ_KUBE__POD_NAMESPACE", "SPOTQ_KUBE__KUBECONFIG", "SPOTQ_KUBE__CONTEXT"}
CHART_OWNED |= {"SPOTQ_WEBHOOK__URL_FILE"}  # from webhook.urlSecret, mounted


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _sample_settings() -> dict[str, dict[str, Any]]:
    """A value for every spotq setting: its default, or a sample where the default is empty."""
    samples = {"url": QUEUE_URL, "endpoint_url": "http://127.0.0.1:5000", "region": "eu-west-1"}
    samples |= {"proxy": "http://proxy.example:3128", "headers": '{"X-Team": "ops"}'}  # webhook
    groups: dict[str, dict[str, Any]] = {}
    for group_name, group_field in Settings.model_fields.items():
        model = group_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            if f"SPOTQ_{group_name}__{name}".upper() in CHART_OWNED:
                continue
            value = field.default
            if isinstance(value, enum.Enum):
                value = value.value
            if value in (None, ""):
                value = samples.get(name, "x")
            groups.setdefault(group_name, {})[_camel(name)] = value
    return groups


def test_every_spotq_setting_can_be_set_through_its_group_and_spotq_accepts_the_rendering(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = _sample_settings()
    values = tmp_path / "settings.yaml"
    values.write_text(yaml.safe_dump(groups))
    env = env_values(one(helm.template("-f", str(values)), "Deployment"))

    expected = {
        f"SPOTQ_{g}__{re.sub(r'(?<!^)(?=[A-Z])', '_', n)}".upper() for g, names in groups.items() for n in names
    }
    assert expected <= set(env)
    for name in [n for n in os.environ if n.startswith("SPOTQ_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("SPOTQ_"):
            monkeypatch.setenv(name, value)
    loaded = Settings().model_dump(mode="json")
    for group, names in groups.items():
        for camel, value in names.items():
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()
            assert loaded[group][snake] == value, f"{group}.{camel}"


def test_large_numbers_render_as_integers_not_exponents(helm: Helm) -> None:
    env = env_values(one(helm.template(*QUEUE, "--set", "queue.visibilityTimeoutSeconds=43200"), "Deployment"))
    assert env["SPOTQ_QUEUE__VISIBILITY_TIMEOUT_SECONDS"] == "43200"
    # Numbers from values files and --set-json are floats inside helm; 1209600 must not become 1.2096e+06.
    args = ["--set-json", f"queue={json.dumps({'url': QUEUE_URL, 'maxInFlightMessages': 1209600})}"]
    assert env_values(one(helm.template(*args), "Deployment"))["SPOTQ_QUEUE__MAX_IN_FLIGHT_MESSAGES"] == "1209600"


def test_explicit_region_and_extra_environment_are_rendered(helm: Helm) -> None:
    values = {
        "aws.region": "us-west-2",
        "env.AWS_STS_REGIONAL_ENDPOINTS": "regional",
        "extraEnv[0].name": "FROM_SECRET",
        "extraEnv[0].valueFrom.secretKeyRef.name": "s",
        "extraEnv[0].valueFrom.secretKeyRef.key": "k",
    }
    deployment = one(helm.template(*QUEUE, *sets(values)), "Deployment")
    env = env_values(deployment)
    assert env["SPOTQ_AWS__REGION"] == "us-west-2"
    assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
    names = [e["name"] for e in container(deployment)["env"]]
    assert names.count("SPOTQ_AWS__REGION") == 1
    assert names[-1] == "FROM_SECRET"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "mode=queues"], "mode"),
        (["--set", "replica=2"], "replica"),
        (["--set", "kube.podName=x"], "podName"),
        (["--set", "drain.force_delete_before_deadline_seconds=1"], "force_delete_before_deadline_seconds"),
        (["--set", "log.format=xml"], "format"),
        (["--set", "aws.region=Frankfurt"], "region"),
    ],
    ids=["unknown-mode", "misspelt-value", "chart-owned-setting", "snake-case-key", "bad-log-format", "bad-region"],
)
def test_values_schema_refuses_mistakes(helm: Helm, args: list[str], message: str) -> None:
    result = helm.run("template", "spotq", str(CHART), *QUEUE, *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


# -- monitoring ---------------------------------------------------------------------------------------------------


def test_service_monitor_and_pod_monitor_are_optional(helm: Helm) -> None:
    kinds = {o["kind"] for o in helm.template(*QUEUE)}
    assert not kinds & {"ServiceMonitor", "PodMonitor"}
    objects = helm.template(*QUEUE, "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true")
    service_monitor = one(objects, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "http-metrics"
    assert service_monitor["spec"]["selector"]["matchLabels"] == one(objects, "Service")["spec"]["selector"]
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}
    ]


# -- documentation ------------------------------------------------------------------------------------------------

# Values documented as one row (Kubernetes objects passed through as they are).
WHOLE = {
    "resources",
    "nodeSelector",
    "affinity",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "podAnnotations",
    "podLabels",
    "env",
    "imds",
    "policy",
}


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in WHOLE:
            missing += [f"{key}.{sub}" for sub in value if f"`{key}.{sub}`" not in readme]
        elif f"`{key}`" not in readme:
            missing.append(key)
    assert missing == []


# -- replicas, placement, priority --------------------------------------------------------------------------------

SPOT_LABELS = {
    "eks.amazonaws.com/capacityType": "SPOT",  # EKS managed node groups
    "karpenter.sh/capacity-type": "spot",  # Karpenter
    "lifecycle": "Ec2Spot",  # eksctl and the AWS Node Termination Handler docs
}
SELECTOR = {"app.kubernetes.io/name": "spotq", "app.kubernetes.io/instance": "spotq"}


def _avoid_spot_term() -> JSON:
    return {
        "weight": 100,
        "preference": {
            "matchExpressions": [
                {"key": key, "operator": "NotIn", "values": [value]} for key, value in SPOT_LABELS.items()
            ]
        },
    }


def test_queue_mode_prefers_nodes_without_any_spot_capacity_label(helm: Helm) -> None:
    pod = _pod_spec(one(helm.template(*QUEUE), "Deployment"))
    node_affinity = pod["affinity"]["nodeAffinity"]
    assert node_affinity == {"preferredDuringSchedulingIgnoredDuringExecution": [_avoid_spot_term()]}


def test_spot_avoidance_can_be_turned_off_and_keeps_the_operators_node_affinity(helm: Helm) -> None:
    off = _pod_spec(one(helm.template(*QUEUE, "--set", "placement.avoidSpot=false"), "Deployment"))
    assert "affinity" not in off
    required = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "role", "operator": "In", "values": ["system"]}]}]}
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    pod = _pod_spec(one(helm.template(*QUEUE, "--set-json", f"affinity={json.dumps(mine)}"), "Deployment"))
    assert pod["affinity"]["nodeAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": required,
        "preferredDuringSchedulingIgnoredDuringExecution": [_avoid_spot_term()],
    }


def test_one_replica_has_no_spreading_rules(helm: Helm) -> None:
    pod = _pod_spec(one(helm.template(*QUEUE), "Deployment"))
    assert "podAntiAffinity" not in pod["affinity"]
    assert "topologySpreadConstraints" not in pod


def test_replicas_spread_over_hostnames_and_zones_by_default(helm: Helm) -> None:
    objects = helm.template(*QUEUE, "--set", "replicas=2")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = _pod_spec(deployment)
    assert pod["affinity"]["podAntiAffinity"] == {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": SELECTOR},
                },
            }
        ]
    }
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": SELECTOR},
        }
    ]
    assert pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [_avoid_spot_term()]
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_replica_spreading_can_be_replaced_or_turned_off(helm: Helm) -> None:
    two = [*QUEUE, "--set", "replicas=2"]
    off = _pod_spec(one(helm.template(*two, "--set", "placement.spreadReplicas=false"), "Deployment"))
    assert "podAntiAffinity" not in off["affinity"] and "topologySpreadConstraints" not in off

    mine = [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}]
    replaced = _pod_spec(
        one(helm.template(*two, "--set-json", f"topologySpreadConstraints={json.dumps(mine)}"), "Deployment")
    )
    assert replaced["topologySpreadConstraints"] == mine

    anti = {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname"}]}
    given = json.dumps({"podAntiAffinity": anti})
    own = _pod_spec(one(helm.template(*two, "--set-json", f"affinity={given}"), "Deployment"))
    assert own["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {"topologyKey": "kubernetes.io/hostname"}
    ]
    assert len(own["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]) == 1


def test_imds_daemonset_never_runs_on_fargate_and_keeps_its_node_selector(helm: Helm) -> None:
    pod = _pod_spec(one(helm.template(*IMDS), "DaemonSet"))
    assert pod["nodeSelector"] == {"lifecycle": "Ec2Spot"}
    not_fargate = {"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["fargate"]}
    assert pod["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [not_fargate]}]
            }
        }
    }
    assert "topologySpreadConstraints" not in pod
    # Every term of the operator's own required node affinity gets the exclusion (terms are ORed).
    terms = [
        {"matchExpressions": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]},
        {"matchExpressions": [{"key": "lifecycle", "operator": "In", "values": ["Ec2Spot"]}]},
    ]
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    merged = _pod_spec(one(helm.template(*IMDS, "--set-json", f"affinity={json.dumps(mine)}"), "DaemonSet"))
    got = merged["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert got == [{"matchExpressions": [*t["matchExpressions"], not_fargate]} for t in terms]
    off = _pod_spec(one(helm.template(*IMDS, "--set", "daemonset.excludeFargate=false"), "DaemonSet"))
    assert "affinity" not in off


@pytest.mark.parametrize(
    ("args", "kind", "expected"),
    [
        (QUEUE, "Deployment", "system-cluster-critical"),
        (IMDS, "DaemonSet", "system-node-critical"),
        ([*QUEUE, "--set", "priorityClassName=spotq-high"], "Deployment", "spotq-high"),
        ([*IMDS, "--set", "priorityClassName=spotq-high"], "DaemonSet", "spotq-high"),
        ([*QUEUE, "--set", "priorityClassName="], "Deployment", None),
        ([*IMDS, "--set", "priorityClassName="], "DaemonSet", None),
    ],
    ids=["queue-default", "imds-default", "queue-own", "imds-own", "queue-none", "imds-none"],
)
def test_priority_class_defaults_by_mode_and_empty_disables(
    helm: Helm, args: list[str], kind: str, expected: str | None
) -> None:
    for namespace in ("kube-system", "spotq"):
        pod = _pod_spec(one(helm.template(*args, namespace=namespace), kind))
        assert pod.get("priorityClassName") == expected, namespace


def _role_rules(objects: list[JSON]) -> list[JSON]:
    role = one(objects, "Role")
    binding = one(objects, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "spotq-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spotq", "namespace": "spotq-system"}]
    rules: list[JSON] = role["rules"]
    return rules


def test_queue_mode_may_coordinate_replicas_through_leases_in_its_namespace_only(helm: Helm) -> None:
    objects = helm.template(*QUEUE, namespace="spotq-system")
    assert _role_rules(objects) == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update", "delete"],
        }
    ]
    assert "leases" not in _walk(one(objects, "ClusterRole")["rules"])
    imds = helm.template(*IMDS, namespace="spotq-system")
    assert of_kind(imds, "Role") == of_kind(imds, "RoleBinding") == []
    assert of_kind(helm.template(*QUEUE, "--set", "rbac.create=false"), "Role") == []


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "placement.avoidSpot=maybe"],
        ["--set", "placement.spreadreplicas=true"],
        ["--set", "daemonset.excludeFargate=no"],
    ],
    ids=["avoid-spot-not-boolean", "misspelt-placement", "exclude-fargate-not-boolean"],
)
def test_values_schema_refuses_bad_placement_values(helm: Helm, args: list[str]) -> None:
    result = helm.run("template", "spotq", str(CHART), *QUEUE, *args, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


# -- webhook notifications ----------------------------------------------------------------------------------------

WEBHOOK_SECRET = ["--set", "webhook.urlSecret.name=spotq-webhook", "--set", "webhook.urlSecret.key=slack-url"]


@pytest.mark.parametrize(("args", "kind"), [(QUEUE, "Deployment"), (IMDS, "DaemonSet")], ids=["queue", "imds"])
def test_webhook_url_comes_from_an_existing_secret_mounted_as_a_file(helm: Helm, args: list[str], kind: str) -> None:
    plain = one(helm.template(*args), kind)
    assert not [name for name in env_values(plain) if name.startswith("SPOTQ_WEBHOOK__")]
    assert "webhook-url" not in {v["name"] for v in _pod_spec(plain)["volumes"]}

    workload = one(helm.template(*args, *WEBHOOK_SECRET), kind)
    assert env_values(workload)["SPOTQ_WEBHOOK__URL_FILE"] == "/etc/spotq/webhook/url"
    (volume,) = [v for v in _pod_spec(workload)["volumes"] if v["name"] == "webhook-url"]
    assert volume["secret"] == {
        "secretName": "spotq-webhook",
        "defaultMode": 0o440,  # the pod's fsGroup can read it, nobody else
        "items": [{"key": "slack-url", "path": "url"}],
    }
    (mount,) = [m for m in container(workload)["volumeMounts"] if m["name"] == "webhook-url"]
    assert mount == {"name": "webhook-url", "mountPath": "/etc/spotq/webhook", "readOnly": True}


def test_webhook_values_render_settings_spotq_accepts(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spotq.notify import config as webhook_config

    values = tmp_path / "webhook.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "webhook": {
                    "urlSecret": {"name": "spotq-webhook"},
                    "headers": {"X-Team": "ops", "X-Env": "prod"},
                    "proxy": "http://proxy.internal:3128",
                    "template": '{"node": "$node", "why": "$reason"}',
                    "clusterName": "prod-eu",
                    "reasons": "DrainTimedOut,DrainBlocked",
                    "retries": 5,
                }
            }
        )
    )
    deployment = one(helm.template(*QUEUE, "-f", str(values)), "Deployment")
    env = env_values(deployment)
    assert json.loads(env["SPOTQ_WEBHOOK__HEADERS"]) == {"X-Team": "ops", "X-Env": "prod"}
    assert (env["SPOTQ_WEBHOOK__PROXY"], env["SPOTQ_WEBHOOK__RETRIES"]) == ("http://proxy.internal:3128", "5")
    assert "SPOTQ_WEBHOOK__URL_SECRET" not in env  # the chart's own value, not a setting
    (volume,) = [v for v in _pod_spec(deployment)["volumes"] if v["name"] == "webhook-url"]
    assert volume["secret"]["items"] == [{"key": "url", "path": "url"}]  # the default key

    # spotq takes exactly this environment (the URL read from where the chart mounts the Secret).
    for name in [n for n in os.environ if n.startswith("SPOTQ_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("SPOTQ_"):
            monkeypatch.setenv(name, value)
    mounted = {Path("/etc/spotq/webhook/url"): "https://hooks.example.com/services/T/B/s3cr3t\n"}
    loaded = webhook_config.load(Settings().webhook, read=lambda path: mounted[path])
    assert loaded is not None and loaded.host == "hooks.example.com"
    assert loaded.headers == {"X-Team": "ops", "X-Env": "prod"} and loaded.proxy_host == "proxy.internal"
    assert loaded.reasons == frozenset({"DrainTimedOut", "DrainBlocked"}) and loaded.cluster == "prod-eu"
    assert loaded.template_name == "custom" and loaded.retries == 5


def test_chart_with_a_webhook_passes_strict_lint(helm: Helm) -> None:
    for args in ([*QUEUE, *WEBHOOK_SECRET, "--set", "webhook.template=teams"], [*IMDS, *WEBHOOK_SECRET]):
        result = helm.run("lint", "--strict", str(CHART), *args)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "webhook.urlFile=/x"], "urlFile"),
        (["--set", "webhook.proxy=proxy:3128"], "proxy"),
        (["--set", "webhook.urlSecret.nam=x"], "nam"),
        (["--set", "webhook.urlSecret.name=Bad_Name"], "name"),
        (["--set-json", 'webhook.headers={"X-A": 1}'], "headers"),
        ([*WEBHOOK_SECRET, "--set", "webhook.url=https://hooks.example.com/x"], "not both"),
    ],
    ids=[
        "chart-owned-url-file",
        "proxy-without-scheme",
        "misspelt-secret-value",
        "bad-secret-name",
        "header-not-string",
        "url-and-secret",
    ],
)
def test_values_schema_refuses_webhook_mistakes(helm: Helm, args: list[str], message: str) -> None:
    result = helm.run("template", "spotq", str(CHART), *QUEUE, *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
