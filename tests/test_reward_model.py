"""The replay's reward model: invariant to how a log happens to be listed
(candidate order, row order within a timestamp, collection ids), its quality
reported, and DR unbiased over many seeds even when the model is wrong."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from replay_world import conditional_value, make_events, uniform_policy

from bandit.logformat.events import DecisionEvent, JoinedEvent
from bandit.features import Candidate, FeatureGroup, SlotSpec
from bandit.decision import DecisionInput, SlotChoice
from simulator.replay.estimation import evaluate_policy
from simulator.replay.logarrays import ReplayLog
from simulator.replay.options import EstimationConfig, ReplayOptions
from simulator.replay.pipeline import run_replay
from simulator.replay.reward_model import fit_reward_model, reward_model

N_COLLECTIONS = 60  # more than the old per-collection model's 40 buckets
SEGMENTS = ("a", "b", "c")
SLOTS = ("top", "side")


def _click(seg: int, k: int, a: int) -> float:
    return 0.05 + 0.5 * ((a + seg) % 7 == 0) + 0.1 * (k == 0) + 0.002 * a


def wide_events(n: int, seed: int, same_timestamp: int = 10, collections: int = N_COLLECTIONS) -> list[JoinedEvent]:
    """``collections`` collections, every one offered in every event (equally
    frequent), two slots, a uniform logger; ``same_timestamp`` events share a
    timestamp."""
    rng = np.random.default_rng(seed)
    cands = tuple(Candidate(f"c{j}", (FeatureGroup("kind", {"k": "even" if j % 2 == 0 else "odd"}),))
                  for j in range(collections))
    events = []
    for i in range(n):
        seg = int(rng.integers(len(SEGMENTS)))
        inp = DecisionInput((FeatureGroup("customer", {"segment": SEGMENTS[seg], "age": float(rng.integers(18, 70))}),),
                            tuple(SlotSpec(s) for s in SLOTS), cands)
        used: list[int] = []
        choices, rewards = [], []
        for k, slot in enumerate(SLOTS):
            avail = [a for a in range(collections) if a not in used]
            a = int(rng.choice(avail))
            p = 1.0 / len(avail)
            choices.append(SlotChoice(slot, a, p, tuple((b, p) for b in avail)))
            rewards.append(float(rng.random() < _click(seg, k, a)))
            used.append(a)
        d = DecisionEvent(f"e{i:05d}", 1.7e9 + i // same_timestamp, "default", "online", "1", inp, tuple(choices))
        events.append(JoinedEvent(d, tuple(rewards), (True,) * len(SLOTS), tuple((r,) for r in rewards)))
    return events


def relisted(events: list[JoinedEvent], seed: int) -> list[JoinedEvent]:
    """The same log listed differently: each event's candidates in a random
    order, collection ids renamed (order of names reversed), and events that
    share a timestamp shuffled among themselves."""
    rng = np.random.default_rng(seed)
    rename = {f"c{j}": f"item-{N_COLLECTIONS - j:03d}" for j in range(N_COLLECTIONS)}
    out = []
    for e in events:
        d = e.decision
        perm = rng.permutation(len(d.inp.candidates))  # new position j holds old candidate perm[j]
        new = np.argsort(perm)
        cands = tuple(replace(d.inp.candidates[o], id=rename.get(d.inp.candidates[o].id, d.inp.candidates[o].id))
                      for o in perm)
        choices = tuple(replace(c, action=int(new[c.action]),
                                ranking=tuple((int(new[a]), p) for a, p in c.ranking)) for c in d.choices)
        eligible = tuple(None if el is None else tuple(int(new[a]) for a in el) for el in d.inp.eligible)
        out.append(replace(e, decision=replace(d, inp=replace(d.inp, candidates=cands, eligible=eligible),
                                               choices=choices)))
    groups: dict[float, list[JoinedEvent]] = {}
    for e in out:
        groups.setdefault(e.decision.timestamp, []).append(e)
    shuffled = []
    for group in groups.values():
        shuffled += [group[j] for j in rng.permutation(len(group))]
    return shuffled


def _by_event_and_id(log: ReplayLog, q: np.ndarray) -> dict[tuple[str, int, str], float]:
    """q keyed by (event id, slot, collection's original id) for comparison."""
    back = {f"item-{N_COLLECTIONS - j:03d}": f"c{j}" for j in range(N_COLLECTIONS)}
    out = {}
    for i, e in enumerate(log.events):
        for k, allowed in enumerate(log.allowed[i]):
            for a in allowed:
                cid = e.decision.inp.candidates[a].id
                out[(e.decision.event_id, k, back.get(cid, cid))] = float(q[i, k, a])
    return out


def test_reward_model_and_dm_dr_do_not_depend_on_how_the_log_is_listed():
    events = wide_events(1500, seed=4)
    log, other = ReplayLog.from_events(events), ReplayLog.from_events(relisted(events, seed=9))
    q, q_other = reward_model(log, seed=1), reward_model(other, seed=1)
    a, b = _by_event_and_id(log, q), _by_event_and_id(other, q_other)
    assert a.keys() == b.keys()
    worst = max(abs(a[key] - b[key]) for key in a)
    # Relisting changes only the order of the fit's sums: rounding, which is 1.7e-12 on this
    # machine's BLAS (the bound was 1e-12, passed on others); a dependence on order is not rounding.
    assert worst < 1e-10, worst
    uniform = lambda lg: np.where(lg.mask, 1.0, 0.0) / lg.mask.sum(axis=-1, keepdims=True)
    cfg = EstimationConfig(estimators=("dm", "dr"), slate=(), intervals=("normal",))
    for est in ("dm", "dr"):
        values = [next(e["value"] for e in evaluate_policy(lg, uniform(lg), qq, cfg)["estimates"]
                       if e["estimator"] == est and e["scope"] == "page") for lg, qq in ((log, q), (other, q_other))]
        assert abs(values[0] - values[1]) < 1e-10, (est, values)


def _page(result: dict, estimator: str) -> dict:
    return next(e for e in result["estimates"] if e["estimator"] == estimator and e["scope"] == "page")


def _uniform(log: ReplayLog) -> np.ndarray:
    return np.where(log.mask, 1.0, 0.0) / log.mask.sum(axis=-1, keepdims=True)


def test_dr_stays_unbiased_when_the_reward_model_is_misspecified():
    """The reward model never sees the segment (which decides the click rate
    and the logger's choice): DM is biased, cross-fitted DR is not."""
    truth = conditional_value(uniform_policy)
    cfg = EstimationConfig(estimators=("dm", "dr"), slate=(), intervals=())
    dm, dr = [], []
    for seed in range(150):
        events = [replace(e, decision=replace(e.decision, inp=replace(e.decision.inp,
                                                                      context=e.decision.inp.context[1:])))
                  for e in make_events(300, seed=1000 + seed)]
        log = ReplayLog.from_events(events)
        result = evaluate_policy(log, _uniform(log), reward_model(log, seed=seed), cfg)
        dm.append(_page(result, "dm")["value"])
        dr.append(_page(result, "dr")["value"])
    dm_a, dr_a = np.array(dm), np.array(dr)
    se = lambda x: x.std(ddof=1) / np.sqrt(x.size)
    assert abs(dr_a.mean() - truth) < 3 * se(dr_a), (dr_a.mean(), truth, se(dr_a))
    assert abs(dm_a.mean() - truth) > 5 * se(dm_a), (dm_a.mean(), truth, se(dm_a))  # the model really is wrong


def test_reward_model_quality_is_reported_against_a_constant(tmp_path):
    from replay_world import write_log

    path = write_log(tmp_path / "log.dsjson", make_events(1500, seed=3))
    results = run_replay([path], ReplayOptions(policies=("uniform",), estimation=EstimationConfig(
        estimators=("dm",), slate=(), intervals=("normal",))))
    quality = results["reward_model"]
    assert quality["rows"] == 3000 and quality["folds"] == 5
    # segment x slot x collection decides the click rate: the model beats the mean clearly
    assert quality["heldout_mse"] < 0.9 * quality["constant_mse"], quality
    assert quality["mse_skill"] > 0.1
    # on a log whose rewards are pure noise the model cannot beat the constant by much
    noise = [replace(e, rewards=tuple(float(x) for x in np.random.default_rng(i).random(2) < 0.3))
             for i, e in enumerate(make_events(1500, seed=3))]
    flat = fit_reward_model(ReplayLog.from_events(noise)).quality
    assert flat["mse_skill"] < 0.01, flat


def _reference_q(events: list[JoinedEvent], log: ReplayLog, n_folds: int, seed: int, alpha: float = 1.0) -> np.ndarray:
    """q_hat from the model's definition, written out densely from the events:
    x = [1|context] (x) [1|slot] (x) [1|collection], numeric tokens over their
    root mean square, ridge with the intercept free, cross-fitted by the
    decisions' digests; (n, J, A) in ``log``'s order."""
    from bandit.features import context_spaces, slot_tokens, tokens
    from bandit.ope.reward_model import fold_of

    by_id = {e.decision.event_id: e for e in events}
    ordered = [by_id[i] for i in log.event_ids]
    ctx = [tokens(context_spaces(e.decision.inp.context)) for e in ordered]
    slots = [[slot_tokens(e.decision.inp.slots[j], c.slot_id, j) for j, c in enumerate(e.decision.choices)]
             for e in ordered]
    cands = [[tokens(c.spaces()) for c in e.decision.inp.candidates] for e in ordered]

    def rms(sets):
        sq, cnt = {}, {}
        for toks in sets:
            for t, v in toks.items():
                if "=" not in t.partition(":")[2]:
                    sq[t], cnt[t] = sq.get(t, 0) + v * v, cnt.get(t, 0) + 1
        return {t: np.sqrt(sq[t] / cnt[t]) for t in sq if sq[t] > 0}

    distinct = {repr(sorted(t.items())): t for row in cands for t in row}
    scales = rms(ctx), rms([s for row in slots for s in row]), rms(list(distinct.values()))
    vocab = [sorted({t for toks in sets for t in toks}) for sets in
             (ctx, [s for row in slots for s in row], list(distinct.values()))]

    def vec(toks, which):
        out = np.zeros(1 + len(vocab[which]))
        out[0] = 1
        for t, v in toks.items():
            out[1 + vocab[which].index(t)] = v / scales[which].get(t, 1.0)
        return out

    def x(i, j, a):
        return np.kron(np.kron(vec(ctx[i], 0), vec(slots[i][j], 1)), vec(cands[i][a], 2))

    folds = fold_of(log.features().key, n_folds, seed)  # the decisions' digests: the folds must agree
    rows = [(i, j) for i, e in enumerate(ordered) for j in range(len(e.decision.choices))]
    X = np.array([x(i, j, ordered[i].decision.choices[j].action) for i, j in rows])
    y = np.array([ordered[i].rewards[j] for i, j in rows])
    fold = folds[[i for i, _ in rows]]
    q = np.zeros((len(ordered), 2, len(cands[0])))
    for f in range(n_folds):
        tr = fold != f
        pen = np.full(X.shape[1], alpha)
        pen[0] = 1e-9 * tr.sum()
        beta = np.linalg.solve(X[tr].T @ X[tr] + np.diag(pen), X[tr].T @ y[tr])
        for (i, j) in [r for r, ff in zip(rows, fold) if ff == f]:
            q[i, j] = np.clip([x(i, j, a) @ beta for a in range(len(cands[i]))], y[tr].min(), y[tr].max())
    return q


def test_reward_model_equals_its_definition_written_out_densely():
    """An independent dense computation from the events (features, scales,
    Kronecker design, ridge, folds) gives the same q_hat as both of the
    model's paths (grouped sufficient statistics and row by row)."""
    events = wide_events(400, seed=11, collections=8)
    _both_paths_are_the_definition(events, seed=3)


def _both_paths_are_the_definition(events: list[JoinedEvent], seed: int) -> None:
    import bandit.ope.reward_model as rm

    log = ReplayLog.from_events(events)
    action, reward, present = log.by_choice()
    want = _reference_q(events, log, n_folds=5, seed=seed)
    for grouped in (True, False):
        fit = rm.fit_reward_model(log.features(), action, reward, present, n_folds=5, seed=seed, grouped=grouped)
        assert fit.quality["path"] == ("grouped" if grouped else "row by row")
        assert np.abs(fit.q - want).max() < 1e-9, (grouped, np.abs(fit.q - want).max())


def test_reward_model_with_per_request_collection_features_equals_its_definition():
    """Collections that carry a per-request signal (a forecast, as the README
    asks callers to send) make every listed candidate distinct: each row is
    scored on its own candidates, and both paths still equal the dense
    definition."""
    base = wide_events(300, seed=5, collections=6)
    rng = np.random.default_rng(8)
    events = []
    for e in base:
        inp = e.decision.inp
        cands = tuple(replace(c, groups=c.groups + (FeatureGroup("signal", {"forecast": float(rng.normal(1, 0.5))}),))
                      for c in inp.candidates)
        events.append(replace(e, decision=replace(e.decision, inp=replace(inp, candidates=cands))))
    log = ReplayLog.from_events(events)
    assert len(log.features().candidates) == 300 * 6  # every listing its own
    _both_paths_are_the_definition(events, seed=2)
    # left to choose, the model builds such a log row by row (a Gram matrix per
    # one-row pair would cost more than it saves), a catalog log by groups
    assert fit_reward_model(log).quality["path"] == "row by row"
    assert fit_reward_model(ReplayLog.from_events(base)).quality["path"] == "grouped"
