"""``planner.MemoryCallback(plan)``: measure a real GRPO run against its plan, moment by moment.

    plan = planner.plan("Qwen/Qwen2.5-7B-Instruct", "auto")
    trainer = GRPOTrainer(model=..., args=plan.grpo_config(), ..., callbacks=[planner.MemoryCallback(plan)])
    trainer.train()          # writes <output_dir>/planner_memory_record.json at the end
    # plan compare <output_dir>/planner_memory_record.json

A ``transformers.TrainerCallback`` for TRL's ``GRPOTrainer`` (Unsloth's trainer subclasses it and
calls the same hooks). At each hook it reads the allocator's peaks since the last hook, resets them
and reads the process's device memory: the moments of planner/profiler/run_record.py. The hooks of
transformers 5.24's ``Trainer._run_epoch`` (trainer.py): ``on_train_begin`` (1653), ``on_step_begin``
(1902, before a step's first micro-batch), ``on_substep_end`` (1969, after every micro-batch but the
last), ``on_pre_optimizer_step`` (1942, after the last micro-batch and gradient clipping),
``on_optimizer_step`` (1944, after ``optimizer.step()``), ``on_step_end`` (1957, after ``zero_grad``),
``on_train_end`` (2038); trainer_callback.py declares them (351-392). TRL 1.16's GRPOTrainer generates
inside ``training_step`` -> ``_prepare_inputs`` (grpo_trainer.py:1510-1539: every
``steps_per_generation * num_iterations`` micro-batches, the weight sync at 1770), so generation falls
in the first micro-batch of a step. Unsloth (2026.10.9, unsloth/models/llama.py:4380-4466) recompiles
transformers' own ``_inner_training_loop`` with a banner and cache-emptying edits: the same hooks fire.

When a moment's measured peak exceeds the plan's prediction for it plus the plan's margin, the
callback issues one :class:`PlanExceededWarning` (``warnings.warn``), once per run, naming the moment
and the plan moment its prediction comes from; the record holds every moment's comparison. The
predictions are run_record.moment_predictions's (the one place ``plan compare`` reads them from too,
through the record): the plan's moments of the trainer step and phases per callback moment, for the
process's role. In a multi-process run every process runs its own callback and writes its own record
(``.rankN``); each is a training rank and is compared with the plan's training-rank figures (rank
0's). The stats source is injectable (:class:`MemoryStats`); the default, :class:`CudaStats`, reads
``torch.cuda`` and NVML, imported when training starts.

This module imports transformers (to subclass ``TrainerCallback``); ``import planner`` does not
import it (``planner.MemoryCallback`` is a lazy export).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from ..errors import InvalidSetupError, NoGpuError
from ..specs.units import MIB
from .run_record import (
    MomentPeak,
    build_record,
    exceeded_message,
    family_fields,
    over_plan,
    plan_summary,
    step_row,
)

RECORD_NAME = "planner_memory_record.json"


class PlanExceededWarning(UserWarning):
    """A moment of the run held more than its plan predicted plus the plan's margin."""


class MemoryStats(Protocol):
    """Where the callback reads memory (bytes). ``reserved_bytes``/``allocated_bytes``: the
    allocator's peaks since the last :meth:`reset_peaks` (right after a reset, what is reserved or
    allocated now); ``device_used_bytes``: this process's device memory now, or None when it cannot
    be read."""

    def reserved_bytes(self) -> int: ...

    def allocated_bytes(self) -> int: ...

    def device_used_bytes(self) -> int | None: ...

    def reset_peaks(self) -> None: ...


