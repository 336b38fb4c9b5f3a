"""Prometheus metrics: `spotq_` prefix, base units, bounded labels (never node, pod or instance names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Latencies that matter span milliseconds (taint) to minutes (drain).
_FAST = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_SLOW = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)

MESSAGES_RECEIVED = Counter(
    "spotq_messages_received", "Messages received, by notice kind.", ["kind"], registry=REGISTRY
)
MESSAGES_FINISHED = Counter(
    "spotq_messages_finished",
    "Messages whose fate was decided, by kind and outcome (the outcome names the fate).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
MESSAGE_AGE = Histogram(
    "spotq_message_age_seconds",
    "Time from the event's own time to its receipt by spotq.",
    ["kind"],
    buckets=(*_FAST, 60, 120, 300),
    registry=REGISTRY,
)
RECEIPT_TO_TAINT = Histogram(
    "spotq_receipt_to_taint_seconds",
    "Time from receiving a message to its node being durably marked (taint, cordon, annotation).",
    buckets=_FAST,
    registry=REGISTRY,
)
DRAIN_DURATION = Histogram(
    "spotq_drain_duration_seconds", "Time to drain one node, by result.", ["result"], buckets=_SLOW, registry=REGISTRY
)
EVICTIONS = Counter("spotq_evictions", "Eviction attempts, by result.", ["result"], registry=REGISTRY)
DRAINS_IN_FLIGHT = Gauge("spotq_drains_in_flight", "Nodes being drained now.", registry=REGISTRY)
MESSAGES_IN_FLIGHT = Gauge("spotq_messages_in_flight", "Messages received and not yet settled.", registry=REGISTRY)
EVICTIONS_IN_FLIGHT_PER_BUDGET = Gauge(
    "spotq_evictions_in_flight_per_budget",
    "Evictions a drain may keep in flight under one PodDisruptionBudget now (automatic: follows the budgets at work).",
    registry=REGISTRY,
)
BUDGETS_AT_WORK = Gauge(
    "spotq_budgets_at_work", "PodDisruptionBudgets with evictions waiting or in flight.", registry=REGISTRY
)
API_ERRORS = Counter(
    "spotq_api_errors", "Failed API calls, by API and operation.", ["api", "operation"], registry=REGISTRY
)
KUBE_REQUESTS = Counter(
    "spotq_kube_requests", "Kubernetes API requests sent, by operation.", ["operation"], registry=REGISTRY
)
NODES_INDEXED = Gauge("spotq_nodes_indexed", "Nodes in the instance→node index.", registry=REGISTRY)
LIFECYCLE_COMPLETIONS = Counter(
    "spotq_lifecycle_completions", "Lifecycle actions completed, by result.", ["result"], registry=REGISTRY
)
SQS_RECEIPTS_FAILED = Counter(
    "spotq_sqs_receipts_failed",
    "Receipts a batch delete or visibility change did not apply, by operation and reason: error (tried again) or "
    "gone (the receipt no longer holds its message: nothing to retry).",
    ["operation", "reason"],
    registry=REGISTRY,
)
DELETES_PENDING = Gauge(
    "spotq_deletes_pending",
    "Finished messages whose delete SQS has not confirmed yet (kept invisible and retried).",
    registry=REGISTRY,
)
MESSAGES_RELEASED_ON_STOP = Counter(
    "spotq_messages_released_on_stop",
    "Messages handed back to the queue on stop: unfinished work, or received while stopping.",
    ["reason"],
    registry=REGISTRY,
)
WATCH_RESTARTS = Counter(
    "spotq_watch_restarts",
    "List+watch loops interrupted and relisted, by resource (nodes, pdbs, pods; pods_deleted: the watch quiet drains "
    "share) and reason (expired, forbidden, api_error, stream, network, unexpected; for pods_deleted also failed, "
    "and behind: a drain's view older than the shared watch remembers).",
    ["resource", "reason"],
    registry=REGISTRY,
)
MARKS_EXPIRED = Counter(
    "spotq_marks_expired",
    "Rebalance recommendations whose marks were released because no interruption followed, by result "
    "(released, failed).",
    ["result"],
    registry=REGISTRY,
)
DRAINS_RESUMED = Counter(
    "spotq_drains_resumed",
    "Drains resumed at start from the nodes' own records (a stopped spotq left them unfinished).",
    registry=REGISTRY,
)
IMDS_POLLS = Counter(
    "spotq_imds_polls",
    "IMDS reads by path (instance_action, rebalance, scheduled_maintenance; instance_id once at start) and "
    "result: notice, none (404), ok (instance_id), malformed, or why the read failed (timeout, unreachable, "
    "token_timeout, token_refused, unauthorized, http_error).",
    ["path", "result"],
    registry=REGISTRY,
)
IMDS_NOTICES = Counter(
    "spotq_imds_notices",
    "Notices found on IMDS, by kind; the same notice polled again is not counted again.",
    ["kind"],
    registry=REGISTRY,
)
IMDS_REACHABLE = Gauge(
    "spotq_imds_reachable", "1 while the latest IMDS poll was answered, 0 while it fails.", registry=REGISTRY
)
IMDS_TOKEN_REQUESTS = Counter(
    "spotq_imds_token_requests",
    "IMDSv2 token requests (PUT /latest/api/token), by result (ok, timeout, unreachable, refused).",
    ["result"],
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "spotq_notifications",
    "Webhook notifications by result: sent (the webhook answered 2xx), failed (refused, or still failing after "
    "the retries), dropped (the queue was full, or spotq stopped before it could send them).",
    ["result"],
    registry=REGISTRY,
)

KUBE_CREDENTIAL_RELOADS = Counter(
    "spotq_kube_credential_reloads",
    "Kubernetes credentials read again after the API server refused the token (401), by result (changed: the "
    "refused request was sent again with the new token; unchanged; failed).",
    ["result"],
    registry=REGISTRY,
)

# The periodic audit (SPOTQ_AUDIT__INTERVAL_SECONDS): findings per check, never per workload.
AUDIT_FINDINGS = Gauge(
    "spotq_audit_findings",
    "Findings of the last periodic audit, by check and severity (see `spotq audit`).",
    ["check", "severity"],
    registry=REGISTRY,
)
AUDIT_AT_RISK = Gauge(
    "spotq_audit_at_risk", "1 when the last periodic audit found anything at risk.", registry=REGISTRY
)
AUDIT_SPOT_NODES = Gauge("spotq_audit_spot_nodes", "Spot nodes in scope at the last periodic audit.", registry=REGISTRY)
AUDIT_RUNS = Counter(
    "spotq_audit_runs", "Periodic audits, by result (ok, failed: the cluster could not be read).", ["result"],
    registry=REGISTRY,
)  # fmt: skip
AUDIT_LAST_SUCCESS = Gauge(
    "spotq_audit_last_success_timestamp_seconds", "When the last periodic audit finished.", registry=REGISTRY
)
