"""What ``planner.MemoryCallback`` measures in a real GRPO run, as a record ``plan compare`` reads back.

Nothing here imports torch: the callback (planner/profiler/callback.py) feeds it numbers, and the
CLI reads its files.

**Moments.** transformers' Trainer (5.x, trainer.py ``_run_epoch``) calls its callbacks at these
points of an optimizer step; each callback boundary closes one moment and opens the next:

====================  ==================================================  ===========================
moment                what runs (TRL's GRPOTrainer)                        opened by -> closed by
====================  ==================================================  ===========================
``load``              model, adapters, vLLM's engine (colocated), up to    process start -> on_train_begin
                      training's start
``generation_and_``   the first micro-batch of a step: weight sync,        on_step_begin ->
``backward``          generation (vLLM or transformers' ``generate``),     on_substep_end (or
                      the old-log-prob pass, its forward and backward      on_pre_optimizer_step)
``later_micro_``      every later micro-batch's forward and backward; the  on_substep_end ->
``batches``           last also holds gradient clipping                    on_pre_optimizer_step
``optimizer_step``    ``optimizer.step()``                                 on_pre_optimizer_step ->
                                                                           on_optimizer_step
``between_steps``     the scheduler, ``zero_grad``, logging, saving,       on_optimizer_step ->
                      evaluation (and the start before the first step:     next on_step_begin / on_train_end
                      on_train_begin -> on_step_begin)
====================  ==================================================  ===========================

TRL generates in the first micro-batch of a step (``_prepare_inputs``: every ``steps_per_generation``
micro-batches, TRL's default equal to the accumulation steps), so generation cannot be told apart
from that micro-batch's backward from the callback's hooks: the moment holds both.

**The plan's prediction per moment** is :data:`MOMENT_PLAN_KEYS`: the largest of the named phases
of the plan's training GPU (planner.memory.phases), or its peak when none is named. Per-moment
predictions of the memory model replace a phase name here when they exist.

**Per moment** the record keeps the largest over the run of: the allocator's peak allocated and
reserved bytes (``torch.cuda.max_memory_allocated/reserved``, reset at every boundary), the
process's device memory (NVML) read at the moment's end, and the device-level peak: the larger of
that reading and the peak reserved plus the non-PyTorch bytes seen at ``load`` (device used less
reserved then; the caching allocator does not give memory back between boundaries unless
``empty_cache()`` is called, so the reading at the end is the moment's peak, save for that).

**The record** is a calibration profile (schema 1, planner/memory/calibration.py) whose rows are
data/calibration/README.md's (``env``, ``load``, one ``step`` row per optimizer step: ``before_mib``
is what was allocated at the step's start, the step peaks are over the whole step, generation
included; the shape is the largest micro-batch seen training, ``shape_source`` ``observed``, else
TRL's bounds, ``bounds``), with the fits of planner/memory/fit.py over them, plus a ``run`` block: the plan's
prediction, the measured peaks and their difference per moment, and each step's moments.
A fit from such rows holds generation's transients too, so it can over-state a training step's
activations, never under-state them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigError
from ..specs.units import GIB, MIB

RECORD_KIND = "planner.MemoryCallback"
RECORD_VERSION = 1
MOMENTS = ("load", "generation_and_backward", "later_micro_batches", "optimizer_step", "between_steps")

# callback moment -> the plan's phases (of the training GPU) whose largest peak is its prediction
MOMENT_PLAN_KEYS: dict[str, tuple[str, ...]] = {
    "load": ("load",),
    "generation_and_backward": ("weight_sync", "generation", "training"),
    "later_micro_batches": ("training",),
    "optimizer_step": ("training",),
    "between_steps": ("training",),
}


# -- the plan's side ------------------------------------------------------------------------------

def planned_moments(phase_peaks: dict[str, int], peak_bytes: int) -> dict[str, int]:
    """The plan's prediction per moment from its phases' peaks (:data:`MOMENT_PLAN_KEYS`); a moment
    none of whose phases the plan has (a runtime with other phase names) takes the plan's peak."""
    out = {}
    for moment, keys in MOMENT_PLAN_KEYS.items():
        known = [int(phase_peaks[k]) for k in keys if k in phase_peaks]
        out[moment] = max(known) if known else int(peak_bytes)
    return out


def plan_summary(plan) -> dict[str, Any]:
    """What the record keeps of a :class:`~planner.search.results.Plan`: enough to compare without
    planning again (model, card, margin, the phases' peaks, the predictions per moment)."""
    phases = {p.name: int(p.peak_bytes) for p in plan.training_rank.phases}
    total = int(plan.gpu.total_bytes)
    return {"model": plan.model.model_id, "gpu": plan.gpu.name, "gpu_total_bytes": total,
            "runtime": plan.runtime, "margin": float(plan.margin),
            "margin_bytes": int(round(plan.margin * total)), "peak_bytes": int(plan.peak_bytes),
            "phases": phases, "moments": planned_moments(phases, plan.peak_bytes),
            "memory_model": plan.memory_model}


