"""The joined log's columnar copy: a replay of the DSJSON log and of its
columnar copy give the same estimates (to 1e-12, all seven estimators, per
slot and page), a copy that no longer matches its log is not used, and the
built-in targets computed as arrays equal the event-by-event targets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bandit.logformat import columnar
from simulator.replay.logarrays import ReplayLog, load_log
from simulator.replay.options import EstimationConfig, ReplayOptions
from simulator.replay.pipeline import run_replay
from simulator.replay.progressive import builtin_distributions, target_distributions
from simulator.replay.targets import make_target, parse_policy
from simulator.specs import TargetError

from replay_world import fixed_target, make_events, write_log, write_probs

ALL = EstimationConfig(estimators=("dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"), slate=("sips",),
                       intervals=("normal",), seed=5)


def _numbers(results: dict) -> list[tuple[str, str, str, float]]:
    out = []
    for policy in results["policies"]:
        for e in policy["estimates"]:
            if "value" in e:
                out.append((policy["name"], e["estimator"], e["scope"], e["value"]))
                out += [(policy["name"], e["estimator"], e["scope"] + f":{end}", e["intervals"]["normal"][end])
                        for end in ("lower", "upper") if "lower" in e["intervals"]["normal"]]
    return out


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    root = tmp_path_factory.mktemp("columnar")
    events = make_events(3000, seed=4)
    return write_log(root / "log.dsjson", events), write_probs(root / "fixed.jsonl", events, fixed_target), events


def test_dsjson_and_columnar_copy_give_identical_estimates(logged: tuple[Path, Path, list]) -> None:
    log_path, probs, _ = logged
    options = ReplayOptions(policies=("uniform", "logged", "baseline", f"probs:{probs}"), estimation=ALL)
    columnar.copy_path(log_path).unlink(missing_ok=True)
    from_lines = run_replay([log_path], options)  # reads the lines, writes the copy
    assert columnar.current_copy(log_path) is not None
    from_copy = run_replay([log_path], options)  # reads the copy
    a, b = _numbers(from_lines), _numbers(from_copy)
    assert [x[:3] for x in a] == [x[:3] for x in b] and len(a) > 100
    assert max(abs(x[3] - y[3]) for x, y in zip(a, b)) <= 1e-12
    assert from_lines["log"] == from_copy["log"]


def test_a_stale_copy_is_not_used(logged: tuple[Path, Path, list], tmp_path: Path) -> None:
    log_path, _, events = logged
    mine = write_log(tmp_path / "log.dsjson", events[:500])
    first = load_log([mine])
    assert first.n == 500 and columnar.current_copy(mine) is not None
    write_log(mine, events[:700])  # the log grew: its copy describes the old one
    os.utime(mine, ns=(1, 1))
    assert columnar.current_copy(mine) is None
    assert load_log([mine]).n == 700
    assert columnar.current_copy(mine) is not None  # rewritten


def test_builtin_targets_as_arrays_equal_the_event_by_event_targets(logged: tuple[Path, Path, list]) -> None:
    _, _, events = logged
    log = ReplayLog.from_events(events)
    for name in ("uniform", "logged", "baseline"):
        spec = parse_policy(name)
        fast = builtin_distributions(log, spec)
        slow = target_distributions(log, make_target(spec))
        assert fast is not None and np.array_equal(fast, slow), name


def test_external_probabilities_as_arrays_equal_the_event_by_event_target(logged: tuple[Path, Path, list]) -> None:
    _, probs, events = logged
    log = ReplayLog.from_events(events)
    spec = parse_policy(f"probs:{probs}")
    fast = builtin_distributions(log, spec)
    assert fast is not None
    np.testing.assert_allclose(fast, target_distributions(log, make_target(spec)), rtol=0, atol=1e-15)


def test_a_faulty_probabilities_file_still_names_file_and_line(logged: tuple[Path, Path, list],
                                                               tmp_path: Path) -> None:
    _, probs, events = logged
    lines = probs.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:7] + [lines[7].replace("0.", "-0.", 1)] + lines[8:]) + "\n")
    log = ReplayLog.from_events(events)
    assert builtin_distributions(log, parse_policy(f"probs:{bad}")) is None  # not plainly right
    with pytest.raises(TargetError, match=f"{bad}:8"):
        target_distributions(log, make_target(parse_policy(f"probs:{bad}")))


def test_events_are_read_lazily_and_match(logged: tuple[Path, Path, list]) -> None:
    log_path, _, events = logged
    run_replay([log_path], ReplayOptions(policies=("uniform",), estimation=ALL))  # the copy exists now
    log = load_log([log_path])
    assert log._events is None  # nothing needed the features yet
    assert [e.decision.event_id for e in log.events] == list(log.event_ids)
    assert log.n == len(events)


def test_logged_target_of_a_chosen_only_log_as_arrays(tmp_path: Path) -> None:
    """An imported single-choice log (only the chosen propensity): the array
    ``logged`` target equals the event-by-event stand-in, positions and all."""
    from bandit.logformat.tabular import build_mapping, import_log

    rng = np.random.default_rng(2)
    rows = [f"{rng.integers(0, 3)},{'abcd'[rng.integers(0, 4)]},{rng.uniform(0.1, 1):.3f},{rng.integers(0, 2)},"
            f"{1 + rng.integers(0, 3)}" for _ in range(400)]
    src = tmp_path / "log.csv"
    src.write_text("\n".join(["x,item,p,click,pos", *rows]) + "\n")
    out = tmp_path / "log.json"
    import_log(src, out, build_mapping(None, action="item", reward="click", propensity="p", context="x", slot="pos"))
    log = load_log([out])
    assert log.chosen_only.all() and log.shape[1] == 3
    for name in ("logged", "uniform", "baseline"):
        spec = parse_policy(name)
        assert np.array_equal(builtin_distributions(log, spec), target_distributions(log, make_target(spec))), name
