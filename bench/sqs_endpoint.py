"""The benchmark's SQS endpoint: ElasticMQ (fetched from Maven Central, run on the machine's Java) or moto, and a
measurement of the endpoint's own ceiling so the benchmark can tell whether it measures spotq or the queue.

moto's SQS is pure Python and slows down as its queue fills; ElasticMQ speaks the same SQS JSON protocol that
botocore uses and is the default here. Both run as child processes on 127.0.0.1, stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from testenv.procs import ManagedProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
POM = Path(__file__).resolve().parent / "elasticmq" / "pom.xml"
CACHE = Path(os.environ.get("SPOTQ_CACHE", Path.home() / ".cache" / "spotq"))
ELASTICMQ_LIB = CACHE / "elasticmq" / "lib"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def spot_warning(instance_id: str, when: datetime | None = None) -> str:
    """An EventBridge-delivered Spot interruption warning, as the SQS body looks (time: now)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "account": "123456789012",
            "time": stamp,
            "region": REGION,
            "resources": [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "instance-action": "terminate"},
        }
    )


def ensure_elasticmq() -> Path:
    """ElasticMQ's jars in the cache (`mvn dependency:copy-dependencies` on first use); returns the lib dir."""
    marker = ELASTICMQ_LIB / ".complete"
    if marker.exists():
        return ELASTICMQ_LIB
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("ElasticMQ is not cached and `mvn` is not installed (apt-get install maven)")
    ELASTICMQ_LIB.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={ELASTICMQ_LIB}"],
        check=True,
    )
    marker.touch()
    return ELASTICMQ_LIB


class SqsEndpoint:
    """A running SQS-compatible server: `endpoint_url`, `client()`, `env()` for spotq."""

    name = "sqs"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess | None = None

    def __enter__(self) -> SqsEndpoint:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(self.name, self.argv(), self.workdir / f"{self.name}.log", cwd=self.workdir)
        probe = self.client()
        wait_until(f"{self.name} to answer", lambda: probe.list_queues() is not None, timeout=60,
                   interval=0.2, processes=[self.process])  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(10)
            self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self, max_pool: int = 20) -> Any:
        import boto3  # type: ignore[import-untyped,unused-ignore]
        from botocore.config import Config

        config = Config(max_pool_connections=max_pool, retries={"max_attempts": 3, "mode": "standard"})
        return boto3.client("sqs", endpoint_url=self.endpoint_url, region_name=REGION, config=config, **CREDENTIALS)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "SPOTQ_AWS__ENDPOINT_URL": self.endpoint_url,
            "SPOTQ_AWS__REGION": REGION,
        }

    def create_queue(self, name: str) -> str:
        # 300 s retention suits interruptions; the benchmark never leaves messages that long anyway.
        reply = self.client().create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "300"})
        return str(reply["QueueUrl"])


class ElasticMQ(SqsEndpoint):
    name = "elasticmq"

    def argv(self) -> list[str]:
        lib = ensure_elasticmq()
        config = self.workdir / "elasticmq.conf"
        config.write_text(
            f"""include classpath("application.conf")
node-address {{ protocol = "http", host = "127.0.0.1", port = {self.port}, context-path = "" }}
rest-sqs {{ enabled = true, bind-port = {self.port}, bind-hostname = "127.0.0.1", sqs-limits = strict }}
rest-stats {{ enabled = false }}
generate-node-address = false
aws {{ region = "{REGION}", accountId = "000000000000" }}
"""
        )
        logback = self.workdir / "elasticmq-logback.xml"
        logback.write_text(
            """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.elasticmq" level="WARN"/>
  <logger name="org.apache.pekko" level="WARN"/>
  <root level="WARN"><appender-ref ref="STDOUT"/></root>
</configuration>
"""
        )
        java = shutil.which("java") or "java"
        return [
            java,
            # A small heap and the serial collector: the machine has two cores and they belong to the cluster.
            "-Xms64m",
            "-Xmx384m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dconfig.file={config}",
            f"-Dlogback.configurationFile={logback}",
            "-cp",
            f"{lib}/*",
            "org.elasticmq.server.Main",
        ]


class MotoSqs(SqsEndpoint):
    name = "moto"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]


def open_endpoint(kind: str, workdir: Path) -> SqsEndpoint:
    if kind == "elasticmq":
        return ElasticMQ(workdir / "elasticmq")
    if kind == "moto":
        return MotoSqs(workdir / "moto")
    raise ValueError(f"unknown SQS endpoint {kind!r} (elasticmq or moto)")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def send_batched(endpoint: SqsEndpoint, queue_url: str, bodies: Sequence[str], *, senders: int = 8) -> list[float]:
    """SendMessageBatch in tens from `senders` threads; returns the wall-clock time each body was accepted."""
    client = endpoint.client(max_pool=senders)
    stamps = [0.0] * len(bodies)
    batches = list(_chunks(list(range(len(bodies))), 10))  # type: ignore[arg-type]

    def send(batch: Sequence[int]) -> None:
        entries = [{"Id": str(i), "MessageBody": bodies[i]} for i in batch]
        reply = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if reply.get("Failed"):
            raise RuntimeError(f"send_message_batch failed: {reply['Failed'][:3]}")
        now = time.time()
        for i in batch:
            stamps[i] = now

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(send, batches))
    return stamps


def measure_ceiling(
    endpoint: SqsEndpoint, messages: int, *, senders: int = 8, receivers: int = 4, time_limit: float = 60.0
) -> dict[str, Any]:
    """The endpoint's own rates with a minimal client: batched sends, then receive(10)+batch delete loops.

    Receivers match spotq's default (4 ReceiveMessage loops); the queue holds all `messages` when receiving
    starts, as in a mass interruption.
    """
    queue_url = endpoint.create_queue(f"ceiling-{uuid.uuid4().hex[:8]}")
    bodies = [spot_warning(f"i-{i:017x}") for i in range(messages)]
    started = time.monotonic()
    send_batched(endpoint, queue_url, bodies, senders=senders)
    send_seconds = time.monotonic() - started

    client = endpoint.client(max_pool=receivers * 2)
    received = 0
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def receive() -> None:
        nonlocal received
        while time.monotonic() < deadline:
            with lock:
                if received >= messages:
                    return
            reply = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            batch = reply.get("Messages", [])
            if batch:
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
                client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
                with lock:
                    received += len(batch)

    started = time.monotonic()
    with ThreadPoolExecutor(receivers) as pool:
        for future in [pool.submit(receive) for _ in range(receivers)]:
            future.result()
    receive_seconds = time.monotonic() - started
    client.delete_queue(QueueUrl=queue_url)
    return {
        "endpoint": endpoint.name,
        "messages": messages,
        "send_seconds": round(send_seconds, 3),
        "send_per_second": round(messages / send_seconds, 1),
        "received": received,
        "receive_delete_seconds": round(receive_seconds, 3),
        "receive_delete_per_second": round(received / receive_seconds, 1) if receive_seconds else None,
        "complete": received >= messages,
        "senders": senders,
        "receivers": receivers,
    }