# -- the measured side ----------------------------------------------------------------------------

@dataclass
class MomentPeak:
    """One moment's peaks, bytes (``device_*`` None without a device reading)."""

    allocated: int
    reserved: int
    device_used: int | None = None
    device_peak: int | None = None

    @property
    def measured(self) -> int:
        """The figure compared with the plan: the device-level peak, else the peak reserved."""
        return self.device_peak if self.device_peak is not None else self.reserved

    def merge(self, other: MomentPeak) -> MomentPeak:
        def top(a, b):
            return b if a is None else a if b is None else max(a, b)
        return MomentPeak(max(self.allocated, other.allocated), max(self.reserved, other.reserved),
                          top(self.device_used, other.device_used), top(self.device_peak, other.device_peak))

    def to_dict(self) -> dict[str, Any]:
        return {"peak_allocated_bytes": self.allocated, "peak_reserved_bytes": self.reserved,
                "device_used_bytes": self.device_used, "device_peak_bytes": self.device_peak,
                "measured_bytes": self.measured}


def over_plan(measured: int, planned: int, margin_bytes: int) -> bool:
    """Whether a measured peak exceeds the plan's prediction plus its margin (a fraction of the card)."""
    return measured > planned + margin_bytes


def exceeded_message(moment: str, measured: int, planned: int, margin_bytes: int) -> str:
    """The one warning line: the moment, measured against planned and the margin."""
    return (f"planner: {moment} peaked at {measured / GIB:.2f} GiB, over the plan's {planned / GIB:.2f} GiB "
            f"plus its {margin_bytes / GIB:.2f} GiB margin by {(measured - planned - margin_bytes) / GIB:.2f} GiB "
            f"(MemoryCallback warns once; every moment is in its record)")


def compare_moments(planned: dict[str, int], measured: dict[str, MomentPeak], margin_bytes: int) -> dict:
    """Planned against measured per moment (only the moments the run reached)."""
    out = {}
    for m in MOMENTS:
        if m not in measured:
            continue
        peak = measured[m]
        p = int(planned[m])
        out[m] = {**peak.to_dict(), "planned_bytes": p, "planned_with_margin_bytes": p + margin_bytes,
                  "difference": (peak.measured / p - 1) if p else None,
                  "over_plan": over_plan(peak.measured, p, margin_bytes)}
    return out


# -- calibration rows -----------------------------------------------------------------------------

def family_fields(plan, optimizer: str, expandable_segments: bool) -> dict[str, Any]:
    """The calibration rows' family fields (data/calibration/README.md) for the planned trainer."""
    s = plan.setup
    return {"model": plan.model.model_id, "weights": s.weights, "mode": s.finetune,
            "rank": s.lora_rank if s.finetune == "lora" else None, "optimizer": optimizer,
            "expandable_segments": expandable_segments}


def step_row(family: dict, load: dict, shape: dict, step: dict[str, MomentPeak], before: int,
             device_used_end: int | None) -> dict[str, Any]:
    """One optimizer step as a calibration ``step`` row: the forward/backward peaks over the
    micro-batches (generation included), the step peaks over the whole step."""
    fwdbwd = [step[m] for m in ("generation_and_backward", "later_micro_batches") if m in step]
    whole = fwdbwd + ([step["optimizer_step"]] if "optimizer_step" in step else [])
    row = {**family, **load, "stage": "step", **shape, "ok": True, "before_mib": before / MIB,
           "peak_alloc_fwdbwd_mib": max(p.allocated for p in fwdbwd) / MIB,
           "peak_reserved_fwdbwd_mib": max(p.reserved for p in fwdbwd) / MIB,
           "peak_alloc_step_mib": max(p.allocated for p in whole) / MIB,
           "peak_reserved_step_mib": max(p.reserved for p in whole) / MIB}
    if device_used_end is not None:
        row["device_used_mib_end"] = device_used_end / MIB
    return row


def build_record(*, plan: dict, moments: dict[str, MomentPeak], steps: list[dict], rows: list[dict],
                 model_entry: dict, gpu: dict, versions: dict, device_source: str) -> dict[str, Any]:
    """The record: a calibration profile (``schema``, ``gpu``, ``versions``, ``models``) and the
    ``run`` block (plan, measured moments, their comparison, per-step moments)."""
    from ..memory.calibration import SCHEMA_VERSION
    from ..memory.fit import fit_rows

    fits = fit_rows(rows)
    run: dict[str, Any] = {"kind": RECORD_KIND, "version": RECORD_VERSION, "device_source": device_source,
                           "plan": plan, "moments": {m: p.to_dict() for m, p in moments.items()},
                           "steps": steps,
                           "comparison": compare_moments(plan["moments"], moments, plan["margin_bytes"])}
    return {"schema": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "gpu": gpu, "versions": versions,
            "models": [{**model_entry, "fits": [f.to_dict() for f in fits], "rows": rows}], "run": run}


