"""Issue 15: the two official TRL colocate notebooks, predicted from their stated settings alone, read as
they run (6 turns of a ~1296-token prompt and an 8-token completion, trained untruncated)."""

import pytest
from calibration_data import (
    NOTEBOOK_PROMPT_TOKENS_PER_TURN,
    NOTEBOOK_SETTINGS,
    NOTEBOOK_TURNS,
    TRL_NOTEBOOKS,
    ceil_percent,
    old_trl_miss,
    predict_notebook,
)

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


def test_the_reading_is_the_notebooks_not_a_fit():
    # rollout_once(..., max_turns=6) stops at 6; one turn's prompt is ~1296 tokens by the notebook's
    # comment (1400 is max_prompt_length, the cap, which with the completion is vLLM's max_model_len)
    assert (NOTEBOOK_TURNS, NOTEBOOK_PROMPT_TOKENS_PER_TURN) == (6, 1296)
    e = predict_notebook(NAMES[1])["estimate"]
    assert e.vllm.max_model_len == NOTEBOOK_SETTINGS["max_prompt_length"] + NOTEBOOK_SETTINGS["completion_length"]
    assert (e.setup.prompt_length, e.setup.completion_length) == (6 * 1296, 6 * 8)


@pytest.mark.parametrize("name", NAMES)
def test_peak_reserved_within_issue_bounds(name):
    r = predict_notebook(name)
    assert LOWER <= r["error"] <= UPPER


def test_turns_change_the_trainer_only():
    one, six = (predict_notebook(NAMES[1], turns=t)["estimate"] for t in (1, NOTEBOOK_TURNS))
    assert six.vllm.kv_cache_bytes == one.vllm.kv_cache_bytes and six.vllm.max_model_len == 1408
    assert six.trainer.peak_bytes > one.trainer.peak_bytes


def test_the_old_trl_margin_is_the_worst_notebook_excess():
    # device-level: the reported peak reserved plus the predicted non-PyTorch memory, against the
    # predicted device-level peak; the margin is the worst excess rounded up to a whole percent, 0 when
    # both are over-predicted. Recomputed here from the reading, not from calibration_data's helper alone.
    excess = []
    for name in NAMES:
        r = predict_notebook(name)
        non_torch = r["estimate"].peak_bytes - r["peak_reserved"]
        excess.append((r["reported_peak"] * GIB + non_torch) / r["estimate"].peak_bytes - 1)
        assert excess[-1] == pytest.approx(r["excess"])
    worst = max(excess)
    assert OLD_TRL_MISS == (ceil_percent(worst) if worst > 0 else 0.0) == old_trl_miss(), excess
