"""What the planner returns: :class:`Estimate` (one fixed setup) and :class:`Plan` (the solver's
choice for 1..N GPUs), with the pieces they are made of. Only data and its rendering to JSON live
here; the solver builds them (planner/search/solver.py), checks and the hand-off read them.

One JSON schema for every plan and both runtimes: ``runtime``, ``config`` (GRPOConfig keyword
arguments), ``phases`` (the training GPU's phases, each with ``peak_bytes``), ``vllm``, ``trainer`` (with
``moments``: each moment of the training step in bytes, ``binding_moment``: the largest, whose terms are
``components``; per rank under ``roles``),
``peak_bytes``, ``budget_bytes``, ``headroom_bytes``, ``margin``, ``fits``, ``checks``, ``reasons``,
``warnings``, ``assumptions``, ``next_steps``, ``objective``, ``topology``; a plan with more than one
GPU also has ``roles`` (per-role memory: the training rank and a server GPU), ``layouts`` (every
layout compared), ``accelerate``, ``deepspeed`` and ``server``. What only one runtime has lives
under that runtime's key (``"unsloth": {...}``: from_pretrained / get_peft_model keyword arguments,
environment, utilisation asked vs received, Unsloth's own estimates: ``Plan.runtime_details``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..memory.phases import ColocatedPhases, GeneratePhases, Phase, PhasePeaks, build_phases, colocated_phases
from ..memory.sharding import RankMemory
from ..memory.trainer import TrainerMemory, TrainerSetup
from ..memory.vllm import VllmCapacity
from ..specs.gpu import GpuSpec
from ..specs.model import ModelSpec
from ..specs.topology import DEEPSPEED_DEFAULTS, Topology
from ..timing.step import StepTime
from .objective import OBJECTIVE, Candidate, objective_lines, score
from .timing import estimate_time, plan_time

if TYPE_CHECKING:
    from ..checks.preflight import Check

__all__ = ["OBJECTIVE", "Estimate", "Option", "LayoutResult", "RoleMemory", "Plan", "engine_concurrency",
           "rollout_summary", "waves_for"]


# -- one fixed setup ---------------------------------------------------------------------------

def rollout_summary(turns: int, prompt_length: int, completion_length: int) -> dict[str, int]:
    """The JSON's ``rollout`` of a multi-turn ``rollout_func`` that concatenates its turns: what vLLM
    serves per turn and what the trainer trains on (``turns`` of them one after the other)."""
    return {"turns": turns, "turn_prompt_length": prompt_length, "turn_completion_length": completion_length,
            "trained_prompt_length": turns * prompt_length, "trained_completion_length": turns * completion_length}


@dataclass(frozen=True)
class Estimate:
    """The memory of one setup: trainer terms, optionally vLLM and the colocated phases."""

    model: ModelSpec
    gpu: GpuSpec
    setup: TrainerSetup
    trainer: TrainerMemory
    memory_model: str = "analytic"  # or "calibrated (H100-80GB, trl 1.16.0, ...)"
    vllm: VllmCapacity | None = None  # when colocated
    phases: ColocatedPhases | GeneratePhases | None = None  # when colocated, or generating without vLLM
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # expected_completion_length / reward_seconds_per_completion for the step time (planner.search.timing)
    timing_inputs: dict[str, Any] = field(default_factory=dict)

    def step_time(self) -> StepTime | None:
        """The predicted seconds per optimizer step by phase (None when no generation is modelled)."""
        return estimate_time(self, **self.timing_inputs)

    @property
    def peak_bytes(self) -> int:
        """The process's peak: the trainer's alone, or the larger colocated phase."""
        return self.phases.peak_bytes if self.phases is not None else self.trainer.peak_bytes

    @property
    def headroom_bytes(self) -> int:
        """The card less the peak (an estimate keeps no margin: a plan does)."""
        return self.gpu.total_bytes - self.peak_bytes

    @property
    def fits(self) -> bool:
        ok = self.peak_bytes <= self.gpu.usable_bytes
        if self.vllm is not None:
            ok = ok and self.vllm.startup_ok
        return ok

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": model_dict(self.model, counts=True),
            "gpu": self.gpu.to_dict(),
            "setup": setup_dict(self.setup),
            "trainer": self.trainer.to_dict(),
            "memory_model": self.memory_model,
            "fits": self.fits,
            "peak_bytes": self.peak_bytes,
            "headroom_bytes": self.headroom_bytes,
            "warnings": list(self.warnings),
        }
        if self.vllm is not None:
            d["vllm"] = self.vllm.to_dict()["vllm"]
        if self.phases is not None:
            d["phases"] = self.phases.to_dict()
        t = self.step_time()
        if t is not None:
            d["time"] = t.to_dict()
        d.update(self.extra)
        return d


def model_dict(spec: ModelSpec, counts: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"id": spec.model_id, "params": spec.n_params, "source": spec.source}
    if counts:
        d["param_counts"] = spec.param_counts().to_dict()
    return d


def setup_dict(setup: TrainerSetup) -> dict[str, Any]:
    d = {k: getattr(setup, k) for k in setup.__dataclass_fields__}
    if setup.lora_target_modules is not None:
        d["lora_target_modules"] = list(setup.lora_target_modules)
    return d


# -- the solver's pieces ------------------------------------------------------------------------

def engine_concurrency(cap: VllmCapacity) -> int:
    """Full-length sequences one vLLM engine decodes at once: its KV cache's concurrency, capped by
    the ``max_num_seqs`` it was built with."""
    return max(0, min(cap.max_num_seqs, int(cap.max_concurrency)))


def waves_for(topo: Topology, completions_per_device: int, concurrency: int) -> int:
    """Generation rounds per step: colocated, each engine serves its TP group's requests
    (``B x S x TP``) from its share of ``concurrency``; a server serves all ``B x S x N``."""
    if concurrency <= 0:
        return 0
    if topo.vllm_mode == "colocate":
        per_engine = max(1, concurrency // topo.num_engines)
        return max(1, math.ceil(completions_per_device * topo.vllm_tensor_parallel_size / per_engine))
    return max(1, math.ceil(completions_per_device * topo.world_size / concurrency))


@dataclass(frozen=True)
class Option:
    """One configuration of one layout: the search's candidate."""

    topology: Topology
    completion_length: int
    batch_size: int
    completions_per_device: int  # B x S
    utilization: float  # colocate: vllm_gpu_memory_utilization; server: the server's
    sleep: bool
    concurrency: int  # sequences decoded at once by all engines together
    peak_bytes: int  # the training GPU's largest phase, exactly as reported
    server_peak_bytes: int = 0
    step_seconds: float = 0.0  # predicted seconds per optimizer step (planner.search.timing.option_time)

    @property
    def steps_per_generation(self) -> int:
        return self.completions_per_device // self.batch_size

    @property
    def completions(self) -> int:
        return self.completions_per_device * self.topology.world_size

    @property
    def one_wave(self) -> int:
        return min(self.completions, self.concurrency)

    @property
    def waves(self) -> int:
        return waves_for(self.topology, self.completions_per_device, self.concurrency)

    def candidate(self) -> Candidate:
        """What the objective reads of this option (planner.search.objective), global (all engines together)."""
        t = self.topology
        tp = t.vllm_tensor_parallel_size if t.vllm_mode == "colocate" else t.server_tensor_parallel_size
        return Candidate(completion_length=self.completion_length, completions=self.completions, waves=self.waves,
                         batch_size=self.batch_size, utilization=self.utilization, sleep=self.sleep,
                         engine=t.engine, tensor_parallel_size=tp, step_seconds=self.step_seconds)

    def key(self) -> tuple:
        """The objective's score (planner.search.objective.score): larger is better."""
        return score(self.candidate())


