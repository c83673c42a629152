"""Issue 15: the two official TRL colocate notebooks, predicted from their stated settings alone."""

import math

import pytest
from calibration_data import TRL_NOTEBOOKS, predict_notebook

from planner.search.margins import OLD_TRL_MISS
from planner.specs.units import GIB

NAMES = list(TRL_NOTEBOOKS)
LOWER, UPPER = -0.02, 0.10  # issue 15's bounds on the peak reserved


@pytest.mark.parametrize("name", NAMES)
def test_reserved_after_init_within_1_percent(name):
    # trainer weights (fp32 for the model given by id: TRL 0.26 + transformers 4.x) plus vLLM 0.10.2 at
    # u=0.1: its sort-path sampler peak (38 B per logit) and that release's small non-torch growth
    r = predict_notebook(name)
    assert abs(r["init_reserved"] / (r["reported_init"] * GIB) - 1) <= 0.01


def test_full_finetuning_notebook_loads_fp32_and_uses_the_fused_default():
    r = predict_notebook(NAMES[0])
    e = r["estimate"]
    assert (e.setup.weights, e.setup.optim, e.setup.logprob_head) == ("fp32", "adamw_torch_fused", "plain")
    assert e.extra["assumptions"]["weights"]["value"] == "fp32"
    # a bf16 load (what the planner assumed before) would be ~3.2 GiB lower after init
    assert r["init_reserved"] > 9.5 * GIB


@pytest.mark.xfail(strict=True, reason="miss: read as one turn of prompt 1400 + completion 8, the full FT notebook is "
                   "predicted -3.1% (35.54 vs 36.68 GiB reserved) and the QLoRA one -15.9% (5.37 vs 6.39 GiB)")
@pytest.mark.parametrize("name", NAMES)
def test_peak_reserved_within_issue_bounds_as_one_turn(name):
    r = predict_notebook(name)
    assert LOWER <= r["error"] <= UPPER


# the notebooks' rollout concatenates its Wordle turns (benchmarks/trl_notebooks.py): Wordle-v0 has 6 guesses
# (textarena 0.7.4 num_guesses=6) and tolerates one invalid move (error_allowance=1)
WORDLE_TURNS = 6


@pytest.mark.parametrize("name", NAMES)
def test_peak_reserved_within_issue_bounds_with_the_rollouts_turns(name):
    r = predict_notebook(name, turns=WORDLE_TURNS)
    assert LOWER <= r["error"] <= UPPER


@pytest.mark.parametrize("turns", [5, 7])
def test_peak_reserved_within_issue_bounds_for_one_turn_fewer_or_more(turns):
    for name in NAMES:
        assert LOWER <= predict_notebook(name, turns=turns)["error"] <= UPPER


def test_turns_change_the_trainer_only():
    one, six = (predict_notebook(NAMES[1], turns=t)["estimate"] for t in (1, WORDLE_TURNS))
    assert six.vllm.kv_cache_bytes == one.vllm.kv_cache_bytes and six.vllm.max_model_len == 1408
    assert (six.setup.prompt_length, six.setup.completion_length) == (8400, 48)
    assert six.trainer.peak_bytes > one.trainer.peak_bytes


def test_the_old_trl_margin_covers_the_worst_notebook():
    # device-level: the reported peak reserved plus the predicted non-PyTorch memory, against the
    # predicted device-level peak; the margin is the worst excess rounded up to a whole percent
    excess = []
    for name in NAMES:
        r = predict_notebook(name)
        non_torch = r["estimate"].peak_bytes - r["peak_reserved"]
        excess.append((r["reported_peak"] * GIB + non_torch) / r["estimate"].peak_bytes - 1)
    assert OLD_TRL_MISS == math.ceil(max(excess) * 100) / 100, excess
