"""The phases of a GRPO step on one GPU, from one table: the search's peak and the reported phases
are both derived from :data:`PHASE_BLOCKS`, so they are equal by construction.

What TRL 1.16 does (trl/generation/vllm_generation.py; docs/trl-grpo.md §3):
- **load**: the trainer's weights and adapters are on the GPU when ``vllm.LLM`` starts; vLLM
  takes ``ceil(total x utilization)`` if that much is free, else refuses to start. vLLM maps its
  whole budget at start-up (and profiles with it) before TRL can put it to sleep.
- **generation**: vLLM decodes with its weights and pre-allocated KV cache. Without sleep mode
  nothing empties the trainer's allocator cache, so the trainer's reserved pool from the last
  training step is still mapped: the process holds the trainer's step peak plus vLLM's footprint.
  With sleep mode TRL calls ``empty_cache()`` and wakes vLLM: the trainer's resident state plus
  vLLM's full footprint.
- **weight sync** (once per optimizer step, before generation): PEFT ``merge_adapter()`` builds
  each LoRA delta ``B @ A`` transiently (fp32, plus a dequantised copy for 4-bit bases), then
  pushes every tensor into vLLM one at a time (multi-GPU engines add their gathers, see
  ``planner.memory.sharding.weight_sync_transient``).
- **training**: the trainer's step peak plus vLLM's footprint, or, with sleep mode (level 2),
  only what stays mapped while vLLM sleeps (CUDA-graph pool, context, buffers).
A GPU without vLLM (a training rank of a ``trl vllm-serve`` layout) has load, weight sync and
training. Without vLLM at all (``use_vllm=False``, placement ``"generate"``) the trainer generates
with transformers' ``generate`` on its own weights: load, generation (the resident state plus the
``generate`` block; the training step's cached blocks are taken as reusable by it, since nothing
empties the cache and the two never coexist: a bound, not measured) and training; no weight sync.
The process's peak is the largest phase.

Each phase is a sum of *blocks*; each block is a dict of named components (bytes):

==============  =====================================================================
block           components
==============  =====================================================================
``load``        trainer terms resident after loading (``optimizer_state`` 0 where the
                optimizer creates its state lazily, at the first step)
``resident``    trainer terms between steps (every term but the step's own)
``step``        every trainer term at the training step's peak
``sync``        the weight sync's transients
``vllm_awake``  vLLM's device footprint awake (``planner.memory.vllm.vllm_process_bytes``)
``vllm_asleep`` what stays mapped while vLLM sleeps (``sleep_resident_bytes``, level 2)
``generate``    transformers' ``generate`` without vLLM: its KV cache, forward, sampling
                (``planner.memory.generate.generation_components``)
==============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..specs.model import ModelSpec
from .lora import lora_targets
from .trainer import TrainerSetup
from .vllm import VllmCapacity, sleep_resident_bytes, vllm_process_bytes

# Trainer terms alive only during a training step; every other term is resident between steps.
STEP_COMPONENTS = ("gradients", "activations", "logprob_head", "allocator_reserve", "optimizer_step", "clip_grad",
                   "autocast_cache", "fp32_gradient_partition", "gather_working_set")

# where vLLM runs relative to this GPU: "colocate" (in the same process), "none" (a server elsewhere) or
# "generate" (no vLLM: transformers' generate in the trainer, use_vllm=False)
PLACEMENTS = ("colocate", "none", "generate")

# (placement, sleep mode) -> the phases, in order, each a tuple of blocks
PHASE_BLOCKS: dict[tuple[str, bool], tuple[tuple[str, tuple[str, ...]], ...]] = {
    ("colocate", False): (("load", ("load", "vllm_awake")),
                          ("weight_sync", ("step", "vllm_awake", "sync")),
                          ("generation", ("step", "vllm_awake")),
                          ("training", ("step", "vllm_awake"))),
    ("colocate", True): (("load", ("load", "vllm_awake")),
                         ("weight_sync", ("resident", "vllm_awake", "sync")),
                         ("generation", ("resident", "vllm_awake")),
                         ("training", ("step", "vllm_asleep"))),
    ("none", False): (("load", ("load",)),
                      ("weight_sync", ("step", "sync")),
                      ("training", ("step",))),
    ("generate", False): (("load", ("load",)),
                          ("generation", ("resident", "generate")),
                          ("training", ("step",))),
}


@dataclass(frozen=True)
class Phase:
    """One phase: bytes by component (trainer side and vLLM side) and their sum."""

    name: str
    components: dict[str, int] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return sum(self.components.values())

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "components": dict(self.components)}


class PhasePeaks:
    """Mixin for anything holding ``phases`` (a tuple of :class:`Phase`): the peak and the phase
    that sets it."""

    phases: tuple[Phase, ...]

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.phases)

    @property
    def binding_phase(self) -> str:
        return max(self.phases, key=lambda p: p.peak_bytes).name

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    def __getitem__(self, name: str) -> Phase:
        return self.phase(name)

    def _phases_and_peak(self) -> dict:
        """Every phase's dict, the peak and the binding phase: what each ``to_dict`` starts from."""
        d: dict = {p.name: p.to_dict() for p in self.phases}
        d["peak_bytes"] = self.peak_bytes
        d["binding_phase"] = self.binding_phase
        return d


# -- the blocks --------------------------------------------------------------------------------

