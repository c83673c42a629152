"""A guard for the unmodelled: how much a setup lies outside what the planner's model was checked on.

The trainer model was measured (shared/calibration, benchmarks/results/h100_*) with bitsandbytes
8-bit AdamW, TRL 1.16's fused log-prob head and bf16/NF4 weights. ``coverage_margin(setup,
trl_version)`` returns ``(extra_margin_fraction, reasons)``: the fraction of the predicted peak the
solver should add to its safety margin, and one line per reason for the output. Each rule's size is
what was actually seen, not a guess where a measurement exists:

- TRL releases without the fused head (before 1.15): the two official TRL colocate notebooks
  (TRL 0.26.0.dev, A100-40GB) held 8.1% and 17.2% more reserved memory than the planner predicts
  from their stated settings (benchmarks/results/trl_notebooks.txt); the largest miss is the margin.
- fp32 weights under autocast (TRL < 0.27 with transformers 4.x, or TRL >= 0.27, given only a model
  id): autocast's weight cache and fp32 gradients were derived, not measured: 5%.
- an optimizer other than 8-bit AdamW: its state is exact arithmetic but its step temporaries are
  read from torch's code, not measured: 3%.
"""

from __future__ import annotations

from .memory.trainer import TrainerSetup
from .versions import trl_facts

MEASURED_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
OLD_TRL_MISS = 0.172  # worst notebook under-prediction, benchmarks/results/trl_notebooks.txt
FP32_AUTOCAST_MARGIN = 0.05
UNMEASURED_OPTIMIZER_MARGIN = 0.03


def coverage_margin(setup: TrainerSetup, trl_version: str | None = None) -> tuple[float, tuple[str, ...]]:
    """(extra margin as a fraction of the predicted peak, reasons); (0.0, ()) when covered."""
    margin, reasons = 0.0, []
    facts = trl_facts(trl_version)
    if not facts.fused_lm_head or setup.logprob_head != "fused":
        margin += OLD_TRL_MISS
        reasons.append(f"TRL {facts.release} (no fused log-prob head) is not measured: real TRL 0.26 colocate "
                       f"runs held up to {OLD_TRL_MISS:.1%} more than modelled; margin +{OLD_TRL_MISS:.0%}")
    if setup.weights == "fp32" and setup.mixed_precision != "no":
        margin += FP32_AUTOCAST_MARGIN
        reasons.append(f"fp32 weights under {setup.mixed_precision} autocast (autocast's weight cache, fp32 "
                       f"gradients) are derived, not measured; margin +{FP32_AUTOCAST_MARGIN:.0%}")
    if setup.optim not in MEASURED_OPTIMIZERS:
        margin += UNMEASURED_OPTIMIZER_MARGIN
        reasons.append(f"optimizer {setup.optim}: step temporaries read from torch's code, not measured; "
                       f"margin +{UNMEASURED_OPTIMIZER_MARGIN:.0%}")
    return round(margin, 4), tuple(reasons)
