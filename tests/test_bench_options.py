"""The benchmarks' option parsing that BENCHMARKS.md's commands rely on."""

from __future__ import annotations

import argparse

import pytest

from bench.fill_ab import _variant
from bench.quality import SWEEP, _known, _policy_names, peers
from bench.stability import _seed_list

KNOWN = {**peers(), **SWEEP}


def test_policies_keep_the_commas_of_an_engine_spec_and_of_a_sweep_name():
    names = _policy_names("engine,vw:gamma_scale=0.7,gamma_exponent=0.8,lints,engine:squarecb,gamma=100,uniform",
                          KNOWN)
    assert names == ["engine", "vw:gamma_scale=0.7,gamma_exponent=0.8", "lints", "engine:squarecb,gamma=100",
                     "uniform"]
    assert [_known(KNOWN, n) for n in names][1] == "vw:gamma_scale=0.7,gamma_exponent=0.8"


@pytest.mark.parametrize("name, says", [("nope", "unknown policy 'nope'"),
                                        ("vw:gamma_scal=10", "unknown setting 'gamma_scal'"),
                                        ("vw:gamma_scale=-1", "gamma_scale=-1.0 is outside")])
def test_an_unknown_policy_or_a_bad_spec_stops_before_any_run(name, says):
    with pytest.raises(SystemExit) as stop:
        _known(KNOWN, name)
    assert says in str(stop.value)


def test_seeds_are_a_count_or_a_list():
    assert list(_seed_list("3")) == [0, 1, 2]
    assert list(_seed_list("13,14,39")) == [13, 14, 39]
    assert list(_seed_list("7,")) == [7]
    for bad in ("x", "", "-1", "2,-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            _seed_list(bad)


def test_a_fill_ab_variant_is_a_name_and_settings():
    name, settings = _variant("regcb=algorithm=regcb,floor=0.005")
    assert name == "regcb" and settings.exploration.algorithm == "regcb" and settings.exploration.floor == 0.005
    assert _variant("default=")[1].exploration.algorithm == "squarecb"
    for bad, says in (("regcb", "NAME=SETTINGS"), ("x=algorithm=nope", "algorithm 'nope'"),
                      ("x=gamma_scal=3", "unknown setting 'gamma_scal'")):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            _variant(bad)
