"""Every setting spotq reads, in groups. Environment: `SPOTQ_<GROUP>__<NAME>`, e.g. `SPOTQ_QUEUE__URL`.

Each field says its unit, default and why; `spotq run --help` prints this table.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ActionLevel(enum.StrEnum):
    """How far spotq goes for a kind of notice. Each level includes the ones before it."""

    NONE = "none"
    EVENT = "event"
    TAINT = "taint"
    CORDON = "cordon"
    DRAIN = "drain"

    @property
    def rank(self) -> int:
        return list(ActionLevel).index(self)


class _Group(BaseModel):
    # A misspelt SPOTQ_<GROUP>__<NAME> is an error naming it, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class QueueSettings(_Group):
    url: str | None = Field(None, description="SQS queue URL to consume (required by `spotq run`).")
    wait_seconds: int = Field(20, ge=0, le=20, description="Long-poll wait per receive, s; 20 is the SQS maximum.")
    visibility_timeout_seconds: int = Field(
        60, ge=10, le=43200, description="Visibility per receive, s; spotq extends it while it works."
    )
    max_in_flight_messages: int = Field(
        2000, ge=1, description="Messages held at once; SQS buffers the rest (receive only what fits)."
    )
    receivers: int = Field(
        4, ge=1, le=64, description="Concurrent ReceiveMessage loops; each fetches up to 10 messages."
    )
    retry_delay_seconds: int = Field(
        5, ge=0, le=900, description="Visibility after a transient failure, s: how soon the message comes back."
    )
    stop_grace_seconds: float = Field(
        20.0, ge=0, description="On SIGTERM, how long in-flight work may finish before its messages are released, s."
    )
    unknown_instance_fate: Literal["delete", "release"] = Field(
        "delete",
        description="Message for an instance that is no node of this cluster (or out of scope): delete it, or "
        "release it for another consumer of a shared queue (a DLQ then ends its circulation).",
    )


class AwsSettings(_Group):
    region: str | None = Field(
        None,
        description="AWS region of the queue and instances; unset: AWS_REGION / AWS_DEFAULT_REGION (as the AWS "
        "SDK finds it, e.g. from the EKS pod identity webhook), else the region in the queue URL.",
    )
    endpoint_url: str | None = Field(None, description="Endpoint override (moto, LocalStack); unset for AWS.")


class KubeSettings(_Group):
    kubeconfig: str | None = Field(
        None, description="Path to a kubeconfig; unset: in-cluster config, else $KUBECONFIG / ~/.kube/config."
    )
    context: str | None = Field(None, description="kubeconfig context; unset: the current one.")
    qps: float = Field(
        200.0, gt=0, description="Client-side request rate to the API server, req/s (client-go's 5 lost taints)."
    )
    burst: int = Field(400, ge=1, description="Requests allowed above qps in a burst.")
    max_in_flight: int = Field(
        128,
        ge=1,
        description="Requests (not watches) in flight at once, one connection each; more wait in spotq, most urgent "
        "first, rather than in the API server's fairness queues, which turn the excess away (429) in a mass "
        "interruption.",
    )
    warm_connections: int = Field(
        128,
        ge=0,
        description="Queue mode: connections to the API server kept open for the next wave (at most max_in_flight), "
        "so its first taints do not wait for TLS handshakes: a GET /version on each every 50 s while spotq is "
        "otherwise quiet; 0: none.",
    )
    request_timeout_seconds: float = Field(15.0, gt=0, description="Timeout for one non-watch API request, s.")
    node_selector: str = Field(
        "", description="Label selector of nodes spotq may act on, e.g. 'lifecycle=Ec2Spot'; empty: all nodes."
    )
    instance_tag: str = Field(
        "",
        description="Act only on instances carrying this EC2 tag, 'key' or 'key=value' (one DescribeInstances "
        "per batch of unknown instances); empty: no tag check.",
    )
    taint_prefix: str = Field("spotq.io", description="Prefix of the taint, label and annotation keys spotq owns.")
    pod_name: str | None = Field(None, description="spotq's own pod (downward API); never evicted.")
    pod_namespace: str | None = Field(None, description="Namespace of spotq's own pod (downward API).")
    replica_lease_seconds: float = Field(
        10.0,
        ge=0,
        description="Queue mode in a pod (SPOTQ_KUBE__POD_NAMESPACE set): each replica holds a Lease in that "
        "namespace, renewed every fifth of this, s; a node is drained by one replica at a time, and the drains of "
        "a replica whose Lease is not renewed this long are taken over by another. 0: no coordination (one "
        "replica).",
    )


class PolicySettings(_Group):
    spot_interruption: ActionLevel = Field(ActionLevel.DRAIN, description="Spot interruption warning.")
    capacity_reservation_interruption: ActionLevel = Field(
        ActionLevel.DRAIN,
        description="EC2 Capacity Reservation instance interruption warning (interruptible reservations, Capacity "
        "Blocks).",
    )
    rebalance_recommendation: ActionLevel = Field(
        ActionLevel.TAINT, description="Rebalance recommendation: a PreferNoSchedule taint avoids churn."
    )
    state_change: ActionLevel = Field(
        ActionLevel.DRAIN, description="State change to stopping/stopped/shutting-down/terminated."
    )
    scheduled_change: ActionLevel = Field(ActionLevel.DRAIN, description="AWS Health EC2 scheduled change.")
    lifecycle_terminate: ActionLevel = Field(ActionLevel.DRAIN, description="Auto Scaling terminate hook.")
    rebalance_expiry_seconds: float = Field(
        3600.0,
        ge=0,
        description="Release a rebalance recommendation's marks (taint, or cordon at that level) this long after it "
        "when no other notice followed for the node, s; 0: keep them.",
    )
    complete_lifecycle_launch: bool = Field(
        False, description="Complete launch hooks (CONTINUE) once the new node is Ready."
    )
    launch_wait_seconds: float = Field(
        3300.0,
        gt=0,
        description="How long a launch hook's message is held (visibility extended) while its instance joins and "
        "goes Ready, s, counted from the event's time; then the hook is left to its own timeout (default 3600 s).",
    )
    lifecycle_groups: str = Field(
        "",
        description="Auto Scaling groups whose lifecycle hooks spotq may complete, comma-separated names or "
        "prefixes ending in '*'; empty: any group. Hooks of instances that are no node of this cluster (or out of "
        "scope) are never completed.",
    )
    dry_run: bool = Field(
        False, description="Log and count what would be done; change nothing, complete no hook, delete nothing."
    )


class DrainSettings(_Group):
    max_concurrent_nodes: int = Field(
        250,
        ge=1,
        description="Nodes drained at once (earliest deadline first); the rest wait their turn. Each holds a pod "
        "watch (a connection, ~130 KiB of RSS, and a watcher the API server filters every pod change for); with "
        "shared_grace_watch a drain gives its place up once only its pods' grace is left.",
    )
    max_concurrent_evictions: int = Field(1000, ge=1, description="Eviction requests in flight across all nodes.")
    evictions_in_flight_per_budget: int = Field(
        0,
        ge=0,
        description="Eviction requests in flight under one PodDisruptionBudget; 0: automatic, about "
        "evictions_in_flight_target across the budgets with pods waiting, 1 to 4 each. Each accepted eviction rewrites "
        "the budget's status; concurrent ones conflict inside the API server, which retries each loser after 500 ms "
        "(bench/results/order-evaluation).",
    )
    evictions_in_flight_target: int = Field(
        20,
        ge=1,
        description="With evictions_in_flight_per_budget 0: evictions to keep in flight across the budgets with pods "
        "waiting (20 evicted about as many pods in time as 1 per budget at 200x20 on a 2-core local control plane, 40 "
        "fewer; a larger API server may take more).",
    )
    timeout_seconds: float = Field(
        300.0, gt=0, description="Drain limit, s, for notices without their own deadline (rebalance, hooks)."
    )
    safety_margin_seconds: float = Field(
        10.0, ge=0, description="Finish this many s before the notice's deadline so pods stop before the node."
    )
    min_window_seconds: float = Field(
        15.0,
        ge=0,
        description="Drain for at least this long even when the notice's deadline has passed (a late message): "
        "the node may still run, and evicting from a dead node only speeds up replacement.",
    )
    delete_emptydir_data: bool = Field(True, description="Evict pods using emptyDir (their data is lost).")
    evict_unmanaged_pods: bool = Field(True, description="Evict pods without a controller (not recreated).")
    force_delete_before_deadline_seconds: float = Field(
        0.0,
        ge=0,
        description="If >0, this many s before the deadline delete PDB-blocked pods with their remaining grace; "
        "0: never (PDBs always win).",
    )
    complete_admitted_evictions: bool = Field(
        True,
        description="Delete a pod whose eviction its PodDisruptionBudget admitted but the API server never carried "
        "out (listed in the budget's status.disruptedPods, not terminating: a request cut off mid-way), instead of "
        "waiting the two minutes the budget counts it as disrupted and allows nothing else. Needs delete on pods "
        "(the chart grants it while this is on).",
    )
    settle_seconds: float = Field(
        5.0,
        ge=0,
        description="A drain is complete only this long after it started with nothing left on the node, s: pods "
        "bound to the node just before its taint (or re-created onto it) are seen and evicted too.",
    )
    shared_grace_watch: bool = Field(
        False,
        description="Once every eviction on a node is accepted (and settle_seconds have passed), its drain gives "
        "its slot (max_concurrent_nodes) to the next node and waits out its pods' grace on one pod watch shared "
        "by all such drains, instead of its own: while any drain waits, that watch streams every pod change in "
        "the cluster to spotq (CPU). Off: a drain holds its slot and its node's watch until its pods are gone. "
        "Opt-in: on the 2-core benchmark machine it drained less (bench/results/order-evaluation).",
    )
    evict_own_pod: bool = Field(
        True,
        description="When spotq's own node is drained (its pod known from SPOTQ_KUBE__POD_NAME), evict spotq's own "
        "pod last, so its replacement starts elsewhere now instead of after the node is gone; its messages are "
        "handed back and its drains resumed from the nodes' records.",
    )
    critical_pods_reserve_seconds: float = Field(
        20.0,
        ge=0,
        description="System-critical pods (system-cluster-critical / system-node-critical) are evicted after every "
        "other pod has gone, or when this many s are left before the deadline, whichever is first, s (as the "
        "kubelet's graceful shutdown and Karpenter order them).",
    )
    pod_events: bool = Field(
        True,
        description="Record a Kubernetes Event (reason EvictedBySpotq) on each pod a drain evicts, naming the node, "
        "the notice and the deadline, so `kubectl describe pod` says why it moved; at most one per pod and drain, "
        "sent after every other request.",
    )
    out_of_service_taint: bool = Field(
        False,
        description="After a complete drain for a notice that ends the instance (a Spot or capacity reservation "
        "terminate warning, a state change to shutting-down/terminated, a terminate hook), taint the node "
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute so its volumes detach without waiting for the "
        "attach/detach timeout (what is left on the node, DaemonSet pods, is deleted). Not for stop, hibernate, "
        "rebalance or scheduled changes: those nodes may stay or return.",
    )
    lifecycle_complete_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="Wait this long after a terminate hook's drain before CompleteLifecycleAction, s (e.g. for "
        "volumes to detach or connections to close), never past the hook's deadline; 0: complete at once.",
    )
    wait_for_volume_detach: bool = Field(
        False,
        description="Before completing a terminate hook, wait until no VolumeAttachment names the node, never past "
        "the hook's deadline (needs list/watch on storage.k8s.io volumeattachments: the chart grants it with "
        "drain.waitForVolumeDetach); off: complete once drained.",
    )
    retry_initial_seconds: float = Field(0.5, gt=0, description="First back-off after a 429, s.")
    retry_max_seconds: float = Field(5.0, gt=0, description="Longest back-off between eviction attempts, s.")
    lifecycle_heartbeat_seconds: float = Field(
        60.0, gt=0, description="Interval of lifecycle heartbeats while a hooked node drains, s."
    )


class ServerSettings(_Group):
    address: str = Field("0.0.0.0", description="Listen address of /metrics, /healthz, /readyz.")
    port: int = Field(8080, ge=0, le=65535, description="Listen port; 0 picks a free one.")


class LogSettings(_Group):
    format: Literal["text", "json"] = Field("text", description="Log line format.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")


class ImdsSettings(_Group):
    """IMDS mode (`spotq imds`): one pod per Spot node polls that node's instance metadata."""

    endpoint: str = Field(
        "http://169.254.169.254", description="Base URL of the instance metadata service (IMDS mode)."
    )
    poll_interval_seconds: float = Field(
        2.0, gt=0, le=60, description="Time between polls, s; AWS advises 5 s or less (the warning gives 2 minutes)."
    )
    token_ttl_seconds: int = Field(
        21600, ge=1, le=21600, description="Lifetime asked for each IMDSv2 session token, s; renewed before it ends."
    )
    request_timeout_seconds: float = Field(
        1.0, gt=0, le=30, description="Timeout of one IMDS request, s: IMDS is on the host and answers in ms."
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed IMDS request within one poll, after a jittered back-off."
    )
    imdsv1_fallback: bool = Field(
        False,
        description="Read without a token (IMDSv1) when no IMDSv2 token can be had; off: IMDSv2 only, as AWS advises.",
    )
    watch_target_lifecycle_state: bool = Field(
        True,
        description="Also poll autoscaling/target-lifecycle-state: Terminated is a terminate notice "
        "(lifecycle_terminate policy; no hook is completed from IMDS). 404 outside Auto Scaling groups.",
    )
    watch_scheduled_maintenance: bool = Field(
        False,
        description="Also poll events/maintenance/scheduled and act on active events (scheduled_change policy).",
    )
    node_name: str | None = Field(
        None, description="The node this pod runs on; unset: $NODE_NAME (the chart sets it from the downward API)."
    )