@dataclass(frozen=True)
class LayoutResult:
    """One row of the layout comparison: a layout, its best configuration or why nothing fits."""

    topology: Topology
    option: Option | None = None
    why: str = ""
    chosen: bool = False
    over_budget: bool = False  # a setup evaluated as given (solver.evaluate) whose peak is over a GPU's budget

    @property
    def fits(self) -> bool:
        """A configuration of this layout fits every GPU: the search's best, or a setup as given
        that stays under every budget (and whose vLLM starts)."""
        return self.option is not None and not self.over_budget

    def to_dict(self) -> dict[str, Any]:
        t, o = self.topology, self.option
        server = t.vllm_mode == "server"
        d: dict[str, Any] = {
            "layout": t.label, "vllm_mode": t.vllm_mode, "engine": t.engine,
            "vllm_tensor_parallel_size": None if server else t.vllm_tensor_parallel_size,
            "server_gpus": t.server_gpus, "server_tensor_parallel_size": t.server_tensor_parallel_size if server else None,
            "server_data_parallel_size": t.server_data_parallel_size if server else None,
            "training_gpus": t.training_gpus, "fits": self.fits, "chosen": self.chosen, "why": self.why}
        if o is not None:
            d.update(peak_bytes=o.peak_bytes, server_peak_bytes=o.server_peak_bytes or None,
                     completion_length=o.completion_length, micro_batch=o.batch_size,
                     steps_per_generation=o.steps_per_generation, completions_per_step=o.completions,
                     completions_in_one_wave=o.one_wave, concurrency=o.concurrency, utilization=o.utilization,
                     sleep_mode=o.sleep, waves=o.waves,
                     step_seconds=round(o.step_seconds, 2) if o.step_seconds else None)
        return d


