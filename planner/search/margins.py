"""The safety margin: each memory model's measured error band, and a guard for the unmodelled.

A plan keeps every phase under the card less a margin (a fraction of the card). Unless the user
gives one (``--margin``, ``margin=``), the margin is the band of the memory model the plan uses
(planner.api.complete_request decides which before solving, planner.memory.calibration.calibration_gap):

- ``calibrated`` (a shipped or measured profile covers the model, card and setup): 4%. The shipped
  H100 profiles, fitted on data/calibration's steady rows, under-predict the held-out steps of a
  calibrated family (benchmarks/results/h100_heldout: Qwen2.5-0.5B, 10 steps) by at worst 2.99%;
  x 11/10 = 3.29%.
- ``analytic`` (everything else): 6%. Its held-out errors: the 77 held-out H100 steps (worst
  -0.94%), the 2 held-out whole runs (-1.63%) and the 70 LoRA calibration rows each predicted by the
  constants refitted without its model family (benchmarks/heldout_fits.py, -3.75%): the worst of
  149 is -3.75%, x 150/149 = 3.78%; on architectures nobody measured, its activation peak agrees with
  the CPU trace of the real model code within 1.68% (24 shapes, benchmarks/results/trace_vs_analytic.txt):
  3.78% + 1.68% = 5.46%.

The rule: a plan that fits must not run out of memory, so what counts is the worst
*under*-prediction (an over-prediction only wastes memory) on measurements the model was not fitted
on. The worst of n held-out errors is only the n/(n+1) quantile a new error falls inside, so it is
widened by (n + 1) / n (the small-sample allowance), then rounded up to a whole percent. The errors
are relative to the trainer's peak, which is part of the card, so the same fraction of the card covers
at least as many bytes. ``calibration_data.margin_bands`` recomputes every band from the data
(benchmarks/margin_bands.py writes benchmarks/results/margin_bands.txt, which benchmarks/reproduce.py
regenerates; tests/test_margin_bands.py recomputes each band from the held-out errors). The bands
were 3% and 4% while they were the rounded-up worst error alone (the analytic one without the
leave-one-family-out rows).

The Unsloth runtime (``runtime="unsloth"``, planner/runtimes/unsloth.py) has its own memory
model and its own band, :data:`RUNTIME_MARGIN`: 5%. It is not derived from data the way the two
above are: no peak of a real Unsloth run is measured. What is measured is vLLM's side of the shared
runs (data/unsloth/unsloth-reports.jsonl; benchmarks/unsloth_reports.py -> benchmarks/results/unsloth_reports.txt
has the utilisation vLLM receives and the KV cache, predicted against printed, run by run); the trainer's
side beside it (adapters, offloaded checkpoints, the chunked loss) is read from
Unsloth's code, not measured. 5% is the band the runtime shipped with, kept so its plans do not move
until a measurement replaces it; the user's ``margin=`` / ``--margin`` overrides it as for TRL.
Unmeasured, so no quantile: its rule is "the runtime's shipped allowance, not derived"; the KV and
utilisation errors above are vLLM's side only (benchmarks/results/margin_bands.txt lists them beside it).

On top of the band comes what the measurements do not cover. The trainer model was measured
(shared/calibration, benchmarks/results/h100_*) with bitsandbytes 8-bit AdamW, TRL 1.16's fused
log-prob head and bf16/NF4 weights. ``coverage_margin(setup, trl_version)`` returns
``(extra_margin_fraction, reasons)``: the fraction the solver adds to the margin, and one line per
reason for the output. Each rule's size is what was actually seen, not a guess where a measurement
exists:

- TRL releases without the fused head (before 1.15): :data:`OLD_TRL_MISS`, the worst excess of the two
  official TRL colocate notebooks (TRL 0.26.0.dev, A100-40GB) over the planner's prediction from their
  stated settings (their peak reserved plus the predicted non-PyTorch memory, against the predicted
  device-level peak; benchmarks/results/trl_notebooks.txt), rounded up to a whole percent, 0 when both
  are over-predicted. They are read as they run: 6 turns (``rollout_once(..., max_turns=6)``) of a
  ~1296-token prompt (the notebook's comment; ``max_prompt_length=1400`` is the cap) and an 8-token
  completion, trained untruncated. So read, both are over-predicted (excess -0.61% and -1.26%), and the
  margin is 0. Two runs are this rule's fit set and its only evidence: no held-out run of an old TRL
  exists, so 0 is an optimistic bound, not a measured error band (tests/test_trl_notebooks.py recomputes
  it). Read as one turn of the 1400-token cap, a reading the rollout rules out, they held 3.1% and 16.3%
  more than predicted, which gave the earlier 17%.
- fp32 weights under autocast (TRL < 0.27 with transformers 4.x, or TRL >= 0.27, given only a model
  id): autocast's weight cache and fp32 gradients agree with a real TRL 0.26 GRPOTrainer traced on
  the CPU (benchmarks/results/real_grpo_trace.txt), but were never measured on a GPU, and the caching
  allocator keeps more of such a run reserved than the fitted reserve says: replayed through the
  allocator's rules on TRL's loop (benchmarks/results/allocator_notebook.txt), the planner's peak
  reserved is -7.1% to +0.4% of the replay; the band rule on the 7 replayed fp32 runs (-7.13% x 8/7 =
  8.15%, rounded up) is the margin (9%; a simulation, not a measurement; tests/test_allocator_replay.py
  recomputes it).
- an optimizer other than 8-bit AdamW: its state is exact arithmetic but its step temporaries are
  read from torch's code, not measured: 3%, a stated allowance (no held-out error exists to take a
  quantile of).
"""

