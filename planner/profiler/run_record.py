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

**The plan's prediction per moment** (:func:`moment_predictions`, the one place it is computed):
:data:`MOMENT_PLAN_KEYS` names the plan's moments each callback moment holds: ``load`` the load
phase; ``generation_and_backward`` the weight-sync and generation phases and the first micro-batch's
forward, log-prob head and backward (the hooks cannot separate them); ``later_micro_batches`` those
three and gradient clipping; ``optimizer_step`` the trainer's optimizer-step moment;
``between_steps`` the trainer's resident state; a trainer moment with what is beside it then (vLLM
awake, or asleep with sleep mode; nothing without vLLM). Each is that moment's *own* figure; the
*planned* figure compared is the device-level one: the caching allocator keeps what a step
reserved, so a moment holds the largest of the plan's trainer moments so far in the step plus what
is beside it (planner/memory/trainer.py: "the step needs max(the backward's reserved, ...)").
Plans with phases only (the Unsloth runtime) fall back to :data:`MOMENT_PHASE_FALLBACK`, and the
record says so per moment.

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

from ..errors import ConfigError, InvalidSetupError
from ..memory.phases import PHASE_BLOCKS
from ..memory.trainer import MOMENTS as TRAINER_MOMENTS
from ..specs.units import GIB, MIB

RECORD_KIND = "planner.MemoryCallback"
RECORD_VERSION = 1
MOMENTS = ("load", "generation_and_backward", "later_micro_batches", "optimizer_step", "between_steps")

# callback moment -> the plan's moments it holds (the README's table): the plan's phases (load,
# weight_sync, generation: planner.memory.phases) and the trainer's step moments (forward, logprob_head,
# backward, clip_grad, optimizer_step: planner.memory.trainer.MOMENTS; ``resident``: the trainer's
# state between steps), each with what else is on the card then (vLLM awake, or asleep with sleep mode).
# ``clip_grad`` belongs to the step's last micro-batch: ``later_micro_batches``, or
# ``generation_and_backward`` when a step has one micro-batch.
MOMENT_PLAN_KEYS: dict[str, tuple[str, ...]] = {
    "load": ("load",),
    "generation_and_backward": ("weight_sync", "generation", "forward", "logprob_head", "backward"),
    "later_micro_batches": ("forward", "logprob_head", "backward", "clip_grad"),
    "optimizer_step": ("optimizer_step",),
    "between_steps": ("resident",),
}
# without the trainer's moments (Unsloth's runtime: phases only): callback moment -> the phases standing for it
MOMENT_PHASE_FALLBACK: dict[str, tuple[str, ...]] = {
    "load": ("load",),
    "generation_and_backward": ("weight_sync", "generation", "training"),
    "later_micro_batches": ("training",),
    "optimizer_step": ("training",),
    "between_steps": ("training",),
}
# the blocks of a phase that are not the trainer's allocator pool (planner.memory.phases.PHASE_BLOCKS)
_BESIDE_TRAINER = ("vllm_awake", "vllm_asleep")


# -- the plan's side ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MomentPrediction:
    """The plan's prediction for one callback moment.

    ``planned``: the device-level bytes the measured peak is compared with; ``own``: each plan moment
    this callback moment holds (:data:`MOMENT_PLAN_KEYS`), its bytes with what is beside the trainer
    then (what the moment alone holds with nothing cached before it); ``set_by``: the plan moment that
    sets ``planned`` (``"... (kept reserved)"`` when an earlier moment's cached pool does);
    ``fallback``: why the plan has no per-moment figure here (None when it has)."""

    planned: int
    own: dict[str, int]
    set_by: str
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"planned_bytes": self.planned, "own_bytes": dict(self.own), "set_by": self.set_by,
                "fallback": self.fallback}


def predicted_moments(plan, role: str = "training_rank") -> dict[str, int]:
    """The plan's predicted device-level bytes per callback moment: what ``MemoryCallback`` warns
    against, its record keeps and ``plan compare`` shows (:func:`moment_predictions`)."""
    return {m: p.planned for m, p in moment_predictions(plan, role).items()}