@dataclass(frozen=True)
class RoleMemory(PhasePeaks):
    """The memory of one role: a training rank (the worst, rank 0) or a server GPU. ``blocks`` are
    the phase blocks (planner.memory.phases); the phases are built from them."""

    role: str  # "training_rank" | "server_gpu"
    count: int
    devices: str
    blocks: dict[str, dict[str, int]]
    placement: str  # planner.memory.phases.PLACEMENTS, or "server" for a server GPU
    sleep_mode: bool
    budget_bytes: int
    rank: RankMemory | None = None
    vllm: VllmCapacity | None = None  # this GPU's vLLM share

    @property
    def phases(self) -> tuple[Phase, ...]:  # type: ignore[override]
        if self.placement == "server":
            return (Phase("serving", dict(self.blocks["vllm_awake"])),)
        if self.placement == "unsloth":  # Unsloth's runtime: its phases are the blocks (planner.runtimes.unsloth)
            return tuple(Phase(name, dict(parts)) for name, parts in self.blocks.items())
        return build_phases(self.blocks, self.placement, self.sleep_mode)

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.peak_bytes

    def colocated_phases(self) -> ColocatedPhases | None:
        if self.placement != "colocate":
            return None
        return colocated_phases(self.blocks, self.sleep_mode)

    def phases_dict(self) -> dict[str, Any]:
        cp = self.colocated_phases()
        if cp is not None:
            return cp.to_dict()
        d: dict[str, Any] = {p.name: p.to_dict() for p in self.phases}
        d.update(peak_bytes=self.peak_bytes, binding_phase=self.binding_phase, sleep_mode=self.sleep_mode)
        return d

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"count": self.count, "devices": self.devices, "peak_bytes": self.peak_bytes,
                             "budget_bytes": self.budget_bytes, "headroom_bytes": self.headroom_bytes,
                             "binding_phase": self.binding_phase,
                             "phases": {p.name: p.to_dict() for p in self.phases}}
        if self.rank is not None:
            d["trainer"] = self.rank.to_dict()
        if self.vllm is not None:
            d["vllm"] = self.vllm.to_dict()["vllm"]
        return d


# -- the plan ---------------------------------------------------------------------------------

# vLLM's engine arguments that the GRPOConfig carries under TRL's name (GRPOConfig -> vllm.LLM)
TRL_NAME_OF_ENGINE_ARG = {"gpu_memory_utilization": "vllm_gpu_memory_utilization",
                          "max_model_len": "vllm_max_model_length",
                          "tensor_parallel_size": "vllm_tensor_parallel_size"}


def engine_dict(vllm: VllmCapacity, config: dict[str, Any]) -> dict[str, Any]:
    """A plan's vLLM figures without the settings its ``config`` already names (one name for one
    setting: TRL's, ``config.vllm_max_model_length``, not also ``vllm.max_model_len``). What vLLM
    receives under another value stays (Unsloth's utilisation override: ``config`` has none)."""
    d = vllm.to_dict()["vllm"]
    return {k: v for k, v in d.items() if TRL_NAME_OF_ENGINE_ARG.get(k) not in config}


