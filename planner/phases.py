"""The phases of a colocated GRPO step: one process holds the trainer and the vLLM engine.

What TRL 1.16 does (trl/generation/vllm_generation.py; shared/docs/trl-grpo.md §3):
- **load**: the trainer's weights and adapters are on the GPU when ``vllm.LLM`` starts; vLLM
  takes ``ceil(total x utilization)`` if that much is free, else refuses to start.
- **generation**: vLLM decodes with its weights and pre-allocated KV cache. Without sleep mode
  nothing empties the trainer's allocator cache, so the trainer's reserved pool from the last
  training step is still mapped: the process holds the trainer's peak plus vLLM's footprint.
  With sleep mode TRL calls ``empty_cache()`` and wakes vLLM (weights, then KV cache): the
  trainer's resident state plus vLLM's full footprint.
- **weight sync** (once per optimizer step, before generation): PEFT ``merge_adapter()`` builds
  each LoRA delta ``B @ A`` transiently (fp32, plus a dequantised copy for 4-bit bases), then
  pushes every tensor into vLLM one at a time.
- **training**: the trainer's step peak (trainer.py) plus vLLM's footprint, or, with sleep mode
  (level 2), only what stays mapped while vLLM sleeps (CUDA-graph pool, context, buffers).
The process's peak is the largest phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .gpu_spec import GpuSpec
from .memory.lora import lora_targets
from .memory.trainer import TrainerMemory, TrainerSetup
from .model_spec import ModelSpec


@dataclass(frozen=True)
class Phase:
    """One phase: bytes by component (trainer side and vLLM side) and their sum."""

    name: str
    components: dict = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return sum(self.components.values())

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "components": dict(self.components)}


class PhasePeaks:
    """Mixin for anything holding ``phases`` (a tuple of :class:`Phase`): the peak and the phase
    that sets it."""

    phases: tuple

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.phases)

    @property
    def binding_phase(self) -> str:
        return max(self.phases, key=lambda p: p.peak_bytes).name


@dataclass(frozen=True)
class ColocatedPhases(PhasePeaks):
    """Load, generation, weight-sync and training phases, for the chosen sleep setting and both."""

    phases: tuple  # of Phase, for the chosen sleep mode
    sleep_mode: bool
    other_setting_peaks: dict = field(default_factory=dict)  # {"generation": .., "training": ..} for the other sleep setting
    warnings: tuple = ()

    def __getitem__(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict:
        d = {p.name: p.to_dict() for p in self.phases}
        d["peak_bytes"] = self.peak_bytes
        d["binding_phase"] = self.binding_phase
        d["sleep_mode"] = self.sleep_mode
        chosen = {p.name: {"peak_bytes": p.peak_bytes} for p in self.phases if p.name in ("generation", "training")}
        other = {k: {"peak_bytes": v} for k, v in self.other_setting_peaks.items()}
        d["with_sleep_mode"] = chosen if self.sleep_mode else other
        d["without_sleep_mode"] = other if self.sleep_mode else chosen
        return d


def colocated_peak_bytes(step_peak: int, steady: int, load: int, sync: int, awake: int | None, asleep: int,
                         sleep: bool) -> int:
    """The largest phase without building the phases (the solvers' inner loop); the same sums as
    ``_build``. ``step_peak``/``steady``/``load``: the trainer's step peak, resident state and
    load; ``sync``: the weight-sync transient; ``awake``/``asleep``: vLLM's footprint awake and
    its residue asleep (``awake=None``: no vLLM on this GPU, as on a server-mode training rank)."""
    if awake is None:
        return max(load, step_peak + sync)
    if sleep:
        return max(load + awake, steady + awake + sync, step_peak + asleep)
    return max(load + awake, step_peak + awake + sync)


def merge_transient_bytes(spec: ModelSpec, setup: TrainerSetup) -> int:
    """Largest transient of PEFT's ``merge_adapter``: one module's fp32 ``B @ A`` delta (and, for a
    4-bit base, its dequantised bf16 weight and the re-quantised copy)."""
    if setup.finetune != "lora":
        return 0
    biggest = max((t.in_features * t.out_features for t in lora_targets(spec, setup.lora_target_modules)),
                  default=0)
    per_elem = 4 + (2 + 0.5 if setup.weights in ("nf4", "int8") else 0)
    return int(biggest * per_elem)


def _trainer_parts(trainer: TrainerMemory, include_step: bool) -> dict:
    c = trainer.components
    parts = {"trainer.non_torch": c["non_torch"], "trainer.cublas_workspace": c["cublas_workspace"],
             "trainer.weights": c["weights"],
             "trainer.adapters": c["adapters"], "trainer.optimizer_state": c["optimizer_state"]}
    if include_step:
        parts.update({"trainer.gradients": c["gradients"], "trainer.activations": c["activations"],
                      "trainer.logprob_head": c["logprob_head"], "trainer.allocator_reserve": c["allocator_reserve"]})
    return parts


def _vllm_awake(capacity) -> dict:
    from .vllm import vllm_process_bytes

    total = vllm_process_bytes(capacity)
    parts = {"vllm.weights": capacity.weights_bytes, "vllm.kv_cache": capacity.kv_cache_bytes,
             "vllm.activation_peak": capacity.activation_peak_bytes,
             "vllm.cudagraph": capacity.cudagraph_bytes, "vllm.non_torch": capacity.non_torch_bytes}
    parts["vllm.other"] = total - sum(parts.values())  # unused budget, block rounding, graph overshoot
    return parts


def _vllm_asleep(capacity) -> dict:
    from .vllm import sleep_resident_bytes

    return {"vllm.asleep": sleep_resident_bytes(capacity, level=2)}


def _build(spec, setup, trainer, capacity, sleep: bool) -> tuple:
    merge = merge_transient_bytes(spec, setup)
    awake = _vllm_awake(capacity)
    # vLLM maps its whole budget at start-up (and profiles with it) before TRL puts it to sleep
    load = Phase("load", {**_trainer_parts(trainer, False), "trainer.optimizer_state": 0, **awake})
    if sleep:
        generation = Phase("generation", {**_trainer_parts(trainer, False), **awake})
        sync = Phase("weight_sync", {**_trainer_parts(trainer, False), **awake, "trainer.merge_transient": merge})
        training = Phase("training", {**_trainer_parts(trainer, True), **_vllm_asleep(capacity)})
    else:
        generation = Phase("generation", {**_trainer_parts(trainer, True), **awake})
        sync = Phase("weight_sync", {**_trainer_parts(trainer, True), **awake, "trainer.merge_transient": merge})
        training = Phase("training", {**_trainer_parts(trainer, True), **awake})
    return load, sync, generation, training


def colocated_phases(spec: ModelSpec, gpu: GpuSpec, setup: TrainerSetup, trainer: TrainerMemory, capacity,
                     sleep_mode: bool = False, trl_version: str | None = None) -> ColocatedPhases:
    """Per-phase bytes of the colocated process for the chosen sleep setting (and the other's peaks)."""
    chosen = _build(spec, setup, trainer, capacity, sleep_mode)
    other = _build(spec, setup, trainer, capacity, not sleep_mode)
    warnings = []
    if sleep_mode:
        try:
            from .versions import trl_facts

            facts = trl_facts(trl_version)
            if getattr(facts, "sleep_mode_broken", False):
                warnings.append(f"TRL {facts.version}: colocated sleep mode is known to generate from stale "
                                f"weights (trl#5312); upgrade TRL or disable sleep mode")
        except Exception:  # noqa: BLE001 - unknown TRL version: checks.py reports it
            pass
    return ColocatedPhases(phases=chosen, sleep_mode=sleep_mode,
                           other_setting_peaks={p.name: p.peak_bytes for p in other if p.name in
                                                ("generation", "training")},
                           warnings=tuple(warnings))