class CudaStats:
    """torch.cuda's allocator peaks and NVML's memory of this process on the current device.

    NVML's per-process figure needs this process's PID to be visible to the driver; in a container
    with its own PID namespace it is not, and the device-wide used memory (``cudaMemGetInfo``:
    other processes on the card count too) is read instead. :attr:`source` says which."""

    def __init__(self, device: int | None = None):
        try:
            import torch
        except ImportError:
            raise NoGpuError("MemoryCallback's default stats need torch with CUDA; pass stats=...") from None
        if not torch.cuda.is_available():
            raise NoGpuError("MemoryCallback: no CUDA device visible to torch; its default stats read "
                             "torch.cuda and NVML (pass stats=... to measure otherwise)")
        self.torch = torch
        self.device = torch.cuda.current_device() if device is None else device
        self._nvml = self._nvml_handle()
        self.source = "nvml_process" if self._nvml is not None else "device_wide"

    def _nvml_handle(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            index = getattr(self.torch.cuda, "_get_nvml_device_index", lambda d: d)(self.device)
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return (pynvml, handle) if self._process_bytes(pynvml, handle) is not None else None
        except Exception:  # noqa: BLE001 - no NVML, no driver access: the device-wide figure instead
            return None

    @staticmethod
    def _process_bytes(pynvml, handle) -> int | None:
        pid = os.getpid()
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if p.pid == pid and p.usedGpuMemory is not None:
                return int(p.usedGpuMemory)
        return None

    def reserved_bytes(self) -> int:
        return int(self.torch.cuda.max_memory_reserved(self.device))

    def allocated_bytes(self) -> int:
        return int(self.torch.cuda.max_memory_allocated(self.device))

    def reset_peaks(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def device_used_bytes(self) -> int | None:
        if self._nvml is not None:
            used = self._process_bytes(*self._nvml)
            if used is not None:
                return used
        free, total = self.torch.cuda.mem_get_info(self.device)
        return int(total - free)

    def device_name(self) -> str:
        return str(self.torch.cuda.get_device_name(self.device))


def _versions() -> dict:
    from ..memory.calibration import installed_versions

    return installed_versions()


class MemoryCallback(TrainerCallback):
    """Record each moment's allocator and device peaks of a GRPO run, warn once when one exceeds the
    plan, and write a record (a calibration profile plus the comparison) at the end of training.

    ``plan``: the :class:`~planner.search.results.Plan` the run follows. ``output``: the record's
    path (default ``<output_dir>/planner_memory_record.json``; ``.rankN`` is added before ``.json``
    on every process but the first of a multi-process run). ``stats``: a :class:`MemoryStats`
    (default :class:`CudaStats`, built when training starts). ``warn``: issue the warning.
    """

    def __init__(self, plan, *, output: str | os.PathLike | None = None, stats: MemoryStats | None = None,
                 warn: bool = True):
        if not hasattr(plan, "training_rank") or not hasattr(plan, "setup"):
            raise InvalidSetupError(f"MemoryCallback needs a planner.Plan (planner.plan(...)), got "
                                    f"{type(plan).__name__}")
        self.plan = plan
        self.summary = plan_summary(plan)
        self.output = output
        self.stats = stats
        self.warn = warn
        self.warned: str | None = None  # the moment warned about
        self.moment: str | None = None  # the moment open now
        self.moments: dict[str, MomentPeak] = {}
        self.steps: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.record: dict[str, Any] | None = None
        self.path: Path | None = None
        self._step: dict[str, MomentPeak] = {}
        self._non_torch: int | None = None
        self._before = 0
        self._load: dict[str, Any] = {}
        self._family_fields: dict[str, Any] = {}
        self._hook: Any = None
        self._shape_seen: tuple[int, int, int] | None = None  # the step's largest micro-batch trained

    # -- reading at a boundary --------------------------------------------------------------------
    def _boundary(self, next_moment: str | None) -> tuple[int, int | None]:
        """Close the open moment (its peaks, the device reading now), reset the peaks, open
        ``next_moment``; returns (allocated now, device used now)."""
        stats = self.stats
        assert stats is not None
        alloc, reserved, used = stats.allocated_bytes(), stats.reserved_bytes(), stats.device_used_bytes()
        stats.reset_peaks()
        closing, self.moment = self.moment, next_moment
        if closing is not None:
            device_peak = None
            if used is not None:
                device_peak = max(used, reserved + (self._non_torch or 0))
            self._note(closing, MomentPeak(int(alloc), int(reserved), used, device_peak))
        return int(stats.allocated_bytes()), used

    def _note(self, moment: str, peak: MomentPeak) -> None:
        """File a closed moment: the run's largest, this step's, and the warning."""
        self.moments[moment] = self.moments[moment].merge(peak) if moment in self.moments else peak
        if moment == "between_steps":  # after the step that just ended (before the first: the run's only)
            if self.steps:
                self.steps[-1]["moments"]["between_steps"] = peak.to_dict()
        elif moment != "load":
            self._step[moment] = self._step[moment].merge(peak) if moment in self._step else peak
        planned = self.summary["moments"][moment]
        margin = self.summary["margin_bytes"]
        if self.warn and self.warned is None and over_plan(peak.measured, planned, margin):
            self.warned = moment
            set_by = self.summary["moment_sources"][moment]["set_by"]
            warnings.warn(exceeded_message(moment, peak.measured, planned, margin, set_by), PlanExceededWarning,
                          stacklevel=4)

    # -- the hooks --------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.stats is None:
            self.stats = CudaStats()
        # every trainer process is a training rank (a server GPU runs trl vllm-serve, no trainer): its
        # prediction is the plan's training-rank figures (rank 0's, the largest), whatever its index
        self.summary["rank"] = int(getattr(args, "process_index", 0) or 0)
        self.moment = "load"
        allocated, used = self._boundary("between_steps")
        reserved_now = int(self.stats.reserved_bytes())
        if used is not None:
            self._non_torch = max(0, used - reserved_now)
        self._load = self._load_fields(model, allocated, reserved_now, used)
        self._family_fields = self._family(args)
        if model is not None and hasattr(model, "register_forward_pre_hook"):
            self._hook = model.register_forward_pre_hook(self._observe, with_kwargs=True)

    def _observe(self, module, args, kwargs) -> None:
        """The shape of each micro-batch trained (a forward with gradients): (batch, prompt, completion),
        the completion being the labelled tail (TRL 1.16 labels only the last ``logits_to_keep``
        tokens, grpo_trainer.py:1494-1497); without labels, all of it counts as prompt."""
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if not torch.is_grad_enabled() or not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            return
        batch, seq = (int(n) for n in ids.shape)
        labels = kwargs.get("labels")
        completion = 0
        if isinstance(labels, torch.Tensor) and labels.shape == ids.shape:
            scored = (labels != -100).any(dim=0)
            completion = seq - int(scored.int().argmax()) if bool(scored.any()) else 0
        shape = (batch, seq - completion, completion)
        if self._shape_seen is None or batch * seq > self._shape_seen[0] * sum(self._shape_seen[1:]):
            self._shape_seen = shape

    def on_step_begin(self, args, state, control, **kwargs):
        self._before, _ = self._boundary("generation_and_backward")

    def on_substep_end(self, args, state, control, **kwargs):
        self._boundary("later_micro_batches")

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._boundary("optimizer_step")

    def on_optimizer_step(self, args, state, control, **kwargs):
        _, used = self._boundary("between_steps")
        self.rows.append(step_row(self._family_fields, self._load, self._shape(args), self._step, self._before,
                                  used))
        self.steps.append({"step": int(state.global_step) + 1,
                           "moments": {m: p.to_dict() for m, p in self._step.items()}})
        self._step = {}
        self._shape_seen = None

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.moment is not None:
            self._boundary(None)
        self.record = self._record()
        self.path = self._write(args)

    # -- the record -------------------------------------------------------------------------------
    def _family(self, args) -> dict[str, Any]:
        from ..memory.allocator import expandable_segments_from_env

        optim = getattr(args, "optim", "")
        return family_fields(self.plan, str(getattr(optim, "value", optim)), expandable_segments_from_env())

    def _shape(self, args) -> dict[str, Any]:
        """The step's shape as the calibration rows give it: the largest micro-batch the model was seen
        training (``shape_source: observed``), else TRL's micro-batch, the plan's prompt length and
        TRL's completion bound (``bounds``: a batch pads to its longest prompt and completion, which
        can be shorter, so a fit over such rows can under-state the tokens' cost)."""
        # transformers 5 renamed gradient_checkpointing (kept as a mirrored alias) to activation_checkpointing
        checkpointing = getattr(args, "activation_checkpointing", None)
        if checkpointing is None:
            checkpointing = getattr(args, "gradient_checkpointing", False)
        if self._shape_seen is not None:
            batch, prompt, completion = self._shape_seen
            source = "observed"
        else:
            batch, prompt = int(args.per_device_train_batch_size), int(self.plan.setup.prompt_length)
            completion = int(getattr(args, "max_completion_length", None) or self.plan.setup.completion_length)
            source = "bounds"
        return {"grad_ckpt": bool(checkpointing), "batch": batch, "prompt_len": prompt, "completion_len": completion,
                "shape_source": source}

    def _load_fields(self, model, allocated: int, reserved: int, used: int | None) -> dict[str, Any]:
        params = list(model.parameters()) if model is not None else []
        out: dict[str, Any] = {"n_params": int(sum(p.numel() for p in params)),
                               "n_trainable": int(sum(p.numel() for p in params if p.requires_grad)),
                               "allocated_mib_after_load": allocated / MIB, "reserved_mib_after_load": reserved / MIB,
                               "device_total_mib": self.summary["gpu_total_bytes"] / MIB}
        if used is not None:
            out["device_used_mib_after_load"] = used / MIB
        return out

    def _record(self) -> dict[str, Any]:
        from ..memory.calibration import fingerprint

        stats = self.stats
        device_name = str(getattr(stats, "device_name", lambda: "")())
        versions = _versions()
        env = {"stage": "env", **versions, "gpu": device_name or self.summary["gpu"],
               "total_mib": self.summary["gpu_total_bytes"] / MIB}
        rows = [env, {**self._family_fields, **self._load, "stage": "load"}, *self.rows]
        gpu = {"name": self.summary["gpu"], "device_name": device_name,
               "total_bytes": self.summary["gpu_total_bytes"], "driver": ""}
        entry = {"model_id": self.plan.model.model_id, "fingerprint": fingerprint(self.plan.model)}
        return build_record(plan=self.summary, moments=self.moments, steps=self.steps, rows=rows,
                            model_entry=entry, gpu=gpu, versions=versions,
                            device_source=str(getattr(stats, "source", type(stats).__name__)))

    def _write(self, args) -> Path:
        import json

        from ..report.files import write_file

        path = Path(self.output) if self.output is not None else Path(args.output_dir) / RECORD_NAME
        rank = int(getattr(args, "process_index", 0) or 0)
        if rank:
            path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_file(path, json.dumps(self.record, indent=1) + "\n", force=True)