@dataclass(frozen=True)
class Plan:
    """A configuration that fits on 1..N GPUs: the layout, the memory per role and phase, the
    configs the engines read, and why each choice was made. ``runtime``: ``"trl"`` (TRL's
    GRPOTrainer with colocated or served vLLM) or ``"unsloth"`` (Unsloth's fast_inference=True on
    one GPU; ``runtime_details`` holds what only it has, planner.search.unsloth_solver.UnslothRuntime)."""

    model: ModelSpec
    gpu: GpuSpec  # the card planned for (the smallest given)
    gpus: tuple[GpuSpec, ...]  # every card given
    topology: Topology
    setup: TrainerSetup  # the trainer as planned (batch, lengths, weights, LoRA, ...)
    trainer: TrainerMemory  # one process's trainer terms (calibrated where a profile covers them)
    config: dict[str, Any]  # GRPOConfig keyword arguments
    roles: dict[str, RoleMemory]
    margin: float
    targets: dict[str, Any]  # what the user asked for
    option: Option  # the search's chosen candidate
    reasons: tuple[str, ...] = ()
    layouts: tuple[LayoutResult, ...] = ()
    checks: tuple[Check, ...] = ()
    memory_model: str = "analytic"
    warnings: tuple[str, ...] = ()
    accelerate: dict[str, Any] = field(default_factory=dict)  # accelerate config file content
    deepspeed: dict[str, Any] | None = None  # deepspeed.json content when a ZeRO stage is chosen
    server: dict[str, Any] | None = None  # `trl vllm-serve` settings in server mode
    extra: dict[str, Any] = field(default_factory=dict)
    pinned: tuple[str, ...] = ()  # the TRL keys the user fixed (request.Pins)
    binding: dict[str, Any] = field(default_factory=dict)  # what stopped a larger plan (solver._binding)
    assumptions: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {value, source}
    next_steps: dict[str, Any] = field(default_factory=dict)  # the command and Python to run next
    runtime: str = "trl"  # trl | unsloth
    runtime_details: Any = None  # the runtime's own figures (to_dict() goes under the runtime's key)
    # what the plan changed: {key, from, to, why} per modelled key whose value differs from the one given
    # (a flag, a --config key) or, left out, from TRL's default (planner.report.changes)
    changes: tuple[dict[str, Any], ...] = ()
    # expected_completion_length / reward_seconds_per_completion for the step time (planner.search.timing)
    timing_inputs: dict[str, Any] = field(default_factory=dict)

    def step_time(self) -> StepTime:
        """The predicted seconds per optimizer step, by phase (planner.search.timing.plan_time)."""
        return plan_time(self, **self.timing_inputs)

    # -- derived ------------------------------------------------------------------------------
    @property
    def multi_gpu(self) -> bool:
        return self.topology.total_gpus > 1

    @property
    def rollout_turns(self) -> int:
        """Turns of a multi-turn rollout the trainer trains on at once (1: one prompt + completion)."""
        return int(self.extra.get("rollout", {}).get("turns", 1))

    @property
    def turn_prompt_length(self) -> int:
        """The prompt vLLM serves, the longest (``setup.prompt_length`` is what the trainer trains on:
        the typical length a batch pads to when one was given, ``extra["max_prompt_length"]`` the bound)."""
        if "max_prompt_length" in self.extra:
            return int(self.extra["max_prompt_length"])
        return self.setup.prompt_length // self.rollout_turns

    @property
    def turn_completion_length(self) -> int:
        """The completion vLLM generates per turn (``setup.completion_length``: what the trainer trains on)."""
        return self.setup.completion_length // self.rollout_turns

    @property
    def training_rank(self) -> RoleMemory:
        return self.roles["training_rank"]

    @property
    def budget_bytes(self) -> int:
        """The card less the safety margin (TRL: and less what other processes hold on a live card;
        Unsloth counts those in its phases, as memory in use before vLLM)."""
        return self.training_rank.budget_bytes

    @property
    def peak_bytes(self) -> int:
        """The largest per-GPU peak of any role."""
        return max(r.peak_bytes for r in self.roles.values())

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.peak_bytes

    @property
    def fits(self) -> bool:
        return all(r.peak_bytes <= r.budget_bytes and (r.vllm is None or r.vllm.startup_ok)
                   for r in self.roles.values())

    @property
    def phases(self) -> ColocatedPhases | None:
        """The training GPU's colocated phases (None when vLLM runs as a server elsewhere)."""
        return self.training_rank.colocated_phases()

    @property
    def vllm(self) -> VllmCapacity | None:
        """The colocated engine's share of a training GPU, or the server's engine."""
        if self.training_rank.vllm is not None:
            return self.training_rank.vllm
        server = self.roles.get("server_gpu")
        return server.vllm if server is not None else None

    @property
    def vllm_start_bytes(self) -> int:
        """What the trainer holds when a colocated vLLM starts."""
        rank = self.training_rank.rank
        return rank.vllm_start_bytes if rank is not None else self.trainer.load_bytes

    @property
    def waves(self) -> int:
        return self.option.waves

    @property
    def layout(self) -> str:
        return self.topology.vllm_mode

    @property
    def lora_alpha(self) -> int | None:
        """LoRA alpha for the hand-off: 2 x rank."""
        return 2 * self.setup.lora_rank if self.setup.finetune == "lora" else None

    def pin_value(self, name: str) -> Any:
        """The plan's value for a pinnable TRL key (planner.search.request.Pins)."""
        c = self.config
        if name in ("gradient_accumulation_steps", "steps_per_generation"):
            return c["gradient_accumulation_steps"]
        if name in ("generation_batch_size", "completions_per_step"):
            return c["generation_batch_size"]
        if name == "max_prompt_length":
            return self.turn_prompt_length
        if name == "lora_r":
            return self.setup.lora_rank
        if name == "vllm_gpu_memory_utilization" and self.runtime == "unsloth":
            return self.runtime_details.estimate.requested_gpu_memory_utilization  # from_pretrained's
        if name == "lora_target_modules":
            mods = self.setup.lora_target_modules
            return list(mods) if mods is not None else "all-linear"
        return c.get(name)

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        tr = self.training_rank
        vllm = self.vllm
        d: dict[str, Any] = {
            "runtime": self.runtime,
            "model": model_dict(self.model),
            "gpu": self.gpu.to_dict(),
            "config": dict(self.config),
            "phases": tr.phases_dict(),
            "vllm": engine_dict(vllm, self.config) if vllm is not None else None,
            "trainer": {**self.trainer.to_dict(), **({"rank": tr.rank.to_dict()} if tr.rank else {})},
            "fits": self.fits,
            "peak_bytes": self.peak_bytes,
            "budget_bytes": self.budget_bytes,
            "headroom_bytes": self.headroom_bytes,
            "margin": self.margin,
            "waves": self.waves,
            "topology": self.topology.to_dict(),
            "objective": list(objective_lines(self.runtime)),
            "reasons": list(self.reasons),
            "targets": dict(self.targets),
            "memory_model": self.memory_model,
            "warnings": list(self.warnings),
            "checks": [c.to_dict() for c in self.checks],
            "pinned": list(self.pinned),
            "assumptions": {k: dict(v) for k, v in self.assumptions.items()},
            "binding": dict(self.binding),
            "next_steps": dict(self.next_steps),
            "changes": [dict(c) for c in self.changes],
            "time": self.step_time().to_dict(),
        }
        if self.multi_gpu:
            d.update(gpus=[g.name for g in self.gpus], layout=self.layout,
                     roles={k: v.to_dict() for k, v in self.roles.items()},
                     layouts=[row.to_dict() for row in self.layouts], accelerate=dict(self.accelerate),
                     deepspeed=self.deepspeed, server=self.server, deepspeed_defaults=dict(DEEPSPEED_DEFAULTS))
        if self.runtime_details is not None:
            d[self.runtime] = self.runtime_details.to_dict()
        d.update(self.extra)
        return d

    # -- hand-off (planner/runtimes/trl_handoff.py) -------------------------------------------------------
    def grpo_config(self, **overrides: Any) -> Any:
        """A real ``trl.GRPOConfig`` with the planned settings (``overrides`` win)."""
        from ..runtimes.trl_handoff import grpo_config_from_plan

        return grpo_config_from_plan(self, **overrides)

    def model_init_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments that load the model as planned (dtype, 4-bit)."""
        from ..runtimes.trl_handoff import model_init_kwargs_from_plan

        return model_init_kwargs_from_plan(self)

    def peft_config(self) -> Any:
        """A ``peft.LoraConfig`` with the planned rank and targets (None for full fine-tuning)."""
        from ..runtimes.trl_handoff import peft_config_from_plan

        return peft_config_from_plan(self)
