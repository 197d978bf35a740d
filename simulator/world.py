"""A seeded, reproducible merchandising world, described by a TOML scenario.

The world emits placement requests (one customer, one moment, 1..3 slots) as
``bandit.features`` objects so the engine's :class:`bandit.policy.Policy`
consumes them as they are, and it knows the truth behind them:

* customers belong to segments (observable) and carry individual tastes
  (hidden); each request has a short-term session intent; customers are new or
  returning;
* collections are seasonal (demand ramps up before an event and drops after),
  viral (random trend spikes that decay) or regular; they can be added and
  retired mid-run;
* slots (homepage, detail page, email) have their own base rates, position
  effects and reward delays; the detail page's viewed category shifts affinity;
* a click may lead to a purchase after a delay; some rewards are lost, and
  those arriving after the reward window count as the default reward.

:meth:`World.expected_reward` is the exact expected *joined* reward (what the
log records: late and lost rewards replaced by the default), so oracle and true
policy values are known. The request stream depends only on the scenario and
seed, never on the policy, so every policy is judged on the same contexts;
outcomes use common random numbers per (event, slot) for the same reason.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from bandit.features import Candidate, FeatureGroup, SlotSpec, days_to_event_features
from bandit.decision import DecisionInput
from simulator.scenarios import DEFAULT_SCENARIO, SCENARIO_DIR, builtin_scenarios

KINDS = ("seasonal", "viral", "regular")
# What the front-end sends besides segment, intent, slot and catalog metadata
# (README, "Signals"): the merchandising models' seasonality forecast and buzz
# score, days to a collection's event as a smooth basis, the customer's
# long-term taste scores; "buckets" is the old coarse calendar (season bucket,
# linear proximity, buzz bucket), kept to measure what the signals are worth.
SIGNALS = ("forecast", "buzz", "calendar", "taste", "buckets")
DEFAULT_SIGNALS = ("forecast", "buzz", "calendar", "taste")
HOUR_BUCKETS = ("night", "morning", "afternoon", "evening")
DAY = 86400.0
HOUR = 3600.0


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names the file and key."""


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed from any parts, identical across processes (no hash())."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(*parts: Any) -> np.random.Generator:
    return np.random.default_rng(stable_seed(*parts))


# --- scenario ----------------------------------------------------------------

@dataclass(frozen=True)
class Delay:
    """A reward delay distribution, in hours."""

    dist: str = "exponential"  # exponential | lognormal | fixed
    mean_hours: float = 1.0  # exponential
    median_hours: float = 1.0  # lognormal
    sigma: float = 1.0  # lognormal
    hours: float = 0.0  # fixed

    def validate(self, where: str) -> "Delay":
        if self.dist not in ("exponential", "lognormal", "fixed"):
            raise ScenarioError(f"{where}: dist '{self.dist}' is not exponential, lognormal or fixed")
        if min(self.mean_hours, self.median_hours, self.sigma) <= 0 or self.hours < 0:
            raise ScenarioError(f"{where}: delay parameters must be positive")
        return self

    def sample_hours(self, rng: np.random.Generator) -> float:
        if self.dist == "exponential":
            return float(rng.exponential(self.mean_hours))
        if self.dist == "lognormal":
            return float(self.median_hours * math.exp(self.sigma * rng.standard_normal()))
        return self.hours

    def cdf(self, hours: np.ndarray | float) -> np.ndarray:
        from scipy import stats  # here, not at import: the CLI starts without scipy.stats (~1 s)

        hours = np.asarray(hours, dtype=float)
        if self.dist == "exponential":
            return stats.expon.cdf(hours, scale=self.mean_hours)
        if self.dist == "lognormal":
            return stats.lognorm.cdf(hours, s=self.sigma, scale=self.median_hours)
        return (hours >= self.hours).astype(float)


@dataclass(frozen=True)
class SlotConfig:
    id: str
    base_rate: float = 0.05  # click probability of a neutral collection at position 0
    presence: float = 1.0  # share of requests that include this slot
    default_collection: str = ""
    category_effect: float = 0.0  # logit boost when the collection matches the viewed category
    kind_effects: Mapping[str, float] = field(default_factory=dict)
    click_delay: Delay = field(default_factory=Delay)


