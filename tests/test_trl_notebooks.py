"""Issue 15: the two official TRL colocate notebooks, predicted from their stated settings alone."""

import pytest

from planner.calibration_data import TRL_NOTEBOOKS, predict_notebook
from planner.units import GIB

NAMES = list(TRL_NOTEBOOKS)
LOWER, UPPER = -0.02, 0.10  # issue 15's bounds on the peak reserved


@pytest.mark.parametrize("name", [NAMES[0], pytest.param(NAMES[1], marks=pytest.mark.xfail(
    strict=True, reason="miss: QLoRA notebook after init -4.1% (4.38 vs 4.57 GiB) with vLLM 0.10.2's arithmetic: "
    "its activation peak and CUDA graphs are assumed from the v0.19 fit (0.24 and 0.13 GiB predicted, 0.47 and "
    "0.24 GiB in the notebook's log)"))])
def test_reserved_after_init_within_3_percent(name):
    # trainer weights (fp32 for the model given by id: TRL 0.26 + transformers 4.x) plus vLLM at u=0.1
    r = predict_notebook(name)
    assert abs(r["init_reserved"] / (r["reported_init"] * GIB) - 1) <= 0.03


def test_full_finetuning_notebook_loads_fp32_and_uses_the_fused_default():
    r = predict_notebook(NAMES[0])
    e = r["estimate"]
    assert (e.setup.weights, e.setup.optim, e.setup.logprob_head) == ("fp32", "adamw_torch_fused", "plain")
    assert e.extra["assumptions"]["weights"]["value"] == "fp32"
    # a bf16 load (what the planner assumed before) would be ~3.2 GiB lower after init
    assert r["init_reserved"] > 9.5 * GIB


@pytest.mark.xfail(strict=True, reason="miss: full FT notebook predicted -8.3% (33.62 vs 36.68 GiB reserved) with "
                   "transformers' torch-2.8 default adamw_torch_fused; ~3 GiB unexplained (an adamw_torch foreach "
                   "step would give about +4%), QLoRA notebook -18.3% (5.22 vs 6.39 GiB): ~1.2 GiB unexplained")
@pytest.mark.parametrize("name", NAMES)
def test_peak_reserved_within_issue_bounds(name):
    r = predict_notebook(name)
    assert LOWER <= r["error"] <= UPPER
