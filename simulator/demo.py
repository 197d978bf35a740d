"""``placement demo``: watch the engine learn, end to end, over real gRPC.

A small synthetic audience (three customer segments) visits a surface with
three slots (homepage, email, detail page). Each segment has a planted best
collection per slot; clicks arrive a little later and are reported with
``Reward``. The engine learns online; at the end we ask it again and compare
with the planted truth and with uniform random placement.

Reproducible: event ids come from the seed (so do VW's draws), and the engine
joins, learns and publishes a new version after every round of
:data:`ROUND` decisions (once the round's late clicks are in), never by the
wall clock, so a seed prints the same table on any machine; only the seconds
vary.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from server.app import start_server
from server.client import PlacementClient, collection
from server.config import load_config

SEGMENTS = ("students", "parents", "trendsetters")
SLOTS = ("homepage", "email", "detail_page")
COLLECTIONS = {
    "back-to-school": {"kind": "seasonal", "price_level": 0.3},
    "mothers-day": {"kind": "seasonal", "price_level": 0.6},
    "internet-famous": {"kind": "viral", "price_level": 0.4},
    "fall-favorites": {"kind": "seasonal", "price_level": 0.5},
    "home-essentials": {"kind": "regular", "price_level": 0.7},
}
BEST = {
    ("students", "homepage"): "back-to-school", ("students", "email"): "internet-famous",
    ("students", "detail_page"): "fall-favorites",
    ("parents", "homepage"): "mothers-day", ("parents", "email"): "back-to-school",
    ("parents", "detail_page"): "home-essentials",
    ("trendsetters", "homepage"): "internet-famous", ("trendsetters", "email"): "fall-favorites",
    ("trendsetters", "detail_page"): "mothers-day",
}
SLOT_BASE = {"homepage": 1.0, "email": 0.7, "detail_page": 0.85}
ROUND = 250  # decisions between model versions
NEVER = 10**9  # the learner publishes when the demo settles a round, not by count or clock


@dataclass(frozen=True)
class Audience:
    """True click probabilities, known to the demo, never to the engine."""

    click: dict[tuple[str, str, str], float]

    @classmethod
    def make(cls, seed: int) -> "Audience":
        rng = random.Random(seed)
        click = {}
        for seg in SEGMENTS:
            for slot in SLOTS:
                for cid in COLLECTIONS:
                    p = 0.40 if BEST[(seg, slot)] == cid else rng.uniform(0.03, 0.12)
                    click[(seg, slot, cid)] = p * SLOT_BASE[slot]
        return cls(click)

    def uniform_value(self, seg: str, slot: str) -> float:
        return sum(self.click[(seg, slot, c)] for c in COLLECTIONS) / len(COLLECTIONS)


def run_demo(decisions: int = 6000, seed: int = 7, data_dir: Path | None = None,
             console: Console | None = None) -> int:
    console = console or Console()
    temp = data_dir is None
    data = Path(data_dir or tempfile.mkdtemp(prefix="placement-demo-"))
    config = load_config(None, port=0, data_dir=data, join={"window_seconds": 3600.0},
                         learner={"publish_every_examples": NEVER, "publish_every_seconds": NEVER})
    server = start_server(config)
    try:
        with PlacementClient(server.target) as client:
            client.put_collections([collection(cid, {"collection": feats}) for cid, feats in COLLECTIONS.items()])
            audience = Audience.make(seed)
            started = time.monotonic()
            _drive(client, audience, decisions, seed, console, server.engine.settle)
            _report(client, audience, seed, console, time.monotonic() - started)
    finally:
        server.stop()
        if temp:
            shutil.rmtree(data, ignore_errors=True)
    return 0


def _drive(client: PlacementClient, audience: Audience, n: int, seed: int, console: Console,
           settle: Callable[[], int]) -> None:
    """n decisions; each click is reported 1-40 decisions later (by the end
    of its round at the latest), then the round is joined and learned."""
    rng = random.Random(seed + 1)
    later: deque[tuple[int, str, str]] = deque()  # (due decision number, event id, slot)
    columns = (TextColumn("learning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[version]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("decide", total=n, version="")
        for i in range(n):
            seg = rng.choice(SEGMENTS)
            result = client.decide({"customer": {"segment": seg, "hour": rng.randrange(24) / 23}}, SLOTS,
                                   event_id=f"demo-{seed}-{i:06d}")
            for slot_id, cid in result.chosen().items():
                if rng.random() < audience.click[(seg, slot_id, cid)]:
                    later.append((i + rng.randrange(1, 40), result.event_id, slot_id))
            end_of_round = (i + 1) % ROUND == 0 or i + 1 == n
            while later and (later[0][0] <= i or end_of_round):
                _, event_id, slot_id = later.popleft()
                client.reward(event_id, 1.0, slot_id=slot_id)
            if end_of_round:
                settle()
                progress.update(task, completed=i + 1, version=f"model v{client.model_info().current_version}")


def _report(client: PlacementClient, audience: Audience, seed: int, console: Console, seconds: float) -> None:
    """Ask the learned policy again (logged, not learned from) and compare.

    P(best) is the probability the policy gives the planted best when it is
    still available to the slot (an earlier slot did not take it);
    "exploring" is the probability still spent away from the policy's own top
    choice: what exploration costs at this point."""
    rng = random.Random(seed + 2)
    table = Table(title="What the engine learned (per segment and slot)", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="chosen: how often the planted best was served; P(best): its probability when "
                          "available; explore: probability spent off the top choice; CTR: clicks per "
                          "slot served, learned policy and uniform random")
    for col in ("segment / slot", "planted best", "chosen", "P(best)", "explore", "CTR", "uniform"):
        table.add_column(col, justify="left" if col in ("segment / slot", "planted best") else "right",
                         no_wrap=True, min_width=len(col))
    learned_total = uniform_total = 0.0
    trials = 60
    for seg in SEGMENTS:
        table.add_row(f"[bold]{seg}[/bold]")
        picks: dict[str, list[str]] = {slot: [] for slot in SLOTS}
        p_best: dict[str, list[float]] = {slot: [] for slot in SLOTS}
        exploring: dict[str, list[float]] = {slot: [] for slot in SLOTS}
        for t in range(trials):
            result = client.decide({"customer": {"segment": seg, "hour": rng.randrange(24) / 23}}, SLOTS,
                                   mode="logging_only", event_id=f"demo-{seed}-ask-{seg}-{t}")
            for s in result.slots:
                picks[s.slot_id].append(s.collection_id)
                ranking = dict(s.ranking)
                if BEST[(seg, s.slot_id)] in ranking:
                    p_best[s.slot_id].append(ranking[BEST[(seg, s.slot_id)]])
                exploring[s.slot_id].append(1.0 - max(ranking.values()))
        for slot in SLOTS:
            best = BEST[(seg, slot)]
            chosen_best = picks[slot].count(best) / trials
            learned = sum(audience.click[(seg, slot, c)] for c in picks[slot]) / trials
            uniform = audience.uniform_value(seg, slot)
            learned_total += learned
            uniform_total += uniform
            table.add_row(f"  {slot}", best, f"{chosen_best:.0%}", f"{_mean(p_best[slot]):.2f}",
                          f"{_mean(exploring[slot]):.1%}", f"{learned:.3f}", f"{uniform:.3f}")
    console.print(table)
    stats = client.stats()
    console.print(
        f"learned policy: {learned_total / 9:.3f} clicks per slot; uniform random: {uniform_total / 9:.3f} "
        f"({learned_total / uniform_total:.1f}x). {stats.decisions} decisions, {stats.rewards} rewards, "
        f"{stats.joined} joined, model v{client.model_info().current_version}, {seconds:.0f}s.")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
