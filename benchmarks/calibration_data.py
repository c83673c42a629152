"""Load shared/calibration/h100-trl1.16-train.jsonl: one record per measured training step,
with the device-level peak the planner must predict (README of that folder):
``peak_reserved_step_mib + (device_used_mib_after_load - reserved_mib_after_load)``."""

from __future__ import annotations

import json
import os
from pathlib import Path

MIB = 1024**2
CALIBRATION_TRANSFORMERS = "5.17.0"  # the release shared/calibration/README.md names
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "calibration" / "h100-trl1.16-train.jsonl"


def calibration_path() -> Path:
    return Path(os.environ.get("PLANNER_CALIBRATION_DATA", DEFAULT_PATH))


def load_rows(path: Path | None = None) -> list[dict]:
    """Step rows (ok and OOM) with ``measured_peak_bytes`` for the ok ones."""
    rows = []
    with open(path or calibration_path()) as f:
        for line in f:
            r = json.loads(line)
            if r.get("stage") != "step":
                continue
            if r.get("ok"):
                non_torch = r["device_used_mib_after_load"] - r["reserved_mib_after_load"]
                r["measured_peak_bytes"] = int((r["peak_reserved_step_mib"] + non_torch) * MIB)
                r["measured_activation_bytes"] = int((r["peak_alloc_step_mib"] - r["before_mib"]) * MIB)
                r["measured_reserve_bytes"] = int((r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]) * MIB)
            rows.append(r)
    return rows


def env_row(path: Path | None = None) -> dict:
    with open(path or calibration_path()) as f:
        for line in f:
            r = json.loads(line)
            if r.get("stage") == "env":
                return r
    return {}


def measured_setup(row: dict, **overrides):
    """The ``TrainerSetup`` of one measured step (the calibration README's field names, also what
    ``plan profile --gpu auto`` and benchmarks/gpu_run_peak.py write): one isolated step of one
    shape, the measurements' protocol. ``overrides`` replace any field (a run's accumulation, say)."""
    from planner.memory.trainer import TrainerSetup

    kw = dict(weights=row["weights"], finetune=row["mode"], lora_rank=row["rank"] or 16,
              optim=row.get("optimizer", "adamw_8bit"), gradient_checkpointing=row["grad_ckpt"],
              batch_size=row["batch"], prompt_length=row["prompt_len"], completion_length=row["completion_len"],
              logprob_head="fused", expandable_segments=row.get("expandable_segments", False),
              transformers_version=row.get("transformers", CALIBRATION_TRANSFORMERS), completion_lengths="fixed")
    return TrainerSetup(**{**kw, **overrides})
