"""``estimate()``: evaluate one fixed setup (no solving) and report every memory term.

    >>> import planner
    >>> e = planner.estimate("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", per_device_train_batch_size=8,
    ...                      max_prompt_length=256, max_completion_length=1792)
    >>> e.trainer.peak_bytes, e.fits
    >>> e.to_dict()          # the JSON `plan estimate --json` prints

With ``vllm_gpu_memory_utilization`` set, the colocated vLLM engine is added: whether it starts
given what the trainer holds at that moment, its KV cache, and the peaks of the generation and
training phases of the whole process (``phases``, from the same phase table the solver uses),
with and without sleep mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from ..checks.preflight import architecture_warnings
from ..errors import InvalidSetupError, VersionError
from ..memory.allocator import expandable_segments_from_env
from ..memory.calibration import apply_calibration, find_calibration
from ..memory.generate import GenerationShape, generation_components, largest_projection_params
from ..memory.logprob_head import trl_logprob_head
from ..memory.phases import (
    ColocatedPhases,
    GeneratePhases,
    colocated_phases,
    generate_phases,
    merge_transient_bytes,
    trainer_blocks,
    vllm_blocks,
)
from ..memory.process import CUDA_CONTEXT_BYTES
from ..memory.trainer import TrainerMemory, TrainerSetup, trainer_memory
from ..memory.vllm import VllmCapacity, baseline_bytes, vllm_capacity
from ..specs.gpu import GpuSpec, resolve_gpu, with_reserve
from ..specs.model import ModelSpec, resolve_model
from ..specs.topology import resolve_gpus
from ..specs.versions import (
    colocate_vllm_version,
    default_optimizer,
    default_weights_format,
    trl_default_model_dtype,
    trl_facts,
    trl_max_model_len,
)
from .request import (
    CompletionLengths,
    Finetune,
    KvCacheDtype,
    LogprobHead,
    Optim,
    PlanRequest,
    Resolved,
    Weights,
    fixed_model_problems,
    fixed_setup_problems,
    model_problems,
    normalise_targets,
    one_setting,
    request_problems,
    typical_prompt_problems,
)
from .results import Estimate, rollout_summary

TRL_DEFAULT = "trl-default"  # weights/optim: what the TRL/transformers release does when the user names none


def default_logprob_head(trl_version: str | None = None, engine: str = "amp", liger: bool = False) -> str:
    """The log-prob head the TRL release uses (fused tiled head in current releases; before, the
    full-logits path: ``plain`` under accelerate's native AMP, a bf16 variant under DeepSpeed;
    with ``use_liger_kernel`` (``liger``) the release's Liger head, ``TrlFacts.liger_head``;
    memory/logprob_head.py)."""
    try:
        facts = trl_facts(trl_version)
    except VersionError:  # an installed TRL outside the table: assume the current release
        return "fused"
    return trl_logprob_head(facts.fused_logprob_head, facts.logprob_temperature, facts.logprob_entropy, engine,
                            liger=facts.liger_head if liger else None)


@dataclass(frozen=True)
class FixedSetup:
    """The inputs of one fixed setup under TRL's names, aliases resolved (what :func:`estimate` takes)."""

    weights: str = "bf16"
    finetune: str = "lora"
    lora_r: int = 16
    lora_target_modules: Any = None
    optim: str = "adamw_8bit"
    gradient_checkpointing: bool = True
    per_device_train_batch_size: int = 1
    max_prompt_length: int = 256
    max_completion_length: int = 512
    steps_per_generation: int = 1
    gradient_accumulation_steps: int = 1
    num_generations: int | None = None
    logprob_head: str | None = None
    use_liger_kernel: bool = False
    expandable_segments: bool | None = None
    calibration: Any = "auto"
    vllm_gpu_memory_utilization: float | None = None
    vllm_enable_sleep_mode: bool = False
    vllm_max_model_length: int | None = None
    vllm_tensor_parallel_size: int = 1
    vllm_kv_cache_dtype: str = "auto"
    vllm_quantization: str | None = None
    vllm_max_num_seqs: int | None = None
    vllm_max_num_batched_tokens: int | None = None
    vllm_enforce_eager: bool = False
    vllm_version: str | None = None
    trl_version: str | None = None
    transformers_version: str | None = None
    completion_lengths: str = "varied"
    rollout_turns: int = 1
    reserve_gib: float | None = None  # kept free on the card (--reserve): off the usable memory
    # False: TRL's default, no vLLM: transformers' generate in the trainer (its phase is modelled);
    # None: the trainer's step alone unless a vLLM utilisation is given (a synthetic step)
    use_vllm: bool | None = None
    typical_prompt_length: int | None = None  # the length a batch pads to; None: max_prompt_length (the bound)

    @property
    def colocated(self) -> bool:
        """A vLLM engine shares the GPU (a utilisation was given)."""
        return self.vllm_gpu_memory_utilization is not None