class WebhookSettings(_Group):
    """Webhook notifications (both modes): each node Event spotq records is also posted to a webhook."""

    url: str | None = Field(
        None,
        description="URL to POST a notification to at each notice and each drain's outcome (http or https); unset "
        "(and no url_file): no notifications. Never logged; a URL that carries a token (Slack, Teams) belongs in "
        "url_file.",
    )
    url_file: str | None = Field(
        None,
        description="File holding the webhook URL, e.g. a mounted Secret key (the chart's webhook.urlSecret), read "
        "once at start; not together with url.",
    )
    headers: str = Field(
        "",
        description='Extra request headers, a JSON object of strings, e.g. \'{"Authorization": "Bearer ..."}\'; '
        "a Content-Type here replaces application/json (a type that is not JSON turns off JSON escaping).",
    )
    proxy: str | None = Field(
        None,
        description="HTTP(S) proxy for the webhook, http://[user:password@]host:port (an https webhook goes "
        "through it with CONNECT); unset: direct (HTTP_PROXY/HTTPS_PROXY are not read).",
    )
    template: str = Field(
        "generic",
        description="Body: a preset, generic (JSON with every field), slack (Slack incoming webhook) or teams "
        "(Microsoft Teams incoming webhook, an Adaptive Card), or a custom template naming $cluster, $node, "
        "$instance_id, $reason, $message, $warning, $type, $time, $title, $text ($$ for a $); values are "
        "JSON-escaped when the Content-Type is JSON.",
    )
    template_file: str | None = Field(
        None, description="File holding a custom template, read once at start; replaces template."
    )
    reasons: str = Field(
        "",
        description="Notify only for these Event reasons, comma-separated: InterruptionNotice, DrainFinished, "
        "DrainTimedOut, DrainBlocked, NoticeEnded, RebalanceExpired; empty: all.",
    )
    cluster_name: str = Field("", description="Cluster name the templates give as $cluster; empty: none.")
    queue_size: int = Field(
        1000,
        ge=1,
        description="Notifications waiting to be sent; when full, new ones are dropped (counted) so that no taint "
        "or drain ever waits for the webhook.",
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one POST, s, connecting included.")
    retries: int = Field(
        3,
        ge=0,
        le=20,
        description="Retries of a failed POST (no connection, timeout, 408, 425, 429, 5xx) after a jittered "
        "back-off doubling from 1 s (at most 30 s; Retry-After honoured up to that); other answers are not retried.",
    )
    stop_grace_seconds: float = Field(
        5.0, ge=0, description="On stop, how long waiting notifications may still be sent, s; the rest are dropped."
    )


class AuditSettings(_Group):
    """The periodic audit (queue mode): `spotq audit`'s checks as metrics, for alerts before the next wave."""

    interval_seconds: float = Field(
        0.0,
        ge=0,
        description="Queue mode: run `spotq audit`'s checks this often and export them as spotq_audit_* metrics, s "
        "(first run one interval after start; a run waits while any drain runs); 0: off. Needs list on apps "
        "deployments, statefulsets, replicasets and daemonsets (the chart grants it with audit.intervalSeconds).",
    )
    namespaces: str = Field(
        "", description="Namespaces whose workloads the periodic audit checks, comma-separated; empty: all."
    )
    stack: bool = Field(
        True,
        description="The periodic audit also checks the stack: EventBridge rules and the queue's policy (needs "
        "sqs:GetQueueAttributes, events:ListRuleNamesByTarget, events:DescribeRule).",
    )

    def namespace_list(self) -> list[str]:
        return [name.strip() for name in self.namespaces.split(",") if name.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPOTQ_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    queue: QueueSettings = QueueSettings()
    aws: AwsSettings = AwsSettings()
    kube: KubeSettings = KubeSettings()
    policy: PolicySettings = PolicySettings()
    drain: DrainSettings = DrainSettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    imds: ImdsSettings = ImdsSettings()
    webhook: WebhookSettings = WebhookSettings()
    audit: AuditSettings = AuditSettings()


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for --help and the README."""
    rows: list[tuple[str, str, str]] = []
    for group_name, group_field in Settings.model_fields.items():
        group = group_field.annotation
        assert isinstance(group, type) and issubclass(group, BaseModel)
        for name, field in group.model_fields.items():
            default = field.default
            shown = "" if default is None else str(default.value if isinstance(default, enum.Enum) else default)
            rows.append((f"SPOTQ_{group_name.upper()}__{name.upper()}", shown, field.description or ""))
    return rows


def markdown_table() -> str:
    """The README's settings table (a test keeps README in step with this)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for env, default, description in describe():
        lines.append(f"| `{env}` | {f'`{default}`' if default else '—'} | {description} |")
    return "\n".join(lines)
