"""`spotq audit`: read the cluster, run the checks, print the findings; the exit status says whether anything
is at risk (0 nothing, 1 something, 2 a wrong setting or a cluster that could not be read)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Literal, TextIO

from spotq import selectors
from spotq.kube.client import KubeClient
from spotq.settings import Settings

from . import checks, reading, render, stack, views

EXIT_CLEAN = 0
EXIT_AT_RISK = 1
EXIT_CANNOT_AUDIT = 2

Output = Literal["table", "json"]


async def audit(
    settings: Settings,
    *,
    namespaces: Sequence[str] = (),
    output: Output = "table",
    out: TextIO | None = None,
    check_stack: bool = True,
) -> int:
    """Audit the Spot nodes in spotq's scope (SPOTQ_KUBE__NODE_SELECTOR) and the pods of `namespaces` (all when
    empty), and, with a queue set (SPOTQ_QUEUE__URL) and `check_stack`, whether EventBridge sends every kind of
    event spotq acts on to it. A wrong setting raises ConfigError (the CLI's exit 2)."""
    selector = selectors.parse(settings.kube.node_selector)
    client = await KubeClient.connect(settings.kube, max_connections=8)
    try:
        snapshot = await reading.read(client, namespaces)
    except reading.ReadError as exc:
        print(f"spotq: {exc}", file=sys.stderr)
        return EXIT_CANNOT_AUDIT
    finally:
        await client.close()
    cluster = views.cluster_from(snapshot, selector)
    findings = checks.run(cluster, checks.Limits.from_settings(settings))
    if check_stack and settings.queue.url:
        from .stack_reading import read_stack  # the AWS SDK loads only for this check

        found = await read_stack(settings.aws, settings.queue.url, stack.routes(settings))
        findings = checks.ordered([*findings, *stack.check(found)])
    spot_nodes = len(cluster.spot_nodes())
    text = (
        render.as_json(findings, spot_nodes=spot_nodes)
        if output == "json"
        else render.as_table(findings, spot_nodes=spot_nodes)
    )
    try:
        print(text, file=out or sys.stdout, flush=True)
    except BrokenPipeError:  # `spotq audit | head`: the reader left; the verdict still stands
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_AT_RISK if findings else EXIT_CLEAN