# the older names estimate() still takes, each the same setting as its TRL name (tests/test_api_vocabulary.py)
ESTIMATE_ALIASES = {"lora_rank": "lora_r", "batch_size": "per_device_train_batch_size",
                    "prompt_length": "max_prompt_length", "completion_length": "max_completion_length",
                    "sleep_mode": "vllm_enable_sleep_mode", "vllm_max_model_len": "vllm_max_model_length"}


def estimate(model: str | ModelSpec, gpu: str | GpuSpec = "H100-80GB", *,
             weights: Weights | Literal["trl-default"] = "bf16", finetune: Finetune = "lora", lora_r: int = 16,
             lora_target_modules: Sequence[str] | str | None = None,
             optim: Optim | Literal["trl-default"] = "adamw_8bit", gradient_checkpointing: bool = True,
             per_device_train_batch_size: int = 1, max_prompt_length: int = 256, max_completion_length: int = 512,
             steps_per_generation: int | None = None, gradient_accumulation_steps: int = 1,
             num_generations: int | None = None,
             logprob_head: LogprobHead | None = None, expandable_segments: bool | None = None,
             calibration: Any = "auto", vllm_gpu_memory_utilization: float | None = None,
             vllm_enable_sleep_mode: bool = False, vllm_max_model_length: int | None = None,
             vllm_tensor_parallel_size: int = 1, vllm_kv_cache_dtype: KvCacheDtype = "auto",
             vllm_quantization: str | None = None, vllm_max_num_seqs: int | None = None,
             vllm_max_num_batched_tokens: int | None = None, vllm_enforce_eager: bool = False,
             vllm_version: str | None = None, trl_version: str | None = None, transformers_version: str | None = None,
             completion_lengths: CompletionLengths = "varied", rollout_turns: int = 1, lora_rank: int | None = None,
             batch_size: int | None = None, prompt_length: int | None = None, completion_length: int | None = None,
             sleep_mode: bool | None = None, vllm_max_model_len: int | None = None,
             reserve_gib: float | None = None, use_liger_kernel: bool = False,
             use_vllm: bool | None = None, typical_prompt_length: int | None = None) -> Estimate:
    """Memory of one GRPO setup on one GPU, no solving. Sizes are per device. The keywords are
    TRL's names (GRPOConfig, trl.ModelConfig), as in ``planner.plan`` and the CLI's flags;
    ``lora_rank``, ``batch_size``, ``prompt_length``, ``completion_length``, ``sleep_mode`` and
    ``vllm_max_model_len`` are older names of ``lora_r`` ... ``vllm_max_model_length`` (the same
    setting: two different values are one error line).

    The inputs are checked once, with the request's rules and messages (planner.search.request): an
    InvalidSetupError names every problem, one line each, including setups that cannot run at all
    (prompt + completion beyond the context, ``vllm_max_model_length`` below the sequence or beyond the
    context, int8 weights with colocated vLLM). ``num_generations`` is checked (GRPO needs 2); one
    GPU's memory does not depend on it (vLLM generates ``per_device_train_batch_size x
    steps_per_generation`` completions per generation; None: TRL's ``gradient_accumulation_steps``).

    ``weights="trl-default"`` models a run that names no dtype (``GRPOTrainer(model="org/name")``
    without ``model_init_kwargs``): what that TRL and transformers release loads (float32 in TRL
    0.24-0.26 with transformers 4.x, and in TRL >= 0.27; the checkpoint's dtype otherwise).
    ``optim="trl-default"`` is ``TrainingArguments.optim``'s default for the transformers release
    (``adamw_torch_fused`` with torch >= 2.8). The estimate's ``assumptions`` say what was chosen.

    ``rollout_turns`` > 1: a multi-turn ``rollout_func`` (TRL's OpenEnv examples) that generates up to
    that many turns and returns every turn's prompt and completion ids concatenated. vLLM sees one
    turn at a time (``max_prompt_length + max_completion_length`` per request, what
    ``vllm_max_model_length`` is checked against); the trainer trains on up to ``rollout_turns`` times
    as many prompt and completion tokens per sequence (TRL does not truncate a rollout function's ids).

    ``reserve_gib``: memory kept free for a display or another process (``--reserve``): the card's
    usable memory is that much smaller (``assumptions["reserve"]``).

    ``use_vllm=False`` (``--no-vllm``): transformers' ``generate`` of the ``batch x steps_per_generation``
    completions in the trainer, a phase of its own (planner.memory.generate); True without a
    utilisation: the TRL release's default one; None: the step alone unless a utilisation is given.
    ``typical_prompt_length``: the length a batch pads to, the trainer's and generate's (``max_prompt_length``
    stays vLLM's bound; ``assumptions["trained_prompt_length"]``)."""
    problems: list[str] = []
    given = dict(lora_r=lora_r, per_device_train_batch_size=per_device_train_batch_size,
                 max_prompt_length=max_prompt_length, max_completion_length=max_completion_length,
                 vllm_enable_sleep_mode=vllm_enable_sleep_mode, vllm_max_model_length=vllm_max_model_length)
    old = dict(lora_rank=lora_rank, batch_size=batch_size, prompt_length=prompt_length,
               completion_length=completion_length, sleep_mode=sleep_mode, vllm_max_model_len=vllm_max_model_len)
    defaults = {f.name: f.default for f in fields(FixedSetup)}
    named = {name: one_setting(problems, name, given[name], alias, old[alias], defaults[name])
             for alias, name in ESTIMATE_ALIASES.items()}
    if problems:
        raise InvalidSetupError("\n".join(problems))
    fixed = FixedSetup(
        weights=weights, finetune=finetune, lora_target_modules=lora_target_modules, optim=optim,
        gradient_checkpointing=gradient_checkpointing,
        steps_per_generation=trl_steps_per_generation(steps_per_generation, gradient_accumulation_steps),
        gradient_accumulation_steps=gradient_accumulation_steps, num_generations=num_generations,
        logprob_head=logprob_head, use_liger_kernel=use_liger_kernel, expandable_segments=expandable_segments,
        calibration=calibration, vllm_gpu_memory_utilization=vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=vllm_tensor_parallel_size,
        vllm_kv_cache_dtype=vllm_kv_cache_dtype, vllm_quantization=vllm_quantization,
        vllm_max_num_seqs=vllm_max_num_seqs, vllm_max_num_batched_tokens=vllm_max_num_batched_tokens,
        vllm_enforce_eager=vllm_enforce_eager, vllm_version=vllm_version, trl_version=trl_version,
        transformers_version=transformers_version, completion_lengths=completion_lengths,
        rollout_turns=rollout_turns, reserve_gib=reserve_gib, use_vllm=use_vllm,
        typical_prompt_length=typical_prompt_length, **named)
    if use_vllm is True and vllm_gpu_memory_utilization is None:
        fixed = replace(fixed, vllm_gpu_memory_utilization=_trl_default_utilization(trl_version))
    return estimate_fixed(model, gpu, fixed)


