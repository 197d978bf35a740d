"""The policies the simulator compares, behind one small interface.

Every policy fills the request's slots in order, never the same collection
twice, honours slot eligibility, and returns each choice with the probability
it was drawn with (so every simulated log supports off-policy evaluation).
All randomness is seeded: by the policy seed and the event id.

* ``engine`` / ``engine:<explorer>``: :class:`bandit.policy.Policy`, the VW
  learner the server runs, with default or per-explorer LearningSettings;
* ``uniform``: uniformly random;
* ``greedy-ctr``: the best observed click rate per slot x collection, with a
  little epsilon;
* ``rule``: a merchandiser's static rule, in-season seasonal collection first;
* ``oracle``: the argmax of the true expected reward over whole assignments.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from bandit.logformat.events import JoinedEvent
from bandit.assignment import best_assignment
from bandit.decision import DecisionInput, SlotChoice, fill_in_order
from bandit.features import SlotSpec, days_to_event_from_features
from bandit.policy import Policy
from bandit.vwargs import LearningSettings
from simulator.specs import PolicySpec, parse_policy
from simulator.world import World, stable_seed

# Days-to-event buckets the rule treats as "in season", nearest the event first.
IN_SEASON = ("1w", "2w", "3w", "just-passed")


class SimPolicy(Protocol):
    """The one policy interface of the simulator, in the way of coba's learners:
    the same object is run online in a world (``decide``, ``learn``) and valued
    on a logged run (``distribution`` per slot given what earlier slots took,
    then ``learn``: progressive validation)."""

    name: str

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]: ...

    def distribution(self, inp: DecisionInput, k: int, allowed: list[int]) -> list[tuple[int, float]]:
        """pi(. | x, slot k) over ``allowed``, the collections the slot walk leaves it."""
        ...

    def learn(self, joined: JoinedEvent) -> None: ...

    def close(self) -> None: ...


def make_policy(spec: str | PolicySpec, world: World, seed: int) -> SimPolicy:
    spec = parse_policy(spec)
    if spec.learns_with_vw:
        return EnginePolicy(spec.learning_settings(), spec.name)
    factories: dict[str, Callable[[], SimPolicy]] = {
        "uniform": lambda: UniformPolicy(seed),
        "greedy-ctr": lambda: GreedyCTRPolicy(seed),
        "rule": lambda: RulePolicy(),
        "oracle": lambda: OraclePolicy(world),
    }
    return factories[spec.name]()


def _rng(seed: int, name: str, event_id: str) -> np.random.Generator:
    return np.random.default_rng(stable_seed(seed, name, event_id))


def _fill(inp: DecisionInput, pick: Callable[[int, list[int]], list[tuple[int, float]]],
          draw: Callable[[], float]) -> list[SlotChoice]:
    """Fill slots in order; ``pick`` gives slot k's distribution over what is left."""
    def choose(k: int, slot: SlotSpec, allowed: list[int]) -> SlotChoice:
        dist = sorted(pick(k, allowed), key=lambda ap: (-ap[1], ap[0]))
        u, acc = draw(), 0.0
        action, prob = next(((a, p) for a, p in dist if p > 0), dist[0])
        for a, p in dist:
            acc += p
            if u < acc and p > 0:
                action, prob = a, p
                break
        return SlotChoice(slot.id, action, prob, tuple(dist), dist[0][0])
    return fill_in_order(inp, choose).choices


class EnginePolicy:
    """The engine: bandit.policy.Policy, learning as soon as a decision joins."""

    def __init__(self, settings: LearningSettings, name: str = "engine"):
        self.name = name
        self.settings = settings
        self.policy = Policy(settings)

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        return self.policy.decide(inp, event_id).choices

    def distribution(self, inp: DecisionInput, k: int, allowed: list[int]) -> list[tuple[int, float]]:
        return self.policy.slot_distribution(inp, k, allowed)

    def distributions(self, inp: DecisionInput) -> list[list[tuple[int, float]]]:
        """Per-slot marginal distributions (no de-duplication across slots),
        the form off-policy estimators and :func:`runner.true_value` take."""
        return [self.distribution(inp, k, list(inp.allowed(k))) for k in range(len(inp.slots))]

    def learn(self, joined: JoinedEvent) -> None:
        d = joined.decision
        self.policy.learn(d.inp, d.choices, joined.rewards)

    def close(self) -> None:
        self.policy.close()