def moment_predictions(plan, role: str = "training_rank") -> dict[str, MomentPrediction]:
    """Each callback moment's prediction for a process of ``role`` (every trainer process, whatever its
    rank, is a ``training_rank``: the plan's figures are rank 0's, the largest; a ``server_gpu`` runs
    ``trl vllm-serve``, no trainer).

    A moment's device-level figure is the trainer's allocator pool plus what is beside it (vLLM): the
    caching allocator keeps what it reserved, and within a step nothing returns it (TRL's
    ``empty_cache()`` before a sleep-mode generation is the only release, and the plan's generation
    phase already starts from it), so the pool at a moment is the largest of the plan's moments up to
    it in the step. The first micro-batch takes the plan's micro-batch moments, which under gradient
    accumulation are a later one's (earlier gradients alive): a bound for the first. A plan without the
    trainer's moments (Unsloth's runtime) falls back to its phases (:data:`MOMENT_PHASE_FALLBACK`)."""
    r = _role(plan, role)
    phases = {p.name: int(p.peak_bytes) for p in r.phases}
    trainer = dict(r.rank.moments) if r.rank is not None else dict(plan.trainer.moments)
    if not set(TRAINER_MOMENTS) <= set(trainer) or (r.placement, r.sleep_mode) not in PHASE_BLOCKS:
        why = ("the unsloth runtime's plan models phases, not the trainer's moments" if plan.runtime == "unsloth"
               else "the plan has no moments of the trainer's step")
        return _phase_predictions(phases, int(r.peak_bytes), why + ": the {} phase stands for this moment")
    out, pool, pool_by = {}, 0, ""
    for moment, entries in _moment_entries(plan, r, trainer).items():
        best, label, top, top_by = -1, "", pool, pool_by
        for name, trainer_bytes, beside in entries:
            held, by = (trainer_bytes, name) if trainer_bytes >= pool else (pool, f"{pool_by} (kept reserved)")
            if held + beside > best or (held + beside == best and by == name):  # a tie: the moment's own
                best, label = held + beside, by
            if trainer_bytes > top:
                top, top_by = trainer_bytes, name
        if moment != "load":
            pool, pool_by = top, top_by
        out[moment] = MomentPrediction(best, {n: t + b for n, t, b in entries}, label)
    return out


def _role(plan, role: str):
    roles = plan.roles
    if role not in roles:
        raise InvalidSetupError(f"the plan has no role '{role}' (it has {', '.join(roles)})")
    if roles[role].placement == "server":
        raise InvalidSetupError(f"role '{role}' runs vLLM's server, no trainer: MemoryCallback measures a training "
                                f"process (role 'training_rank')")
    return roles[role]


def _moment_entries(plan, r, trainer: dict[str, int]) -> dict[str, list[tuple[str, int, int]]]:
    """Per callback moment, its plan moments as (name, the trainer's pool bytes, bytes beside it)."""
    blocks = {name: sum(parts.values()) for name, parts in r.blocks.items()}
    layout = dict(PHASE_BLOCKS[(r.placement, r.sleep_mode)])

    def phase(name: str) -> tuple[str, int, int]:
        beside = sum(blocks[b] for b in layout[name] if b in _BESIDE_TRAINER)
        return name, sum(blocks[b] for b in layout[name]) - beside, beside

    training = phase("training")[2]  # vLLM beside the step: awake, or asleep with sleep mode
    one = int(plan.config.get("gradient_accumulation_steps", 1) or 1) == 1
    first = [m for m in MOMENT_PLAN_KEYS["generation_and_backward"] if m in trainer] + (["clip_grad"] if one else [])
    return {"load": [phase("load")],
            "generation_and_backward": [phase(p) for p in ("weight_sync", "generation") if p in layout]
            + [(m, trainer[m], training) for m in first if m in trainer],
            "later_micro_batches": [(m, trainer[m], training) for m in MOMENT_PLAN_KEYS["later_micro_batches"]
                                    if m in trainer],
            "optimizer_step": [(m, trainer[m], training) for m in ("optimizer_step",) if m in trainer],
            "between_steps": [("resident", blocks["resident"], training)]}