def _trl_default_utilization(trl_version: str | None) -> float:
    try:
        return trl_facts(trl_version).vllm_gpu_memory_utilization_default
    except VersionError:
        return trl_facts(None).vllm_gpu_memory_utilization_default


def estimate_fixed(model: str | ModelSpec, gpu: str | GpuSpec, fixed: FixedSetup) -> Estimate:
    """:func:`estimate` of inputs already named: complete the setup, the trainer's memory, the
    colocated engine and the phases, the result."""
    spec, card, setup, assumptions = complete_setup(model, gpu, fixed)
    trainer, label, warnings = calibrated_trainer_memory(spec, setup, resolve_calibration(spec, card, fixed.calibration))
    warnings += architecture_warnings(spec)
    extra: dict = {"assumptions": assumptions} if assumptions else {}
    # the generation batch the memory models, and which releases run the old-policy pass (search.timing)
    timing = {"trl_version": fixed.trl_version, "steps_per_generation": fixed.steps_per_generation}
    if fixed.rollout_turns > 1:
        extra["rollout"] = rollout_summary(fixed.rollout_turns, fixed.max_prompt_length, fixed.max_completion_length)
    if fixed.vllm_gpu_memory_utilization is None:
        generating = generation_phases(spec, setup, trainer, fixed) if fixed.use_vllm is False else None
        return Estimate(model=spec, gpu=card, setup=setup, trainer=trainer, memory_model=label,
                        phases=generating, warnings=tuple(warnings), extra=extra, timing_inputs=timing)
    capacity = fixed_engine(spec, card, setup, fixed, trainer.load_bytes)
    phases = fixed_phases(spec, setup, trainer, capacity, fixed)
    return Estimate(model=spec, gpu=card, setup=setup, trainer=trainer, memory_model=label, vllm=capacity,
                    phases=phases, warnings=tuple(warnings) + tuple(phases.warnings), extra=extra,
                    timing_inputs=timing)