def trainer_blocks(components: Mapping[str, int], sync_components: Mapping[str, int],
                   lazy_optimizer: bool = True) -> dict[str, dict[str, int]]:
    """The trainer's blocks (``load``, ``resident``, ``step``, ``sync``), components named
    ``trainer.<term>``. ``lazy_optimizer``: torch optimizers create their state at the first step
    (DeepSpeed builds its partitions at ``accelerator.prepare``: False)."""
    step = {f"trainer.{k}": int(v) for k, v in components.items()}
    resident = {f"trainer.{k}": int(v) for k, v in components.items() if k not in STEP_COMPONENTS}
    load = dict(resident)
    if lazy_optimizer and "trainer.optimizer_state" in load:
        load["trainer.optimizer_state"] = 0
    sync = {f"trainer.{k}": int(v) for k, v in sync_components.items()}
    return {"load": load, "resident": resident, "step": step, "sync": sync}


def vllm_blocks(capacity: VllmCapacity) -> dict[str, dict[str, int]]:
    """vLLM's blocks: awake (weights, KV cache, activation peak, graphs, non-torch, and the rest of
    its footprint: unused budget, block rounding, graph overshoot) and asleep (level 2)."""
    total = vllm_process_bytes(capacity)
    awake = {"vllm.weights": capacity.weights_bytes, "vllm.kv_cache": capacity.kv_cache_bytes,
             "vllm.activation_peak": capacity.activation_peak_bytes,
             "vllm.cudagraph": capacity.cudagraph_bytes, "vllm.non_torch": capacity.non_torch_bytes}
    # An engine whose weights and profile exceed its budget never starts (capacity.startup_ok False); up to
    # its failure it holds what it loaded, not its budget: no negative remainder.
    awake["vllm.other"] = max(0, total - sum(awake.values()))
    return {"vllm_awake": awake, "vllm_asleep": {"vllm.asleep": sleep_resident_bytes(capacity, level=2)}}


def block_totals(blocks: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Each block's sum: what :func:`phase_peak_bytes` takes."""
    return {name: sum(parts.values()) for name, parts in blocks.items()}


# -- the phases --------------------------------------------------------------------------------

def phase_peak_bytes(totals: Mapping[str, int], placement: str, sleep: bool) -> int:
    """The largest phase from block totals, without building the phases (the search's inner loop)."""
    return max(sum(totals[b] for b in blocks) for _, blocks in PHASE_BLOCKS[(placement, sleep)])


def build_phases(blocks: Mapping[str, Mapping[str, int]], placement: str, sleep: bool) -> tuple[Phase, ...]:
    """The phases, component by component (a component in two blocks of a phase is summed)."""
    out = []
    for name, names in PHASE_BLOCKS[(placement, sleep)]:
        parts: dict[str, int] = {}
        for b in names:
            for k, v in blocks[b].items():
                parts[k] = parts.get(k, 0) + v
        out.append(Phase(name, parts))
    return tuple(out)


def merge_transient_bytes(spec: ModelSpec, setup: TrainerSetup) -> int:
    """Largest transient of PEFT's ``merge_adapter``: one module's fp32 ``B @ A`` delta (and, for a
    4-bit base, its dequantised bf16 weight and the re-quantised copy)."""
    if setup.finetune != "lora":
        return 0
    biggest = max((t.in_features * t.out_features for t in lora_targets(spec, setup.lora_target_modules)),
                  default=0)
    per_elem = 4 + (2 + 0.5 if setup.weights in ("nf4", "int8") else 0)
    return int(biggest * per_elem)


@dataclass(frozen=True)
class ColocatedPhases(PhasePeaks):
    """Load, weight-sync, generation and training of one colocated GPU, for the chosen sleep
    setting, with the other setting's generation and training peaks."""

    phases: tuple[Phase, ...]
    sleep_mode: bool
    other_setting_peaks: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = self._phases_and_peak()
        d["sleep_mode"] = self.sleep_mode
        chosen = {p.name: {"peak_bytes": p.peak_bytes} for p in self.phases if p.name in ("generation", "training")}
        other = {k: {"peak_bytes": v} for k, v in self.other_setting_peaks.items()}
        d["with_sleep_mode"] = chosen if self.sleep_mode else other
        d["without_sleep_mode"] = other if self.sleep_mode else chosen
        return d


@dataclass(frozen=True)
class GeneratePhases(PhasePeaks):
    """Load, generation with transformers' ``generate`` and training of a trainer without vLLM."""

    phases: tuple[Phase, ...]
    warnings: tuple[str, ...] = ()
    sleep_mode: bool = False  # no vLLM to put to sleep

    def to_dict(self) -> dict:
        d = self._phases_and_peak()
        d["generation_backend"] = "transformers"
        return d


def generate_phases(blocks: Mapping[str, Mapping[str, int]], warnings: tuple[str, ...] = ()) -> GeneratePhases:
    """The phases without vLLM (placement ``"generate"``)."""
    return GeneratePhases(phases=build_phases(blocks, "generate", False), warnings=warnings)


def colocated_phases(blocks: Mapping[str, Mapping[str, int]], sleep_mode: bool,
                     warnings: tuple[str, ...] = ()) -> ColocatedPhases:
    """The colocated phases for the chosen sleep setting (and the other's generation/training peaks)."""
    chosen = build_phases(blocks, "colocate", sleep_mode)
    other = build_phases(blocks, "colocate", not sleep_mode)
    return ColocatedPhases(phases=chosen, sleep_mode=sleep_mode,
                           other_setting_peaks={p.name: p.peak_bytes for p in other
                                                if p.name in ("generation", "training")},
                           warnings=warnings)