@dataclass(frozen=True)
class Intent:
    name: str
    tags: tuple[str, ...] = ()
    boost: float = 1.0  # logit boost for collections with one of these tags


@dataclass(frozen=True)
class Segment:
    name: str
    weight: float = 1.0
    tastes: Mapping[str, float] = field(default_factory=dict)  # tag -> logit affinity
    intents: Mapping[str, float] = field(default_factory=dict)  # intent -> weight
    categories: Mapping[str, float] = field(default_factory=dict)  # viewed-category weights
    purchase_multiplier: float = 1.0


@dataclass(frozen=True)
class Spike:
    day: float
    size: float


@dataclass(frozen=True)
class CollectionConfig:
    id: str
    title: str = ""
    kind: str = "regular"
    tags: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    appeal: float = 0.0
    purchase_rate: float = 0.2
    added_day: float = 0.0
    retired_day: float | None = None
    # seasonal
    event: date | None = None
    ramp_days: float = 21.0
    tail_days: float = 5.0
    off_level: float = -2.5  # log demand far from the event
    peak_level: float = 2.0  # log demand on the event day
    # viral
    spike_rate_per_day: float = 0.0
    spike_size: float = 3.0
    half_life_days: float = 5.0
    spikes: tuple[Spike, ...] = ()


@dataclass(frozen=True)
class RewardConfig:
    window_hours: float = 48.0
    aggregation: str = "sum"
    default: float = 0.0
    click_value: float = 1.0
    purchase_value: float = 4.0
    lost_share: float = 0.05  # a slot's rewards never arrive (tracking lost)
    purchase_delay: Delay = field(default_factory=lambda: Delay("lognormal", median_hours=6.0))


@dataclass(frozen=True)
class Scenario:
    name: str
    start: date
    days: float
    slots: tuple[SlotConfig, ...]
    segments: tuple[Segment, ...]
    intents: tuple[Intent, ...]
    collections: tuple[CollectionConfig, ...]
    description: str = ""
    returning_share: float = 0.5
    taste_sd: float = 0.4
    position_decay: float = 0.85
    weekend_effect: float = 0.0
    hour_effects: Mapping[str, float] = field(default_factory=dict)
    categories: Mapping[str, float] = field(default_factory=dict)
    reward: RewardConfig = field(default_factory=RewardConfig)
    signals: tuple[str, ...] = DEFAULT_SIGNALS
    forecast_sd: float = 0.25  # error of the seasonality forecast (log demand), per request
    taste_signal_sd: float = 0.2  # error of a customer's long-term taste scores, per customer

    @property
    def start_ts(self) -> float:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc).timestamp()

    def event_day(self, c: CollectionConfig) -> float | None:
        return None if c.event is None else float((c.event - self.start).days)

    def collection(self, collection_id: str) -> CollectionConfig:
        for c in self.collections:
            if c.id == collection_id:
                return c
        raise KeyError(collection_id)