def fixed_problems(model: str | ModelSpec, gpu: str | GpuSpec, fixed: FixedSetup) -> tuple[list[str], PlanRequest]:
    """Every problem of the inputs that needs no model, with the request's rules and messages, and
    the (unvalidated) request they were checked as."""
    f = fixed
    req = _request(model, gpu, f.colocated, calibration=f.calibration,
                   weights="bf16" if f.weights == TRL_DEFAULT else f.weights, finetune=f.finetune,
                   lora_rank=f.lora_r, lora_target_modules=f.lora_target_modules,
                   optim="adamw_torch" if f.optim == TRL_DEFAULT else f.optim,
                   gradient_checkpointing=f.gradient_checkpointing, logprob_head=f.logprob_head,
                   use_liger_kernel=f.use_liger_kernel,
                   expandable_segments=f.expandable_segments, transformers_version=f.transformers_version,
                   kv_cache_dtype=f.vllm_kv_cache_dtype, tensor_parallel_size=f.vllm_tensor_parallel_size,
                   vllm_version=f.vllm_version, trl_version=f.trl_version, prompt_length=f.max_prompt_length,
                   num_generations=f.num_generations,
                   # checked by fixed_setup_problems as --max-completion-length, once
                   max_completion_length=f.max_completion_length if _positive(f.max_completion_length) else None)
    return request_problems(req, colocated=f.colocated) + fixed_setup_problems(
        batch_size=f.per_device_train_batch_size, prompt_length=f.max_prompt_length,
        completion_length=f.max_completion_length, steps_per_generation=f.steps_per_generation,
        gradient_accumulation_steps=f.gradient_accumulation_steps, completion_lengths=f.completion_lengths,
        sleep_mode=f.vllm_enable_sleep_mode, vllm_gpu_memory_utilization=f.vllm_gpu_memory_utilization,
        vllm_max_model_len=f.vllm_max_model_length, vllm_max_num_seqs=f.vllm_max_num_seqs,
        vllm_max_num_batched_tokens=f.vllm_max_num_batched_tokens, vllm_enforce_eager=f.vllm_enforce_eager,
        vllm_quantization=f.vllm_quantization, rollout_turns=f.rollout_turns) + no_vllm_problems(f) + \
        typical_prompt_problems(f.typical_prompt_length, f.max_prompt_length), req


