"""The caching allocator replayed on fp32 full fine-tuning under autocast (benchmarks/allocator_notebook.py):
the planner's trainer against the replayed runs, and the coverage margin those set."""

import math

import pytest
from calibration_data import evaluate_allocator_replay

from planner.memory.trainer import TrainerSetup, trainer_memory
from planner.search.margins import FP32_AUTOCAST_MARGIN
from planner.specs.model import resolve_model


def test_planner_tensors_match_the_replayed_allocations():
    # the tensors the planner counts against what the replayed stream allocates at its peak
    for row, e_alloc, _ in evaluate_allocator_replay()["rows"]:
        assert -0.01 <= e_alloc <= 0.05, (row["model"], row.get("weights"), row["prompt"], e_alloc)


def test_tied_notebook_run_reserves_the_backwards_vocabulary_gradients_at_the_forward():
    rows = {(r["model"], r.get("weights", "fp32"), r["prompt"]): (r, e) for r, _, e in evaluate_allocator_replay()["rows"]}
    r, err = rows[("Qwen/Qwen3-1.7B", "fp32", 1400)]
    assert abs(err) <= 0.01  # 31.47 vs 31.35 GiB
    # the rule: at a later micro-batch's forward the head's and the lookup's V x h gradient blocks are free
    spec = resolve_model("Qwen/Qwen3-1.7B")
    setup = TrainerSetup(weights="fp32", finetune="full", optim="adamw_torch_fused", logprob_head="plain",
                         batch_size=1, prompt_length=1400, completion_length=8, gradient_accumulation_steps=3,
                         completion_lengths="fixed")
    c = trainer_memory(spec, setup).components
    assert c["allocator_reserve"] == 2 * spec.vocab_size * spec.hidden_size * 4
    # without accumulation there is no earlier micro-batch whose blocks sit free: the fitted reserve
    single = trainer_memory(spec, TrainerSetup(**{**setup.__dict__, "gradient_accumulation_steps": 1}))
    assert single.components["allocator_reserve"] < c["allocator_reserve"] / 2


@pytest.mark.xfail(strict=True, reason="miss: replayed reserve beyond the fitted one on fp32 autocast runs: the planner's "
                   "peak reserved is -7.1% (Qwen2.5-0.5B), -3.5% (Llama-3.1-8B), -2.8% (Qwen2.5-7B) of the replay")
def test_planner_reserved_within_2_percent_of_every_replay():
    assert all(abs(e) <= 0.02 for _, _, e in evaluate_allocator_replay()["rows"])


def test_fp32_autocast_margin_is_the_band_rule_on_the_replayed_runs():
    # the rule of planner/search/margins.py written out: worst under-prediction x (n+1)/n, rounded up to a
    # whole percent (tests/test_margin_bands.py checks the same for every band)
    fp32 = [e for r, _, e in evaluate_allocator_replay()["rows"] if r["weights"] == "fp32"]
    n, worst = len(fp32), min(fp32)
    assert worst < 0 and worst == evaluate_allocator_replay()["worst_under"]
    assert FP32_AUTOCAST_MARGIN == math.ceil(round(-worst * (n + 1) / n * 100, 6)) / 100
    assert FP32_AUTOCAST_MARGIN > -worst  # wider than the worst replayed row: the sample is small


def test_bf16_full_finetuning_counts_bf16_adam_states():
    # the bf16 runs of the replay: torch's AdamW states in bf16; the planner within -1%..+7% of the replayed reserved
    bf16 = [(r, e) for r, _, e in evaluate_allocator_replay()["rows"] if r.get("weights") == "bf16"]
    assert len(bf16) == 2
    assert all(-0.01 <= e <= 0.07 for _, e in bf16), [(r["model"], e) for r, e in bf16]
