"""Offline replay against exact ground truth, progressive validation, refusals,
target parsing and validation. No mocks: real logs on disk, real VW."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from bandit.logformat.events import JoinedEvent
from bandit.policy import Policy
from bandit.vwargs import LearningSettings
from simulator.replay.options import EstimationConfig, ReplayOptions
from simulator.replay.logarrays import ReplayLog, load_log
from simulator.replay.pipeline import run_replay
from simulator.replay.progressive import target_distributions
from simulator.commands.replay import replay
from simulator.specs import TargetError, settings_label
from simulator.replay.targets import make_target, parse_policy

from replay_world import (
    conditional_value,
    fixed_target,
    joint_value,
    make_events,
    uniform_policy,
    write_log,
    write_probs,
)

FAST = EstimationConfig(estimators=("dm", "ips", "snips", "dr"), slate=("sips",), intervals=("normal",), seed=3)


def _entry(results: dict, policy: str, estimator: str, scope: str = "page") -> dict:
    pol = next(p for p in results["policies"] if p["name"] == policy)
    return next(e for e in pol["estimates"] if e["estimator"] == estimator and e["scope"] == scope)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(replay)
    app.command()(lambda: None)  # a second command keeps "replay" a subcommand, as in `placement`
    return app


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    events = make_events(4000, seed=11)
    log_path = write_log(root / "log.dsjson", events)
    probs = write_probs(root / "fixed.jsonl", events, fixed_target)
    return root, events, log_path, probs


def test_uniform_and_external_targets_recover_the_exact_truth(world):
    root, events, log_path, probs = world
    results = run_replay([log_path], ReplayOptions(policies=("uniform", f"probs:{probs}"), estimation=FAST))
    for name, target in (("uniform", uniform_policy), ("probs:fixed.jsonl", fixed_target)):
        truth = conditional_value(target)  # what the slot-wise page estimators estimate
        for est in ("ips", "snips", "dr"):
            e = _entry(results, name, est)
            assert abs(e["value"] - truth) < 3 * e["se"], (name, est, e["value"], truth, e["se"])
            ci = e["intervals"]["normal"]
            assert ci["lower"] - 2 * e["se"] < truth < ci["upper"] + 2 * e["se"]
        sips = _entry(results, name, "sips")  # the joint page value, exact for slot-conditional probabilities
        assert abs(sips["value"] - joint_value(target)) < 3 * sips["se"]
    # the fixed target is clearly better than uniform, and the estimates say so
    assert _entry(results, "probs:fixed.jsonl", "dr")["intervals"]["normal"]["lower"] > \
        _entry(results, "uniform", "dr")["intervals"]["normal"]["upper"]


def test_logged_policy_ips_and_snips_equal_the_empirical_mean(world):
    root, events, log_path, probs = world
    results = run_replay([log_path], ReplayOptions(policies=("logged",), estimation=FAST))
    page_mean = np.mean([sum(e.rewards) for e in events])
    assert _entry(results, "logged", "ips")["value"] == pytest.approx(page_mean, abs=1e-12)
    assert _entry(results, "logged", "snips")["value"] == pytest.approx(page_mean, abs=1e-12)
    assert _entry(results, "logged", "sips")["value"] == pytest.approx(page_mean, abs=1e-12)
    for k, slot in enumerate(("top", "side")):
        slot_mean = np.mean([e.rewards[k] for e in events])
        assert _entry(results, "logged", "ips", f"slot:{slot}")["value"] == pytest.approx(slot_mean, abs=1e-12)
    diag = next(p for p in results["policies"] if p["name"] == "logged")["diagnostics"]
    assert diag["page_joint"]["effective_sample_size"] == pytest.approx(len(events))


def _with_reward(event: JoinedEvent, rewards: tuple[float, ...]) -> JoinedEvent:
    return replace(event, rewards=rewards)


def test_progressive_validation_never_peeks():
    events = make_events(240, seed=5)
    log = ReplayLog.from_events(events)
    spec = parse_policy("vw:algorithm=epsilon,epsilon=0.1,learning_rate=0.5")

    def run(evs: list[JoinedEvent]) -> np.ndarray:
        target = make_target(spec)
        try:
            return target_distributions(ReplayLog.from_events(evs), target)
        finally:
            target.close()

    base = run(events)
    t = 150
    flipped = list(events)
    flipped[t] = _with_reward(events[t], tuple(5.0 - r for r in events[t].rewards))
    changed = run(flipped)
    # Event t is valued before its reward is learned: nothing up to t may move...
    np.testing.assert_array_equal(base[: t + 1], changed[: t + 1])
    # ...while what comes after does (the target really learns from the log).
    assert not np.allclose(base[t + 1 :], changed[t + 1 :])
    last = list(events)
    last[-1] = _with_reward(events[-1], (9.0, -9.0))
    np.testing.assert_array_equal(base, run(last))
    # Deterministic: the same log gives the same distributions.
    np.testing.assert_array_equal(base, run(events))
    assert log.n == 240


def test_zero_or_missing_propensity_is_a_refusal_not_a_number(tmp_path):
    events = make_events(300, seed=2)
    d = events[7].decision
    bad = replace(d.choices[0], probability=0.0)
    events[7] = replace(events[7], decision=replace(d, choices=(bad,) + d.choices[1:]))
    path = write_log(tmp_path / "zero.dsjson", events)
    results = run_replay([path], ReplayOptions(policies=("uniform",), estimation=FAST))
    for est in ("ips", "snips", "dr", "sips"):
        e = _entry(results, "uniform", est)
        assert e["refused"] == "zero_pscore" and "value" not in e, e
    assert "value" in _entry(results, "uniform", "dm")  # DM needs no propensities
    diag = next(p for p in results["policies"] if p["name"] == "uniform")["diagnostics"]
    assert diag["slots"]["top"]["refused"] == "zero_pscore"

    # cb layout: the chosen action has no logged probability -> missing (NaN) propensity
    cb = tmp_path / "cb.dsjson"
    lines = []
    for i in range(50):
        obj = {"EventId": f"cb{i}", "Timestamp": "2024-01-01T00:00:00.000Z", "_label_cost": -float(i % 2),
               "_labelIndex": i % 3, "a": [1, 2, 3], "p": [0.5, 0.3, 0.2],
               "c": {"C.user": {"segment=a": 1}, "_multi": [{"A": {f"id=c{j}": 1}} for j in range(3)]}}
        if i == 4:
            obj["a"], obj["p"] = [2, 3], [0.5, 0.5]  # chosen action 1 not among the logged ones
            obj["_labelIndex"] = 0
        lines.append(json.dumps(obj))
    cb.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cb.json"
    res = CliRunner().invoke(_app(), ["replay", str(cb), "-p", "uniform", "-e", "ips,snips", "--slate", "none",
                                      "--interval", "normal", "-q", "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert _entry(saved, "uniform", "ips")["refused"] == "nan_pscore"


def test_policy_strings_parse_and_fail_clearly(tmp_path):
    spec = parse_policy("vw:algorithm=epsilon,epsilon=0.1,learning_rate=0.3,interactions=CA+SA")
    assert spec.settings.exploration.epsilon == 0.1 and spec.settings.interactions == ("CA", "SA")
    assert parse_policy(spec.label).settings == spec.settings  # labels parse back
    assert parse_policy("vw").settings == LearningSettings()
    assert settings_label(LearningSettings()).startswith("vw:algorithm=squarecb")
    for bad, words in [
        ("bogus", "unknown kind"),
        ("vw:foo=1", "unknown setting 'foo'"),
        ("vw:epsilon=lots", "not a float"),
        ("vw:algorithm=magic", "not one of"),
        ("vw:epsilon=2", "epsilon=2.0 is outside"),
        ("vw:interactions=XY", "interaction 'XY'"),
        ("uniform:3", "takes no arguments"),
        (f"model:{tmp_path}", "no model directory"),
        (f"probs:{tmp_path / 'nope.jsonl'}", "does not exist"),
    ]:
        with pytest.raises(TargetError, match=words):
            parse_policy(bad)


def test_saved_model_target(tmp_path, world):
    root, events, log_path, probs = world
    models = tmp_path / "data" / "models" / "default"
    models.mkdir(parents=True)
    policy = Policy(LearningSettings())
    for e in events[:500]:
        policy.learn(e.decision.inp, e.decision.choices, e.rewards)
    policy.save(models / "v000003.vw")
    policy.close()
    (models / "CURRENT").write_text("3")
    spec = parse_policy(f"model:{tmp_path / 'data'}")
    assert spec.label == "model:default:v3"
    with pytest.raises(TargetError, match="kept: v000003"):
        parse_policy(f"model:{tmp_path / 'data'}:default:7")
    small = write_log(tmp_path / "small.dsjson", events[:400])
    results = run_replay([small], ReplayOptions(policies=(f"model:{tmp_path / 'data'}:default:3", "uniform"),
                                                estimation=FAST))
    assert _entry(results, "model:default:v3", "dr")["value"] > _entry(results, "uniform", "dr")["value"]


def test_external_probabilities_are_validated_with_file_and_line(tmp_path, world):
    root, events, log_path, _ = world
    rows = [{"event_id": events[0].decision.event_id, "slot_id": "top", "probabilities": {"c0": 0.5, "c1": 0.4}}]
    bad_sum = tmp_path / "sum.jsonl"
    bad_sum.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = CliRunner().invoke(_app(), ["replay", str(log_path), "-p", f"probs:{bad_sum}", "-q"])
    assert res.exit_code == 2
    assert f"{bad_sum}:1: probabilities sum to 0.9" in res.output
    unknown = tmp_path / "unknown.jsonl"
    rows = [{"event_id": e.decision.event_id, "slot_id": c.slot_id, "probabilities": {"c0": 1.0}}
            for e in events[:1] for c in e.decision.choices]
    rows[1]["probabilities"] = {"c9": 1.0}
    unknown.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    small = write_log(tmp_path / "one.dsjson", events[:1])
    with pytest.raises(TargetError, match=r"unknown.jsonl:2: collection 'c9' is not a candidate"):
        run_replay([small], ReplayOptions(policies=(f"probs:{unknown}",), estimation=FAST))
    res = CliRunner().invoke(_app(), ["replay", str(small), "-p", f"probs:{unknown}", "-q"])
    assert res.exit_code == 2 and "unknown.jsonl:2" in res.output
    not_json = tmp_path / "broken.jsonl"
    not_json.write_text('{"event_id": 1}\n{oops\n')
    res = CliRunner().invoke(_app(), ["replay", str(small), "-p", f"probs:{not_json}", "-q"])
    assert res.exit_code == 2 and "broken.jsonl:1: needs event_id" in res.output


def test_cli_bad_input_exits_2_naming_the_problem(tmp_path, world):
    root, events, log_path, _ = world
    broken = tmp_path / "broken.dsjson"
    broken.write_text(log_path.read_text().splitlines()[0] + '\n{"x": 1}\n' + log_path.read_text().splitlines()[1] + "\n")
    for args, words in [
        ([str(broken)], f"{broken}:2: not a joined DSJSON event"),
        ([str(tmp_path / "missing.dsjson")], "no such file"),
        ([str(log_path), "-p", "vw:epsilon=x"], "epsilon=x is not a float"),
        ([str(log_path), "-e", "magic"], "unknown estimator 'magic'"),
        ([str(log_path), "--interval", "wide"], "unknown interval 'wide'"),
        ([str(log_path), "--current", "learning_rate=-1"], "learning_rate=-1.0 is outside"),
    ]:
        res = CliRunner().invoke(_app(), ["replay", *args, "-q"])
        assert res.exit_code == 2, (args, res.output)
        assert words in res.output, (args, res.output)


def test_torn_lines_in_the_middle_of_a_file_are_skipped_and_reported(tmp_path, world):
    """A kill during a large joined write leaves a torn line that the server
    seals and appends after: replay skips it (and any other) and says where."""
    _, events, log_path, _ = world
    lines = log_path.read_text().splitlines()[:300]
    lines[100] = lines[100][: len(lines[100]) // 2]  # line 101 cut mid-write
    lines[200] = lines[200][:7]
    torn = tmp_path / "torn.dsjson"
    torn.write_text("\n".join(lines) + "\n")
    log = load_log([torn])
    assert log.n == 298
    assert log.skipped.where == [(str(torn), 101), (str(torn), 201)]
    res = CliRunner().invoke(_app(), ["replay", str(torn), "-p", "uniform", "-e", "ips", "--slate", "none"])
    assert res.exit_code == 0, res.output
    assert "2 torn line(s) skipped" in res.output and f"{torn}:101" in " ".join(res.output.split())


def test_gzip_and_several_files_are_one_log_in_time_order(tmp_path):
    import gzip

    events = make_events(60, seed=9)
    write_log(tmp_path / "b.dsjson", events[30:])
    plain = write_log(tmp_path / "a.dsjson", events[:30])
    with gzip.open(tmp_path / "a.dsjson.gz", "wt") as fh:
        fh.write(plain.read_text())
    plain.unlink()
    log = load_log([tmp_path])
    assert [e.decision.event_id for e in log.events] == [e.decision.event_id for e in events]
    assert log.shape == (60, 2, 4)
    assert log.mask[:, 1].sum(axis=1).tolist() == [3] * 60  # slot 2 cannot repeat slot 1's collection


def test_the_reward_model_is_fitted_only_when_an_estimator_needs_it(tmp_path):
    """IPS and SNIPS never read q_hat: asking only for them skips the fit and
    gives the same numbers as when DM and DR are asked for too."""
    log = ReplayLog.from_events(make_events(400, seed=8))
    ips_only = EstimationConfig(estimators=("ips", "snips"), slate=(), intervals=("normal",), seed=3)
    light = run_replay(log, ReplayOptions(policies=("uniform", "logged"), estimation=ips_only))
    full = run_replay(log, ReplayOptions(policies=("uniform", "logged"), estimation=FAST))
    assert light["reward_model"] is None and full["reward_model"]["heldout_mse"] >= 0
    for policy in ("uniform", "logged"):
        for name in ("ips", "snips"):
            assert _entry(light, policy, name)["value"] == _entry(full, policy, name)["value"]