def trl_steps_per_generation(steps_per_generation: Any, gradient_accumulation_steps: Any) -> Any:
    """TRL's GRPOConfig default for an unset ``steps_per_generation``: one generation per optimizer step
    (``gradient_accumulation_steps``; 1 where that is itself bad input, which is reported once)."""
    if steps_per_generation is not None:
        return steps_per_generation
    ok = isinstance(gradient_accumulation_steps, int) and not isinstance(gradient_accumulation_steps, bool)
    return gradient_accumulation_steps if ok and gradient_accumulation_steps > 0 else 1


def no_vllm_problems(f: FixedSetup) -> list[str]:
    """``use_vllm=False`` against the settings only a vLLM engine reads, one line each."""
    if f.use_vllm is not None and not isinstance(f.use_vllm, bool):
        return [f"use_vllm must be True or False, got {f.use_vllm!r}"]
    if f.use_vllm is not False:
        return []
    p = []
    if f.vllm_gpu_memory_utilization is not None:
        p.append("--no-vllm and --vllm-gpu-memory-utilization: without vLLM there is no engine to give a share; "
                 "drop one of them")
    if f.vllm_enable_sleep_mode:
        p.append("--no-vllm and --sleep-mode: sleep mode puts vLLM to sleep, and there is no vLLM; drop one of them")
    if f.rollout_turns != 1:
        p.append("--no-vllm with --rollout-turns: a multi-turn rollout_func is modelled with vLLM generating each "
                 "turn; drop one of them")
    return p


def complete_setup(model: str | ModelSpec, gpu: str | GpuSpec,
                   fixed: FixedSetup) -> tuple[ModelSpec, GpuSpec, TrainerSetup, dict]:
    """Check the inputs (every problem at once, then those that need the model), resolve the model
    and the card, fill what the TRL and transformers releases decide (``"trl-default"`` weights and
    optimizer, the log-prob head, the allocator from the environment): the trainer's setup and the
    assumptions made."""
    f = fixed
    problems, req = fixed_problems(model, gpu, f)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    spec = resolve_model(model)
    problems = model_problems(req, spec) + fixed_model_problems(spec, f.vllm_max_model_length, f.colocated)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    card = with_reserve(resolve_gpu(gpu), f.reserve_gib)
    weights, optim, assumptions = f.weights, f.optim, {}
    if card.reserve_bytes:
        assumptions["reserve"] = {"value": round(card.reserve_bytes / 2**30, 4), "source": "option",
                                  "bytes": card.reserve_bytes, "note": "kept free for a display or another process"}
    if weights == TRL_DEFAULT:
        dtype = trl_default_model_dtype(f.trl_version, f.transformers_version)
        weights = default_weights_format(f.trl_version, f.transformers_version, spec.dtype)
        assumptions["weights"] = {"value": weights, "source": f"no dtype given: TRL and transformers load {dtype}"
                                  + (f" (the checkpoint's {spec.dtype})" if dtype == "auto" else "")}
    if f.typical_prompt_length is not None:
        assumptions["trained_prompt_length"] = {
            "value": f.typical_prompt_length, "source": "option",
            "note": f"the length a batch pads to; vLLM's length keeps the longest prompt ({f.max_prompt_length})"}
    if optim == TRL_DEFAULT:
        optim = default_optimizer(f.transformers_version)
        assumptions["optim"] = {"value": optim, "source": "TrainingArguments.optim's default for this transformers"}
    targets = req.trainer.lora_target_modules  # "all-linear" -> None
    expandable = expandable_segments_from_env() if f.expandable_segments is None else f.expandable_segments
    setup = TrainerSetup(weights=weights, finetune=f.finetune, lora_rank=f.lora_r,
                         lora_target_modules=tuple(targets) if targets else None, optim=optim,
                         gradient_checkpointing=f.gradient_checkpointing, batch_size=f.per_device_train_batch_size,
                         prompt_length=(f.typical_prompt_length or f.max_prompt_length) * f.rollout_turns,
                         completion_length=f.max_completion_length * f.rollout_turns,
                         logprob_head=f.logprob_head or default_logprob_head(f.trl_version,
                                                                             liger=f.use_liger_kernel),
                         expandable_segments=bool(expandable), gradient_accumulation_steps=f.gradient_accumulation_steps,
                         completion_lengths=f.completion_lengths, transformers_version=f.transformers_version)
    return spec, card, setup, assumptions


