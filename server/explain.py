"""``explain=true`` within bounds: which features moved each chosen
collection's predicted reward, without letting one request starve the others.

Each explained feature costs one VW predict of its slot (the feature is left
out and the chosen collection re-scored), so a request of 16 slots over 1000
candidates asked for everything would cost many decisions' worth of CPU. A
request gets at most ``limits.explain_max_features`` ablations in all, shared
evenly by its slots in order, and at most ``limits.explain_max_concurrent``
explanations run at once per serving process; beyond either the answer says
``explanation_truncated``. The decision itself is never affected.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bandit.logformat.events import DecisionEvent
from bandit.policy import Policy, explainable_features


@dataclass(frozen=True)
class Explanation:
    slots: tuple[list[tuple[str, str, float]], ...]  # per slot: (group, feature, contribution), largest first
    truncated: bool  # some slot's features were not all explained (or none could be)
    ablations: int  # feature ablations computed (VW predicts beyond the decision's)


class Explainer:
    def __init__(self, max_features: int, max_concurrent: int):
        self.max_features = max_features
        self._slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent > 0 else None

    def explain(self, policy: Policy, event: DecisionEvent, top: int = 5) -> Explanation:
        if self._slots is None or not self._slots.acquire(blocking=False):
            return Explanation(tuple([] for _ in event.choices), True, 0)
        try:
            return self._explain(policy, event, top)
        finally:
            self._slots.release()

    def _explain(self, policy: Policy, event: DecisionEvent, top: int) -> Explanation:
        actions = [c.action for c in event.choices]
        budget, truncated, done, out = self.max_features, False, 0, []
        walk = list(event.inp.walk(actions))
        for i, (k, allowed) in enumerate(walk):
            share = budget // (len(walk) - i)  # even shares; what a slot leaves unused goes to the later ones
            wanted = explainable_features(event.inp, k, actions[k])
            used = min(share, wanted)
            truncated |= used < wanted
            out.append(policy.explain(event.inp, k, allowed, actions[k], top=top, max_features=used) if used else [])
            budget -= used
            done += used
        return Explanation(tuple(out), truncated, done)