class UniformPolicy:
    """Uniformly random over what each slot may still show."""

    name = "uniform"

    def __init__(self, seed: int):
        self.seed = seed

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        rng = _rng(self.seed, self.name, event_id)
        return _fill(inp, lambda k, allowed: self.distribution(inp, k, allowed), rng.uniform)

    def distribution(self, inp: DecisionInput, k: int, allowed: list[int]) -> list[tuple[int, float]]:
        return [(a, 1.0 / len(allowed)) for a in allowed]

    def learn(self, joined: JoinedEvent) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class GreedyCTRPolicy:
    """Best observed click rate per slot x collection, epsilon-uniform otherwise.
    Unseen pairs get an optimistic prior so each is tried."""

    seed: int
    epsilon: float = 0.05
    prior_clicks: float = 1.0
    prior_shows: float = 10.0
    name: str = "greedy-ctr"
    clicks: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    shows: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def ctr(self, slot_id: str, collection_id: str) -> float:
        key = (slot_id, collection_id)
        return (self.clicks[key] + self.prior_clicks) / (self.shows[key] + self.prior_shows)

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        rng = _rng(self.seed, self.name, event_id)
        return _fill(inp, lambda k, allowed: self.distribution(inp, k, allowed), rng.uniform)

    def distribution(self, inp: DecisionInput, k: int, allowed: list[int]) -> list[tuple[int, float]]:
        slot = inp.slots[k].id
        best = max(allowed, key=lambda a: (self.ctr(slot, inp.candidates[a].id), -a))
        share = self.epsilon / len(allowed)
        return [(a, share + (1.0 - self.epsilon) * (a == best)) for a in allowed]

    def learn(self, joined: JoinedEvent) -> None:
        inp = joined.decision.inp
        for choice, reward in zip(joined.decision.choices, joined.rewards):
            key = (choice.slot_id, inp.candidates[choice.action].id)
            self.shows[key] += 1
            self.clicks[key] += float(reward > 0)

    def close(self) -> None:
        pass


class RulePolicy:
    """A merchandiser's static rule: the in-season seasonal collection nearest
    its event first, then the slot's default, then catalog order.
    Deterministic (propensity 1), as a hand-written rule is."""

    name = "rule"

    @staticmethod
    def _rank(inp: DecisionInput, k: int, a: int) -> tuple[int, int]:
        cand = inp.candidates[a]
        feats = {n: v for g in cand.groups for n, v in g.features.items()}
        if feats.get("kind") == "seasonal":
            season = feats.get("season")
            if season in IN_SEASON:
                return (0, IN_SEASON.index(season))
            days = days_to_event_from_features(feats)
            if days is not None and -7 <= days <= 21:  # the buckets' in-season span
                return (1, int(days) if days >= 0 else 21 - int(days))
        if cand.id == inp.slots[k].default_collection:
            return (2, 0)
        return (3, a)

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        return _fill(inp, lambda k, allowed: self.distribution(inp, k, allowed), lambda: 0.0)

    def distribution(self, inp: DecisionInput, k: int, allowed: list[int]) -> list[tuple[int, float]]:
        best = min(allowed, key=lambda a: self._rank(inp, k, a))
        return [(a, float(a == best)) for a in allowed]

    def learn(self, joined: JoinedEvent) -> None:
        pass

    def close(self) -> None:
        pass


class OraclePolicy:
    """Argmax of the true expected reward over whole assignments (no
    collection twice), solved exactly as a linear assignment."""

    name = "oracle"

    def __init__(self, world: World):
        self.world = world

    def decide(self, inp: DecisionInput, event_id: str) -> list[SlotChoice]:
        chosen = best_assignment(inp, self.world.expected_matrix(self.world.current(event_id)))
        return [SlotChoice(slot.id, chosen[k], 1.0, ((chosen[k], 1.0),), chosen[k])
                for k, slot in enumerate(inp.slots)]

    def distribution(self, inp: DecisionInput, k: int, allowed: list[int]) -> list[tuple[int, float]]:
        """The oracle places whole assignments from the true rewards of one
        request: :func:`bandit.assignment.best_assignment`, not a per-slot rule."""
        raise ValueError("the oracle has no per-slot distribution: it is valued by its joint assignment")

    def learn(self, joined: JoinedEvent) -> None:
        pass

    def close(self) -> None:
        pass
