"""What VW 9.11.9 itself does with DSJSON's ``pdrop`` (pure pyvw, no server).

VW's DSJSON parser (``apply_pdrop`` in parse_example_json.cc) divides the
label weight of every example of a line by 1 - pdrop, for cb and ccb labels,
and does not support pdrop = 1 (below). The joined log relies on it: a line kept by
subsampling at rate r carries pdrop = 1 - r and is learned with weight 1 / r."""

from __future__ import annotations

import json

import pytest
from vowpalwabbit import pyvw

CB_LINE = {"Version": "1", "EventId": "e1", "_label_cost": -1.0, "_label_probability": 0.5, "_label_Action": 1,
           "_labelIndex": 0, "a": [1, 2], "p": [0.5, 0.5],
           "c": {"C": {"x": 1.0}, "_multi": [{"A": {"id=a": 1}}, {"A": {"id=b": 1}}]}}
CCB_LINE = {"Version": "1", "EventId": "e1",
            "c": {"C": {"x": 1.0}, "_multi": [{"A": {"id=a": 1}}, {"A": {"id=b": 1}}],
                  "_slots": [{"_id": "s0", "S": {"s": 1}}, {"_id": "s1", "S": {"s": 2}}]},
            "_outcomes": [{"_id": "s0", "_label_cost": -1.0, "_a": [0, 1], "_p": [0.5, 0.5]},
                          {"_id": "s1", "_label_cost": 0.0, "_a": [1], "_p": [1.0]}]}
LAYOUTS = {"cb": (CB_LINE, "--cb_explore_adf", pyvw.Example.get_cbandits_weight),
           "ccb": (CCB_LINE, "--ccb_explore_adf", pyvw.Example.get_ccb_weight)}


def _learned(layout: str, pdrop: float | None) -> tuple[list[float], float]:
    """(label weights of the line's examples, weighted examples after learning it)."""
    line, reduction, weight_of = LAYOUTS[layout]
    vw = pyvw.Workspace(f"{reduction} --dsjson --quiet")
    try:
        examples = vw.parse(json.dumps(line if pdrop is None else {**line, "pdrop": pdrop}))
        weights = [weight_of(e) for e in examples]
        vw.learn(examples)
        vw.finish_example(examples)
        return weights, vw.get_weighted_examples()
    finally:
        vw.finish()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("pdrop", [0.0, 0.5, 0.75])  # exact in float32 (pylibvw reads cb weights as ints)
def test_vw_weights_a_kept_line_by_one_over_one_minus_pdrop(layout, pdrop):
    weights, weighted_examples = _learned(layout, pdrop)
    _, unweighted = _learned(layout, None)
    assert weights == pytest.approx([1 / (1 - pdrop)] * len(weights), rel=1e-6)
    assert weighted_examples == pytest.approx(unweighted / (1 - pdrop), rel=1e-6)


def test_vw_does_not_support_pdrop_one():
    """VW logs "examples with pdrop==1 are not supported" and then learns the
    cb line unweighted and the ccb line not at all: why the joined log never
    carries it (learner.sample_rate > 0, and the readers refuse pdrop >= 1)."""
    assert _learned("cb", 1.0)[1] == 1.0
    assert _learned("ccb", 1.0)[1] == 0.0
