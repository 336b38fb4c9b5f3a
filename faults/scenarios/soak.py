"""A soak: steady random interruptions for `soak_minutes` (3 by default; 30 for the real one), spotq's RSS sampled
every second.

The Spot nodes have room for more than their share of pods and there are no on-demand spares: an interrupted
node's pods move to the other Spot nodes. Once a node is drained and on record as finished (or its deadline has
passed) its instance "ends": the Node is deleted and a fresh Spot node (a new instance) joins, so the cluster keeps
its size and spotq's index sees nodes come and go all along. A new interruption every 2-8 s (seeded), at most a
fifth of the nodes at once.
"""

from __future__ import annotations

import random
import time

from faults import measure
from faults.env import Environment
from faults.measure import Figures
from faults.trial import Options, Trial, say
from faults.wave import Shape


def soak(env: Environment, opts: Options) -> Figures:
    minutes = opts.soak_minutes
    shape = Shape(opts.nodes, opts.pods_per_node, opts.grace_seconds, opts.max_unavailable, spares=0,
                  room=opts.pods_per_node, ready_delay=opts.ready_delay)  # fmt: skip
    trial = Trial(env, opts, "soak", f"{minutes:g} min of random interruptions", shape=shape)
    proc = env.spotq("spotq-0")
    rng = random.Random(7)
    wave = trial.wave
    ending = time.time() + minutes * 60
    busy: dict[str, float] = {}  # interrupted node → its deadline
    next_at = time.time()
    replaced = 0
    last_say = time.time()
    while time.time() < ending:
        now = time.time()
        trial.poller.poll_now()
        for node, deadline in list(busy.items()):
            seen = trial.poller.nodes[node]
            if (seen.last_drain() in measure.FINAL_DRAIN_STATES and not seen.pods_at(now)) or now > deadline:
                fresh = wave.replace_node(node)
                trial.poller.follow([fresh.node_name])
                del busy[node]
                replaced += 1
        if now >= next_at and len(busy) < max(1, len(wave.nodes) // 5):
            idle = [n for n in wave.nodes if n.node_name not in busy]
            chosen = rng.choice(idle)
            trial.interrupt([chosen])
            busy[chosen.node_name] = trial.interruptions[-1].deadline
            next_at = now + rng.uniform(2, 8)
        if not opts.quiet and now - last_say > 30:
            say(f"soak: {len(trial.interruptions)} interruptions, {replaced} nodes replaced, "
                f"{(ending - now) / 60:.1f} min left")  # fmt: skip
            last_say = now
        time.sleep(0.5)
    trial.settle(until=time.time() + 150)
    found = trial.finish(serving=[proc])
    growth = measure.rss_growth(trial.sampler, proc.label)
    found.rss_growth_pct = growth.get("growth_pct")
    found.details.update({"rss": growth, "minutes": minutes, "nodes_replaced": replaced})
    return found