# -- reading a record back ------------------------------------------------------------------------

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _moment_problems(moments, where: str, required: tuple[str, ...]) -> list[str]:
    if not isinstance(moments, dict):
        return [f"'{where}' must be an object"]
    out = []
    for name, m in moments.items():
        if name not in MOMENTS:
            out.append(f"'{where}.{name}' is not a moment ({', '.join(MOMENTS)})")
        elif not isinstance(m, dict):
            out.append(f"'{where}.{name}' must be an object")
        else:
            out += [f"'{where}.{name}.{k}' must be a number" for k in required if not _number(m.get(k))]
    return out


def _plan_problems(plan) -> list[str]:
    if not isinstance(plan, dict):
        return ["'run.plan' must be an object"]
    out = [f"'run.plan.{k}' must be a number" for k in ("margin", "margin_bytes", "gpu_total_bytes")
           if not _number(plan.get(k))]
    out += [f"'run.plan.{k}' must be a string" for k in ("model", "gpu") if not isinstance(plan.get(k), str)]
    moments = plan.get("moments")
    if not isinstance(moments, dict):
        return out + ["'run.plan.moments' must be an object"]
    out += [f"'run.plan.moments.{m}' must be a number" for m in MOMENTS if not _number(moments.get(m))]
    return out


def record_problems(data) -> list[str]:
    """What keeps a record from being read, one line per problem naming the key."""
    from ..memory.calibration import SCHEMA_VERSION, profile_problems

    if not isinstance(data, dict):
        return ["not a JSON object"]
    run = data.get("run")
    if not isinstance(run, dict) or run.get("kind") != RECORD_KIND:
        return [f"not a {RECORD_KIND} record (no 'run' block of kind '{RECORD_KIND}')"]
    out = []
    if run.get("version") != RECORD_VERSION:
        out.append(f"'run.version' is {run.get('version')!r}; this planner reads version {RECORD_VERSION}")
    if data.get("schema") != SCHEMA_VERSION:
        out.append(f"'schema' is {data.get('schema')!r}; this planner reads calibration schema {SCHEMA_VERSION}")
    out += _plan_problems(run.get("plan"))
    out += _moment_problems(run.get("moments"), "run.moments", ("peak_allocated_bytes", "peak_reserved_bytes",
                                                                "measured_bytes"))
    if not isinstance(run.get("steps", []), list):
        out.append("'run.steps' must be a list")
    return out + profile_problems(data)


def read_record(path) -> dict:
    """A record written by ``MemoryCallback``; :class:`ConfigError`, one line per problem, otherwise."""
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a MemoryCallback record") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not JSON ({str(e).splitlines()[0][:120]})") from None
    problems = record_problems(data)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return data


def record_moments(data: dict) -> dict[str, MomentPeak]:
    """The measured moments of a read record."""
    out = {}
    for name in MOMENTS:
        m = data["run"]["moments"].get(name)
        if m is None:
            continue
        used, peak = m.get("device_used_bytes"), m.get("device_peak_bytes")
        out[name] = MomentPeak(int(m["peak_allocated_bytes"]), int(m["peak_reserved_bytes"]),
                               int(used) if _number(used) else None, int(peak) if _number(peak) else None)
    return out


def record_calibration(path):
    """A record as the :class:`~planner.memory.calibration.Calibration` it holds, for
    ``planner.plan(..., calibration=...)`` (``plan compare --save-calibration`` puts the file where
    ``calibration="auto"`` finds it instead). :class:`ConfigError` when the record has no fit."""
    from ..memory.calibration import Calibration, installed_versions, version_warnings
    from ..memory.fit import ModelFit

    data = read_record(path)
    entry = calibration_entry(data, str(path))
    versions = dict(data.get("versions", {}))
    gpu = data.get("gpu", {})
    return Calibration(model_id=str(entry.get("model_id", "")), gpu_name=str(gpu.get("name", "")),
                       device_name=str(gpu.get("device_name", "")), versions=versions,
                       fits=tuple(ModelFit.from_dict(f) for f in entry["fits"]), path=str(path),
                       created=str(data.get("created", "")),
                       warnings=tuple(version_warnings(versions, installed_versions())))


def calibration_entry(data: dict, source: str) -> dict:
    """The record's model entry, which must hold a fit to calibrate from."""
    entry = data["models"][0] if data.get("models") else {}
    if not entry.get("fits"):
        raise ConfigError(f"{source}: no steady training step to calibrate from (the first step, which creates "
                          f"the optimizer state, is left out: record at least 2 optimizer steps)")
    return entry