def _check_keys(raw: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return dict(raw)


def _table(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: expected a table, got {type(raw).__name__}")
    return raw


def _delay(raw: Any, where: str) -> Delay:
    return Delay(**_check_keys(_table(raw, where), Delay, where)).validate(where)


def _build(cls: type, raw: Any, where: str, nested: Mapping[str, Any] | None = None) -> Any:
    """Construct a dataclass from a TOML table, refusing unknown keys."""
    data = _check_keys(_table(raw, where), cls, where)
    for key, convert in (nested or {}).items():
        if key in data:
            data[key] = convert(data[key], f"{where}.{key}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ScenarioError(f"{where}: '{value}' is not a date (YYYY-MM-DD)") from None


def _tuple(value: Any, where: str) -> tuple:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list")
    return tuple(value)


def _spikes(value: Any, where: str) -> tuple[Spike, ...]:
    return tuple(_build(Spike, s, f"{where}[{i}]") for i, s in enumerate(_tuple(value, where)))


def scenario_from_dict(raw: Mapping[str, Any], where: str = "scenario") -> Scenario:
    """Build and validate a scenario; unknown keys anywhere are an error."""
    data = _check_keys(raw, Scenario, where)
    for key in ("name", "start", "days", "slots", "segments", "intents", "collections"):
        if key not in data:
            raise ScenarioError(f"{where}: missing required key '{key}'")
    data["start"] = _date(data["start"], f"{where}.start")
    data["slots"] = tuple(_build(SlotConfig, s, f"{where}.slots[{i}]", {"click_delay": _delay})
                          for i, s in enumerate(_tuple(data["slots"], f"{where}.slots")))
    data["segments"] = tuple(_build(Segment, s, f"{where}.segments[{i}]")
                             for i, s in enumerate(_tuple(data["segments"], f"{where}.segments")))
    data["intents"] = tuple(_build(Intent, s, f"{where}.intents[{i}]", {"tags": _tuple})
                            for i, s in enumerate(_tuple(data["intents"], f"{where}.intents")))
    data["collections"] = tuple(
        _build(CollectionConfig, c, f"{where}.collections[{i}]",
               {"tags": _tuple, "categories": _tuple, "event": _date, "spikes": _spikes})
        for i, c in enumerate(_tuple(data["collections"], f"{where}.collections")))
    if "signals" in data:
        data["signals"] = _tuple(data["signals"], f"{where}.signals")
    if "reward" in data:
        data["reward"] = _build(RewardConfig, data["reward"], f"{where}.reward", {"purchase_delay": _delay})
    try:
        scenario = Scenario(**data)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    return _validate(scenario, where)


def _validate(s: Scenario, where: str) -> Scenario:
    if s.days <= 0:
        raise ScenarioError(f"{where}: days must be positive")
    if not s.slots or not s.segments or not s.intents or not s.collections:
        raise ScenarioError(f"{where}: slots, segments, intents and collections must each be non-empty")
    intents = {i.name for i in s.intents}
    ids = [c.id for c in s.collections]
    if len(set(ids)) != len(ids):
        raise ScenarioError(f"{where}: duplicate collection ids")
    if len(set(x.id for x in s.slots)) != len(s.slots):
        raise ScenarioError(f"{where}: duplicate slot ids")
    for seg in s.segments:
        bad = set(seg.intents) - intents
        if bad:
            raise ScenarioError(f"{where}: segment '{seg.name}' names unknown intent(s) {', '.join(sorted(bad))}")
        if not seg.intents:
            raise ScenarioError(f"{where}: segment '{seg.name}' has no intents")
    for c in s.collections:
        if c.kind not in KINDS:
            raise ScenarioError(f"{where}: collection '{c.id}' kind '{c.kind}' is not one of {', '.join(KINDS)}")
        if c.kind == "seasonal" and c.event is None:
            raise ScenarioError(f"{where}: seasonal collection '{c.id}' needs an event date")
        if c.retired_day is not None and c.retired_day <= c.added_day:
            raise ScenarioError(f"{where}: collection '{c.id}' is retired before it is added")
    for slot in s.slots:
        bad = set(slot.kind_effects) - set(KINDS)
        if bad:
            raise ScenarioError(f"{where}: slot '{slot.id}' kind_effects names unknown kind(s) {', '.join(sorted(bad))}")
        if not 0 < slot.base_rate < 1 or not 0 < slot.presence <= 1:
            raise ScenarioError(f"{where}: slot '{slot.id}' base_rate and presence must be in (0, 1]")
    if not 0 <= s.returning_share < 1 or not 0 <= s.reward.lost_share < 1:
        raise ScenarioError(f"{where}: returning_share and reward.lost_share must be in [0, 1)")
    if s.reward.window_hours <= 0:
        raise ScenarioError(f"{where}: reward.window_hours must be positive")
    bad = set(s.signals) - set(SIGNALS)
    if bad:
        raise ScenarioError(f"{where}: signals names unknown signal(s) {', '.join(sorted(bad))} "
                            f"(known: {', '.join(SIGNALS)})")
    if s.forecast_sd < 0 or s.taste_signal_sd < 0:
        raise ScenarioError(f"{where}: forecast_sd and taste_signal_sd must be >= 0")
    if not 0 < s.position_decay <= 1:
        raise ScenarioError(f"{where}: position_decay must be in (0, 1]")
    return s


def load_scenario(name_or_path: str | Path = DEFAULT_SCENARIO) -> Scenario:
    """A built-in scenario by name (``seasonal-retail``) or a TOML file path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ScenarioError(
                f"unknown scenario '{name_or_path}': built-in ones are {', '.join(builtin_scenarios())}, "
                "or give a path to a .toml file")
    if not path.exists():
        raise ScenarioError(f"scenario file '{path}' does not exist")
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return scenario_from_dict(raw, where=str(path))


# --- the world ---------------------------------------------------------------

@dataclass
class Customer:
    id: str
    segment: Segment
    taste: dict[str, float]  # hidden individual affinity per tag
    visits: int = 0
    taste_signal: dict[str, float] = field(default_factory=dict)  # the front-end's estimate of taste


@dataclass(frozen=True)
class Request:
    """One placement request and the hidden truth behind it."""

    index: int
    event_id: str
    timestamp: float
    day: float  # days since the scenario start
    customer: Customer
    returning: bool
    intent: Intent
    category: str  # viewed product category, "none" without a detail slot
    slots: tuple[SlotConfig, ...]
    collections: tuple[CollectionConfig, ...]
    inp: DecisionInput


@dataclass(frozen=True)
class Outcome:
    """What one slot's placement led to, and when each reward arrives."""

    clicked: bool
    purchased: bool
    rewards: tuple[tuple[float, float], ...]  # (arrival timestamp, value); lost ones absent


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def hour_bucket(hour: int) -> str:
    return HOUR_BUCKETS[hour // 6]


def season_bucket(days_to_event: float | None) -> str:
    """Days-to-event as a coarse observable feature."""
    if days_to_event is None:
        return "none"
    t = days_to_event
    if t > 42:
        return "far"
    if t > 21:
        return "6w"
    if t > 14:
        return "3w"
    if t > 7:
        return "2w"
    if t >= 0:
        return "1w"
    if t >= -7:
        return "just-passed"
    return "past"


def event_proximity(days_to_event: float) -> float:
    """A calendar signal any merchandiser has: 0 four weeks or more before an
    event, rising to 1 on the day, back to 0 a week after."""
    if days_to_event >= 0:
        return max(0.0, 1.0 - days_to_event / 28.0)
    return max(0.0, 1.0 + days_to_event / 7.0)


def buzz_bucket(buzz: float) -> str:
    return "quiet" if buzz < 0.25 else "warm" if buzz < 1.5 else "hot"


class World:
    """The merchandising world for one scenario, seed and number of decisions.

    The scenario's ``days`` are spread over ``decisions`` requests, so a short
    run still passes through every season."""

    def __init__(self, scenario: Scenario | str | Path = DEFAULT_SCENARIO, seed: int = 0, decisions: int = 10_000):
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if decisions <= 0:
            raise ValueError("decisions must be positive")
        self.seed = int(seed)
        self.decisions = int(decisions)
        self.seconds_per_decision = self.scenario.days * DAY / self.decisions
        s = self.scenario
        self.tags = sorted({t for c in s.collections for t in c.tags} | {t for g in s.segments for t in g.tastes})
        self._spikes = {c.id: self._draw_spikes(c) for c in s.collections}
        self._intents = {i.name: i for i in s.intents}
        window = s.reward.window_hours
        # Probability a click / a purchase lands inside the reward window.
        self._click_in = {x.id: float(x.click_delay.cdf(window)) for x in s.slots}
        self._purchase_in = {x.id: _convolved_cdf(x.click_delay, s.reward.purchase_delay, window) for x in s.slots}
        self._current: Request | None = None
        self._cache: tuple[Request, tuple[np.ndarray, np.ndarray, float]] | None = None

    # -- time-varying demand ---------------------------------------------------
    def _draw_spikes(self, c: CollectionConfig) -> tuple[Spike, ...]:
        rng = rng_for(self.seed, "spikes", c.id)
        n = rng.poisson(c.spike_rate_per_day * self.scenario.days) if c.spike_rate_per_day > 0 else 0
        days = np.sort(rng.uniform(0, self.scenario.days, n))
        sizes = c.spike_size * rng.exponential(1.0, n)
        return tuple(c.spikes) + tuple(Spike(float(d), float(z)) for d, z in zip(days, sizes))

    def buzz(self, collection_id: str, day: float) -> float:
        """The viral trend level: the sum of past spikes, each decaying."""
        c = self.scenario.collection(collection_id)
        return sum(sp.size * 0.5 ** ((day - sp.day) / c.half_life_days)
                   for sp in self._spikes[c.id] if sp.day <= day)

    def demand(self, c: CollectionConfig, day: float) -> float:
        """Log demand multiplier at a day: seasonal curve or viral spikes."""
        if c.kind == "seasonal":
            to_event = self.scenario.event_day(c) - day
            if to_event > c.ramp_days:
                return c.off_level
            if to_event >= 0:
                # Concave ramp: demand builds early and plateaus towards the event.
                return c.off_level + (c.peak_level - c.off_level) * (1.0 - (to_event / c.ramp_days) ** 2)
            return c.peak_level + (c.off_level - c.peak_level) * min(1.0, -to_event / c.tail_days)
        if c.kind == "viral":
            return math.log1p(self.buzz(c.id, day))
        return 0.0

    def in_window(self, collection_id: str, day: float) -> bool:
        """Is a seasonal collection inside its event window (ramp to tail)?"""
        c = self.scenario.collection(collection_id)
        if c.kind != "seasonal":
            return False
        to_event = self.scenario.event_day(c) - day
        return -c.tail_days <= to_event <= c.ramp_days

    def available(self, day: float) -> tuple[CollectionConfig, ...]:
        return tuple(c for c in self.scenario.collections
                     if c.added_day <= day and (c.retired_day is None or day < c.retired_day))

    # -- requests --------------------------------------------------------------
    def requests(self) -> Iterator[Request]:
        """The request stream: depends only on scenario and seed."""
        s = self.scenario
        rng = rng_for(self.seed, "requests", s.name)
        # Signal errors come from their own stream: the requests stay those of
        # every signal set, so runs with and without a signal compare alike.
        noise_rng = rng_for(self.seed, "signals", s.name)
        pool: list[Customer] = []
        weights = np.array([g.weight for g in s.segments], dtype=float)
        weights /= weights.sum()
        for i in range(self.decisions):
            ts = s.start_ts + (i + rng.uniform()) * self.seconds_per_decision
            day = (ts - s.start_ts) / DAY
            if pool and rng.uniform() < s.returning_share:
                customer = pool[int(rng.integers(len(pool)))]
            else:
                seg = s.segments[int(rng.choice(len(s.segments), p=weights))]
                taste = {t: seg.tastes.get(t, 0.0) + s.taste_sd * float(rng.standard_normal()) for t in self.tags}
                customer = Customer(f"u{len(pool)}", seg, taste, taste_signal={
                    t: v + s.taste_signal_sd * float(noise_rng.standard_normal()) for t, v in taste.items()})
                pool.append(customer)
            returning = customer.visits > 0
            customer.visits += 1
            seg = customer.segment
            names = list(seg.intents)
            p = np.array([seg.intents[n] for n in names], dtype=float)
            intent = self._intents[names[int(rng.choice(len(names), p=p / p.sum()))]]
            present = [k for k, slot in enumerate(s.slots) if k == 0 or rng.uniform() < slot.presence]
            colls = self.available(day)
            slots = tuple(s.slots[k] for k in present)[:len(colls)]  # never more slots than collections
            category = "none"
            if any(x.id == "detail" for x in slots) and s.categories:
                cats = dict(seg.categories or s.categories)
                names = sorted(cats)
                p = np.array([cats[n] for n in names], dtype=float)
                category = names[int(rng.choice(len(names), p=p / p.sum()))]
            noise = rng.standard_normal(len(s.collections))
            buzz_obs = {c.id: self.buzz(c.id, day) * math.exp(0.3 * noise[j])
                        for j, c in enumerate(s.collections) if c.kind == "viral"}
            forecast_err = s.forecast_sd * noise_rng.standard_normal(len(s.collections))
            forecast = {c.id: self.demand(c, day) + float(forecast_err[j])
                        for j, c in enumerate(s.collections) if c.kind == "seasonal"}
            request = Request(i, f"{s.name}-s{self.seed}-{i:07d}", ts, day, customer, returning, intent,
                              category, slots, colls,
                              self._decision_input(ts, day, customer, returning, intent, category, slots, colls,
                                                   buzz_obs, forecast))
            self._current = request
            yield request

    def current(self, event_id: str) -> Request:
        """The request last emitted (what the oracle looks up by event id)."""
        if self._current is None or self._current.event_id != event_id:
            raise KeyError(f"event '{event_id}' is not the current request")
        return self._current

    def _decision_input(self, ts, day, customer, returning, intent, category, slots, colls, buzz_obs,
                        forecast) -> DecisionInput:
        moment = datetime.fromtimestamp(ts, tz=timezone.utc)
        context = (
            FeatureGroup("customer", {"segment": customer.segment.name, "status": "returning" if returning else "new"}),
            FeatureGroup("session", {"intent": intent.name, "category": category}),
            FeatureGroup("time", {"hour": hour_bucket(moment.hour),
                                  "day": "weekend" if moment.weekday() >= 5 else "weekday"}),
        )
        if "taste" in self.scenario.signals:
            context += (FeatureGroup("taste", dict(customer.taste_signal)),)
        candidates = tuple(self.candidate(c, day, buzz_obs.get(c.id), forecast.get(c.id)) for c in colls)
        specs = tuple(SlotSpec(slot.id, (FeatureGroup("slot", {"position": float(k)}),), slot.default_collection)
                      for k, slot in enumerate(slots))
        return DecisionInput(context, specs, candidates)

    def candidate(self, c: CollectionConfig, day: float, buzz: float | None,
                  forecast: float | None = None) -> Candidate:
        """A collection as the front-end describes it: catalog metadata, and in
        ``when`` the signals the scenario's ``signals`` name (see SIGNALS)."""
        meta: dict[str, float | str] = {"kind": c.kind}
        meta.update({f"tag_{t}": 1.0 for t in c.tags})
        meta.update({f"cat_{t}": 1.0 for t in c.categories})
        event_day = self.scenario.event_day(c)
        to_event = None if event_day is None else event_day - day
        signals = self.scenario.signals
        when: dict[str, float | str] = {}
        if "buckets" in signals:
            when["season"] = season_bucket(to_event)
            when["buzz"] = buzz_bucket(buzz) if buzz is not None else "none"
            if to_event is not None:
                when["proximity"] = event_proximity(to_event)
        if "forecast" in signals and forecast is not None:
            when["forecast"] = forecast
        if "buzz" in signals and buzz is not None:
            when["buzz_score"] = math.log1p(buzz)
        if "calendar" in signals and to_event is not None:
            when.update(days_to_event_features(to_event))
        groups = (FeatureGroup("meta", meta),) + ((FeatureGroup("when", when),) if when else ())
        return Candidate(c.id, groups)

    # -- truth -----------------------------------------------------------------
    def _terms(self, r: Request) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-collection logit terms common to every slot, purchase
        probabilities, and the time-of-day effect; cached for the last request
        (the oracle, the record and the outcomes all ask about it)."""
        if self._cache is not None and self._cache[0] is r:
            return self._cache[1]
        s = self.scenario
        common, buy = np.empty(len(r.collections)), np.empty(len(r.collections))
        for j, c in enumerate(r.collections):
            affinity = sum(r.customer.taste.get(t, 0.0) for t in c.tags) / math.sqrt(max(1, len(c.tags)))
            boost = r.intent.boost if set(r.intent.tags) & set(c.tags) else 0.0
            common[j] = c.appeal + affinity + self.demand(c, r.day) + boost
            buy[j] = min(0.95, c.purchase_rate * r.customer.segment.purchase_multiplier * math.exp(0.3 * affinity))
        moment = datetime.fromtimestamp(r.timestamp, tz=timezone.utc)
        when = s.hour_effects.get(hour_bucket(moment.hour), 0.0) + (s.weekend_effect if moment.weekday() >= 5 else 0.0)
        self._cache = (r, (common, buy, when))
        return common, buy, when

    def _probabilities(self, r: Request, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Click probability of each collection in slot k, and purchase probability given a click."""
        common, buy, when = self._terms(r)
        slot = r.slots[k]
        score = common + _logit(slot.base_rate) + when
        score += np.array([slot.kind_effects.get(c.kind, 0.0)
                           + (slot.category_effect if r.category in c.categories else 0.0)
                           for c in r.collections])
        p_click = 1.0 / (1.0 + np.exp(-score)) * self.scenario.position_decay ** k
        return p_click, buy

    def expected_reward(self, request: Request, slot: int | str, collection: int | str) -> float:
        """Exact expected joined reward of showing a collection in a slot
        (late and lost rewards count as the default)."""
        k = slot if isinstance(slot, int) else [x.id for x in request.slots].index(slot)
        a = collection if isinstance(collection, int) else [c.id for c in request.collections].index(collection)
        return float(self._slot_values(request, k)[a])

    def _slot_values(self, r: Request, k: int) -> np.ndarray:
        rw = self.scenario.reward
        p_click, p_buy = self._probabilities(r, k)
        kept = 1.0 - rw.lost_share
        slot_id = r.slots[k].id
        seen = kept * p_click * self._click_in[slot_id]
        bought = kept * p_click * p_buy * self._purchase_in[slot_id]
        return seen * rw.click_value + bought * rw.purchase_value + (1.0 - seen) * rw.default

    def expected_matrix(self, request: Request) -> np.ndarray:
        """Expected reward of every (slot, candidate) pair: shape (slots, candidates)."""
        return np.stack([self._slot_values(request, k) for k in range(len(request.slots))])

    def outcome(self, request: Request, k: int, collection: int) -> Outcome:
        """Sample what showing a collection in slot k leads to. Draws come in a
        fixed order from an (event, slot) stream: common random numbers, so
        two policies choosing alike see alike."""
        rng = rng_for(self.seed, "outcome", request.event_id, request.slots[k].id)
        u_click, u_buy, u_lost = rng.uniform(size=3)
        click_h = request.slots[k].click_delay.sample_hours(rng)
        buy_h = self.scenario.reward.purchase_delay.sample_hours(rng)
        p_click, p_buy = self._probabilities(request, k)
        clicked = bool(u_click < p_click[collection])
        purchased = clicked and bool(u_buy < p_buy[collection])
        rewards: list[tuple[float, float]] = []
        if clicked and u_lost >= self.scenario.reward.lost_share:
            rw = self.scenario.reward
            rewards.append((request.timestamp + click_h * HOUR, rw.click_value))
            if purchased:
                rewards.append((request.timestamp + (click_h + buy_h) * HOUR, rw.purchase_value))
        return Outcome(clicked, purchased, tuple(rewards))


def _convolved_cdf(first: Delay, second: Delay, hours: float, steps: int = 4000) -> float:
    """P(first + second <= hours), by integrating first's density against second's CDF."""
    grid = np.linspace(0.0, hours, steps + 1)
    mass = np.diff(first.cdf(grid))  # P(first in each cell)
    mid = (grid[:-1] + grid[1:]) / 2
    return float(np.sum(mass * second.cdf(hours - mid)))