def _phase_predictions(phases: dict[str, int], peak: int, why: str) -> dict[str, MomentPrediction]:
    """Predictions from the phases alone (:data:`MOMENT_PHASE_FALLBACK`); a moment none of whose
    phases the plan has takes the plan's peak."""
    out = {}
    for moment, keys in MOMENT_PHASE_FALLBACK.items():
        own = {k: phases[k] for k in keys if k in phases}
        if own:
            name = max(own, key=lambda k: own[k])
            out[moment] = MomentPrediction(own[name], own, name, None if moment == "load" else why.format(name))
        else:
            out[moment] = MomentPrediction(peak, {"peak": peak}, "peak", "none of the plan's phases stands for it: "
                                                                        "the plan's peak")
    return out


def plan_summary(plan, role: str = "training_rank") -> dict[str, Any]:
    """What the record keeps of a :class:`~planner.search.results.Plan`: enough to compare without
    planning again (model, card, margin, the phases' peaks, the prediction per moment and its source)."""
    predictions = moment_predictions(plan, role)
    r = plan.roles[role]
    phases = {p.name: int(p.peak_bytes) for p in r.phases}
    total = int(plan.gpu.total_bytes)
    return {"model": plan.model.model_id, "gpu": plan.gpu.name, "gpu_total_bytes": total,
            "runtime": plan.runtime, "role": role, "world_size": int(plan.topology.world_size),
            "margin": float(plan.margin), "margin_bytes": int(round(plan.margin * total)),
            "peak_bytes": int(r.peak_bytes), "phases": phases,
            "moments": {m: p.planned for m, p in predictions.items()},
            "moment_sources": {m: {k: v for k, v in p.to_dict().items() if k != "planned_bytes"}
                               for m, p in predictions.items()},
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


def exceeded_message(moment: str, measured: int, planned: int, margin_bytes: int, set_by: str | None = None) -> str:
    """The one warning line: the moment, measured against planned (and the plan moment that sets it) and
    the margin."""
    basis = f" ({set_by})" if set_by else ""
    return (f"planner: {moment} peaked at {measured / GIB:.2f} GiB, over the plan's {planned / GIB:.2f} GiB{basis} "
            f"plus its {margin_bytes / GIB:.2f} GiB margin by {(measured - planned - margin_bytes) / GIB:.2f} GiB "
            f"(MemoryCallback warns once; every moment is in its record)")


def compare_moments(planned: dict[str, int], measured: dict[str, MomentPeak], margin_bytes: int,
                    sources: dict[str, dict] | None = None) -> dict:
    """Planned against measured per moment (only the moments the run reached); ``sources``: the
    record's ``moment_sources`` (:class:`MomentPrediction`), copied beside each (a record without
    them, written before they existed, compares without)."""
    out = {}
    for m in MOMENTS:
        if m not in measured:
            continue
        peak = measured[m]
        p = int(planned[m])
        out[m] = {**peak.to_dict(), "planned_bytes": p, "planned_with_margin_bytes": p + margin_bytes,
                  "difference": (peak.measured / p - 1) if p else None,
                  "over_plan": over_plan(peak.measured, p, margin_bytes), **(sources or {}).get(m, {})}
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
                           "comparison": compare_moments(plan["moments"], moments, plan["margin_bytes"],
                                                         plan.get("moment_sources"))}
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
    return out + _source_problems(plan.get("moment_sources", {}))


def _source_problems(sources) -> list[str]:
    """``run.plan.moment_sources`` (optional: records written before it existed have none)."""
    if not isinstance(sources, dict):
        return ["'run.plan.moment_sources' must be an object"]
    out = []
    for m, src in sources.items():
        where = f"'run.plan.moment_sources.{m}"
        if m not in MOMENTS or not isinstance(src, dict):
            out.append(f"{where}' must be an object under a moment's name ({', '.join(MOMENTS)})")
            continue
        if not isinstance(src.get("set_by"), str):
            out.append(f"{where}.set_by' must be a string")
        if not (isinstance(src.get("own_bytes"), dict) and all(_number(v) for v in src["own_bytes"].values())):
            out.append(f"{where}.own_bytes' must be an object of numbers")
        if not isinstance(src.get("fallback"), (str, type(None))):
            out.append(f"{where}.fallback' must be a string or null")
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