def fixed_engine(spec: ModelSpec, card: GpuSpec, setup: TrainerSetup, fixed: FixedSetup,
                 trainer_load_bytes: int) -> VllmCapacity:
    """The colocated engine of a fixed setup (TRL passes ``max_num_seqs`` = batch x steps per
    generation x TP unless it is given)."""
    f = fixed
    assert f.vllm_gpu_memory_utilization is not None
    seqs = f.vllm_max_num_seqs or f.per_device_train_batch_size * f.steps_per_generation * f.vllm_tensor_parallel_size
    return colocated_vllm(spec, card, trainer_load_bytes, f.vllm_gpu_memory_utilization, weights=setup.weights,
                          max_model_len=f.vllm_max_model_length, max_num_seqs=seqs,
                          tensor_parallel_size=f.vllm_tensor_parallel_size, kv_cache_dtype=f.vllm_kv_cache_dtype,
                          quantization=f.vllm_quantization, max_num_batched_tokens=f.vllm_max_num_batched_tokens,
                          enforce_eager=f.vllm_enforce_eager, vllm_version=f.vllm_version, trl_version=f.trl_version)


def fixed_phases(spec: ModelSpec, setup: TrainerSetup, trainer: TrainerMemory, capacity: VllmCapacity,
                 fixed: FixedSetup) -> ColocatedPhases:
    """The process's generation and training phases (planner.memory.phases, the solver's table),
    with or without sleep mode."""
    blocks = {**trainer_blocks(trainer.components, {"merge_transient": merge_transient_bytes(spec, setup)}),
              **vllm_blocks(capacity)}
    sleep = fixed.vllm_enable_sleep_mode
    return colocated_phases(blocks, sleep, tuple(sleep_warnings(fixed.trl_version) if sleep else ()))


def generation_phases(spec: ModelSpec, setup: TrainerSetup, trainer: TrainerMemory,
                      fixed: FixedSetup) -> GeneratePhases:
    """Load, generation and training without vLLM: the generation batch (``batch x steps per
    generation`` sequences of the setup's prompt and completion lengths) in transformers' ``generate``."""
    shape = GenerationShape(fixed.per_device_train_batch_size * fixed.steps_per_generation, setup.prompt_length,
                            setup.completion_length, setup.compute_bytes)
    blocks = {**trainer_blocks(trainer.components, {}),
              "generate": generation_components(spec, shape, quantized=setup.weights in ("nf4", "int8"),
                                                largest_matrix_params=largest_projection_params(spec))}
    return generate_phases(blocks)