from __future__ import annotations

from ..memory.trainer import TrainerSetup
from ..specs.versions import trl_facts

# each memory model's default margin, a fraction of the card (the rule above; margin_bands recomputes them)
MEMORY_MODEL_MARGIN = {"calibrated": 0.04, "analytic": 0.06}


# the default margin of a runtime with its own memory model (the rule above: Unsloth, not measured)
RUNTIME_MARGIN = {"unsloth": 0.05}


def label_kind(memory_model: str) -> str:
    """The kind (a key of MEMORY_MODEL_MARGIN) of a plan's or estimate's memory-model label
    (``"calibrated (H100-80GB, ...)"`` or ``"analytic"``)."""
    return "calibrated" if str(memory_model).startswith("calibrated") else "analytic"

MEASURED_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
OLD_TRL_MISS = 0.0  # the worst notebook's excess, rounded up; 0: both over-predicted (two runs, trl_notebooks.txt)
FP32_AUTOCAST_MARGIN = 0.09  # the band rule on the replayed fp32 runs (allocator_notebook.txt)
UNMEASURED_OPTIMIZER_MARGIN = 0.03  # a stated allowance: nothing measured to take a quantile of


def coverage_margin(setup: TrainerSetup, trl_version: str | None = None) -> tuple[float, tuple[str, ...]]:
    """(extra margin as a fraction of the predicted peak, reasons); (0.0, ()) when covered."""
    margin, reasons = 0.0, []
    facts = trl_facts(trl_version)
    if OLD_TRL_MISS and (not facts.fused_lm_head or setup.logprob_head != "fused"):
        margin += OLD_TRL_MISS
        reasons.append(f"TRL {facts.release} (no fused log-prob head) is not measured: real TRL 0.26 colocate "
                       f"runs held up to {OLD_TRL_MISS:.1%} more than modelled; margin +{OLD_TRL_MISS:.0%}")
    if setup.weights == "fp32" and setup.mixed_precision != "no":
        margin += FP32_AUTOCAST_MARGIN
        reasons.append(f"fp32 weights under {setup.mixed_precision} autocast (autocast's weight cache, fp32 "
                       f"gradients) are checked on the CPU and by an allocator replay, not measured on a GPU; "
                       f"margin +{FP32_AUTOCAST_MARGIN:.0%}")
    if setup.optim not in MEASURED_OPTIMIZERS:
        margin += UNMEASURED_OPTIMIZER_MARGIN
        reasons.append(f"optimizer {setup.optim}: step temporaries read from torch's code, not measured; "
                       f"margin +{UNMEASURED_OPTIMIZER_MARGIN:.0%}")
    return round(margin, 4), tuple(reasons)
