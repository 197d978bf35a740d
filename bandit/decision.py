"""What one decision is: its input, its per-slot choices, and the slot walk.

These are the domain types every layer shares (the log format, the joiner,
the simulator, offline evaluation), so they live apart from the VW adapter:
importing them loads no VW.

The slot walk is the rule every logged propensity rests on: slot k may show
what it is eligible for, minus what the slots before it took. It is written
here once (:meth:`DecisionInput.available`, :meth:`DecisionInput.walk`,
:func:`fill_in_order`); every policy, replay and importer calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Collection, Iterator, Sequence

from bandit.features import Candidate, FeatureGroup, SlotSpec


class Mode(str, Enum):
    ONLINE = "online"
    APPRENTICE = "apprentice"
    LOGGING_ONLY = "logging_only"


class NoEligibleCandidate(ValueError):
    """A slot has no collection left that it may show."""


@dataclass(frozen=True)
class DecisionInput:
    """What one decision is about. ``eligible[k]`` lists candidate indices slot k
    may show, or is None when every candidate is allowed."""

    context: tuple[FeatureGroup, ...]
    slots: tuple[SlotSpec, ...]
    candidates: tuple[Candidate, ...]
    eligible: tuple[tuple[int, ...] | None, ...] = ()

    def allowed(self, k: int) -> Sequence[int]:
        """The candidates slot k is eligible for, whatever earlier slots took."""
        if self.eligible and k < len(self.eligible) and self.eligible[k] is not None:
            return self.eligible[k]
        return range(len(self.candidates))

    def available(self, k: int, taken: Collection[int]) -> list[int]:
        """The slot walk: what slot k may show once ``taken`` are placed."""
        return [a for a in self.allowed(k) if a not in taken]

    def walk(self, actions: Sequence[int]) -> Iterator[tuple[int, list[int]]]:
        """(k, what slot k could show) for each slot, given the actions the
        earlier slots took: what a logged propensity was conditioned on."""
        taken: set[int] = set()
        for k, action in enumerate(actions):
            yield k, self.available(k, taken)
            taken.add(action)


@dataclass(frozen=True)
class SlotChoice:
    """One slot's outcome: the chosen candidate index, the probability it was
    drawn with, and every still-available candidate ranked by probability."""

    slot_id: str
    action: int
    probability: float
    ranking: tuple[tuple[int, float], ...]
    model_top: int = -1  # what the learned policy would serve (apprentice agreement)


@dataclass
class Decision:
    choices: list[SlotChoice] = field(default_factory=list)


def fill_in_order(inp: DecisionInput, choose: Callable[[int, SlotSpec, list[int]], SlotChoice]) -> Decision:
    """Slot by slot, ``choose`` among what the slot walk leaves it."""
    taken: set[int] = set()
    decision = Decision()
    for k, slot in enumerate(inp.slots):
        allowed = inp.available(k, taken)
        if not allowed:
            raise NoEligibleCandidate(f"slot '{slot.id}' has no eligible collection left")
        choice = choose(k, slot, allowed)
        decision.choices.append(choice)
        taken.add(choice.action)
    return decision