def _positive(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _request(model, gpu, colocated: bool, **fields) -> PlanRequest:
    """The estimate's fields as a (not yet validated) request, so the request's rules check them."""
    if "lora_target_modules" in fields:
        fields["lora_target_modules"] = normalise_targets(fields["lora_target_modules"])
    return PlanRequest(model=model, gpu=gpu).with_options(**fields)


def sleep_warnings(trl_version: str | None) -> list[str]:
    """What the TRL release planned for gets wrong with colocated sleep mode."""
    try:
        facts = trl_facts(trl_version)
    except VersionError:  # unknown TRL version: checks.py reports it
        return []
    if facts.sleep_weight_sync_broken:
        return [f"TRL {facts.release}: colocated sleep mode is known to generate from stale weights "
                f"(trl#5312); upgrade TRL or disable sleep mode"]
    return []


def colocated_vllm(spec: ModelSpec, card: GpuSpec, trainer_load_bytes: int, gpu_memory_utilization: float, *,
                   weights: str = "bf16", max_model_len: int | None = None, max_num_seqs: int = 1,
                   tensor_parallel_size: int = 1, kv_cache_dtype: str = "auto", quantization: str | None = None,
                   max_num_batched_tokens: int | None = None, enforce_eager: bool = False,
                   vllm_version: str | None = None, trl_version: str | None = None):
    """The engine TRL builds in colocate mode, as vLLM will size it (planner.memory.vllm).

    What TRL passes comes from versions.py: ``max_num_batched_tokens`` (4096 since 0.19),
    ``max_model_len`` (``vllm_max_model_length`` or the model's context), ``quantization=
    "bitsandbytes"`` for a 4-bit trainer. vLLM starts after the trainer loaded its weights, in the
    same process: free memory at its start is the card less the trainer's load, and its CUDA
    context is the trainer's (only NCCL/TP buffers come on top).
    """
    trl = trl_facts(trl_version)
    four_bit = weights == "nf4"
    version = vllm_version or colocate_vllm_version(trl_version, needs_bitsandbytes=four_bit)
    if quantization is None and four_bit:
        quantization = trl.quantization_for_4bit
    baseline = max(0, baseline_bytes(tensor_parallel_size, version) - CUDA_CONTEXT_BYTES)
    return vllm_capacity(spec, card, gpu_memory_utilization=gpu_memory_utilization,
                         max_model_len=trl_max_model_len(trl, spec.max_position_embeddings, max_model_len),
                         tensor_parallel_size=tensor_parallel_size, kv_cache_dtype=kv_cache_dtype,
                         quantization=quantization, max_num_seqs=max_num_seqs,
                         max_num_batched_tokens=max_num_batched_tokens or trl.max_num_batched_tokens,
                         enforce_eager=enforce_eager, vllm_version=version,
                         free_bytes=max(0, card.usable_bytes - trainer_load_bytes), baseline=baseline,
                         processed_logprobs=trl.processed_logprobs)


def resolve_calibration(spec: ModelSpec, card: GpuSpec, calibration="auto"):
    """The calibration profile to use: ``"auto"`` looks one up (planner.memory.calibration), ``None``
    means analytic only, anything else is taken as a ``Calibration``."""
    if calibration is None:
        return None
    if calibration == "auto":
        return find_calibration(spec, card)
    return calibration


def calibrated_trainer_memory(spec: ModelSpec, setup: TrainerSetup, calibration=None):
    """``trainer_memory`` with a calibration profile's measured terms swapped in where the profile
    covers the setup: (TrainerMemory, memory-model label, warnings).

    The profile measured the peak of a forward and backward above the resident state (the log-prob
    head's moment and the layers' both inside it): it replaces the ``backward`` moment and the
    ``logprob_head`` moment takes the same figure. The other moments (the forward under autocast,
    clipping, the optimizer step) stay analytic, with the profile's non-PyTorch memory."""
    trainer = trainer_memory(spec, setup)
    if calibration is None:
        return trainer, "analytic", []
    backward = trainer.moment("backward")
    components, label, warnings = apply_calibration(backward, calibration, setup,
                                                    run_reserve_bytes=trainer.run_reserve_bytes,
                                                    accumulated_gradient_bytes=trainer.accumulated_gradient_bytes)
    if components == backward:
        return trainer, "analytic", list(warnings)
    non_torch = {"non_torch": components["non_torch"]} if "non_torch" in components else {}
    moments = {name: {**c, **non_torch} for name, c in trainer.moment_components.items()}
    moments["logprob_head"], moments["backward"] = dict(components), dict(components)
    # the forward's reserve is the step's fitted one (calibrated now) unless the backward's stranded
    # V x h gradient blocks (MOMENT_RESERVE: allocator_sim) are larger
    fitted, forward = backward["allocator_reserve"], moments["forward"]["allocator_reserve"]
    moments["forward"]["allocator_reserve"] = max(components["allocator_reserve"], forward if forward > fitted else 0)
    return trainer.with_moments(moments), label, list(warnings)


def resolve_request(req: PlanRequest) -> Resolved:
    """What ``req`` names, resolved (the model's spec, the cards, the calibration profile), or what
    planner.api.complete_request resolved already."""
    if req.resolved is not None:
        return req.resolved
    spec = resolve_model(req.model)
    o = req.topology
    card, cards = resolve_gpus(list(req.gpu) if isinstance(req.gpu, tuple) else req.gpu, o.num_gpus, o.num_nodes)
    return Resolved(spec, card, tuple(cards), resolve_calibration(spec, card, req.calibration))
