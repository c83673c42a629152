"""``estimate()``: evaluate one fixed setup (no solving) and report every memory term.

    >>> import planner
    >>> e = planner.estimate(model="Qwen/Qwen2.5-7B-Instruct", gpu="H100-80GB", batch_size=8,
    ...                      prompt_length=256, completion_length=1792)
    >>> e.trainer.peak_bytes, e.fits
    >>> e.to_dict()          # the JSON `plan estimate --json` prints

With ``vllm_gpu_memory_utilization`` set, the colocated vLLM engine is added: whether it starts
given what the trainer holds at that moment, its KV cache, and the peaks of the generation and
training phases of the whole process (``phases``, from the same phase table the solver uses),
with and without sleep mode.
"""

from __future__ import annotations

from dataclasses import replace

from ..checks.preflight import architecture_warnings
from ..errors import InvalidSetupError, VersionError
from ..memory.allocator import expandable_segments_from_env
from ..memory.calibration import apply_calibration, find_calibration
from ..memory.logprob_head import trl_logprob_head
from ..memory.phases import colocated_phases, merge_transient_bytes, trainer_blocks, vllm_blocks
from ..memory.process import CUDA_CONTEXT_BYTES
from ..memory.trainer import TrainerSetup, trainer_memory
from ..memory.vllm import baseline_bytes, vllm_capacity
from ..specs.gpu import GpuSpec, resolve_gpu
from ..specs.model import ModelSpec, resolve_model
from ..specs.versions import (
    colocate_vllm_version,
    default_optimizer,
    default_weights_format,
    trl_default_model_dtype,
    trl_facts,
    trl_max_model_len,
)
from .request import (
    PlanRequest,
    fixed_model_problems,
    fixed_setup_problems,
    model_problems,
    normalise_targets,
    request_problems,
)
from .results import Estimate, rollout_summary

TRL_DEFAULT = "trl-default"  # weights/optim: what the TRL/transformers release does when the user names none


def default_logprob_head(trl_version: str | None = None, engine: str = "amp") -> str:
    """The log-prob head the TRL release uses (fused tiled head in current releases; before, the
    full-logits path: ``plain`` under accelerate's native AMP, a bf16 variant under DeepSpeed;
    memory/logprob_head.py)."""
    try:
        facts = trl_facts(trl_version)
    except VersionError:  # an installed TRL outside the table: assume the current release
        return "fused"
    return trl_logprob_head(facts.fused_logprob_head, facts.logprob_temperature, facts.logprob_entropy, engine)


def estimate(model: str | ModelSpec, gpu: str | GpuSpec = "H100-80GB", *, weights: str = "bf16",
             finetune: str = "lora", lora_rank: int = 16, lora_target_modules=None,
             optim: str = "adamw_8bit", gradient_checkpointing: bool = True, batch_size: int = 1,
             prompt_length: int = 256, completion_length: int = 512, logprob_head: str | None = None,
             expandable_segments: bool | None = None, calibration: str | object | None = "auto",
             vllm_gpu_memory_utilization: float | None = None, vllm_max_model_len: int | None = None,
             vllm_tensor_parallel_size: int = 1, vllm_kv_cache_dtype: str = "auto",
             vllm_quantization: str | None = None, vllm_max_num_seqs: int | None = None,
             vllm_max_num_batched_tokens: int | None = None, vllm_enforce_eager: bool = False,
             vllm_version: str | None = None, trl_version: str | None = None,
             steps_per_generation: int = 1, sleep_mode: bool = False, gradient_accumulation_steps: int = 1,
             completion_lengths: str = "varied", transformers_version: str | None = None,
             rollout_turns: int = 1) -> Estimate:
    """Memory of one GRPO setup. Sizes are per device; ``batch_size`` is
    ``per_device_train_batch_size`` (sequences per micro-batch).

    The inputs are checked once, with the request's rules and messages (planner.search.request): an
    InvalidSetupError names every problem, one line each, including setups that cannot run at all
    (prompt + completion beyond the context, ``vllm_max_model_len`` below the sequence or beyond the
    context, int8 weights with colocated vLLM). ``sleep_mode`` is True or False.

    ``weights="trl-default"`` models a run that names no dtype (``GRPOTrainer(model="org/name")``
    without ``model_init_kwargs``): what that TRL and transformers release loads (float32 in TRL
    0.24-0.26 with transformers 4.x, and in TRL >= 0.27; the checkpoint's dtype otherwise).
    ``optim="trl-default"`` is ``TrainingArguments.optim``'s default for the transformers release
    (``adamw_torch_fused`` with torch >= 2.8). The estimate's ``assumptions`` say what was chosen.

    ``rollout_turns`` > 1: a multi-turn ``rollout_func`` (TRL's OpenEnv examples) that generates up to
    that many turns and returns every turn's prompt and completion ids concatenated. vLLM sees one
    turn at a time (``prompt_length + completion_length`` per request, what ``vllm_max_model_len`` is
    checked against); the trainer trains on up to ``rollout_turns x prompt_length`` prompt and
    ``rollout_turns x completion_length`` completion tokens per sequence (TRL does not truncate a
    rollout function's ids)."""
    colocated = vllm_gpu_memory_utilization is not None
    weights_unset, optim_unset = weights == TRL_DEFAULT, optim == TRL_DEFAULT
    req = _request(model, gpu, colocated, calibration=calibration, weights="bf16" if weights_unset else weights,
                   finetune=finetune, lora_rank=lora_rank, lora_target_modules=lora_target_modules,
                   optim="adamw_torch" if optim_unset else optim,
                   gradient_checkpointing=gradient_checkpointing, logprob_head=logprob_head,
                   expandable_segments=expandable_segments, transformers_version=transformers_version,
                   kv_cache_dtype=vllm_kv_cache_dtype, tensor_parallel_size=vllm_tensor_parallel_size,
                   vllm_version=vllm_version, trl_version=trl_version, prompt_length=prompt_length,
                   # checked below as --completion-length, once
                   max_completion_length=completion_length if _positive(completion_length) else None)
    problems = fixed_setup_problems(
        batch_size=batch_size, prompt_length=prompt_length, completion_length=completion_length,
        steps_per_generation=steps_per_generation, gradient_accumulation_steps=gradient_accumulation_steps,
        completion_lengths=completion_lengths, sleep_mode=sleep_mode,
        vllm_gpu_memory_utilization=vllm_gpu_memory_utilization, vllm_max_model_len=vllm_max_model_len,
        vllm_max_num_seqs=vllm_max_num_seqs, vllm_max_num_batched_tokens=vllm_max_num_batched_tokens,
        vllm_enforce_eager=vllm_enforce_eager, vllm_quantization=vllm_quantization, rollout_turns=rollout_turns)
    problems = request_problems(req, colocated=colocated) + problems
    if problems:
        raise InvalidSetupError("\n".join(problems))
    lora_target_modules = req.trainer.lora_target_modules  # "all-linear" -> None
    spec = resolve_model(model)
    problems = model_problems(req, spec) + fixed_model_problems(spec, vllm_max_model_len, colocated)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    card = resolve_gpu(gpu)
    if expandable_segments is None:
        expandable_segments = expandable_segments_from_env()
    assumptions: dict = {}
    if weights_unset:
        dtype = trl_default_model_dtype(trl_version, transformers_version)
        weights = default_weights_format(trl_version, transformers_version, spec.dtype)
        assumptions["weights"] = {"value": weights, "source": f"no dtype given: TRL and transformers load {dtype}"
                                  + (f" (the checkpoint's {spec.dtype})" if dtype == "auto" else "")}
    if optim_unset:
        optim = default_optimizer(transformers_version)
        assumptions["optim"] = {"value": optim, "source": "TrainingArguments.optim's default for this transformers"}
    setup = TrainerSetup(weights=weights, finetune=finetune, lora_rank=lora_rank,
                         lora_target_modules=tuple(lora_target_modules) if lora_target_modules else None,
                         optim=optim, gradient_checkpointing=gradient_checkpointing, batch_size=batch_size,
                         prompt_length=prompt_length * rollout_turns,
                         completion_length=completion_length * rollout_turns,
                         logprob_head=logprob_head or default_logprob_head(trl_version),
                         expandable_segments=bool(expandable_segments),
                         gradient_accumulation_steps=gradient_accumulation_steps,
                         completion_lengths=completion_lengths, transformers_version=transformers_version)
    trainer, label, warnings = calibrated_trainer_memory(spec, setup, resolve_calibration(spec, card, calibration))
    warnings += architecture_warnings(spec)
    extra: dict = {"assumptions": assumptions} if assumptions else {}
    if rollout_turns > 1:
        extra["rollout"] = rollout_summary(rollout_turns, prompt_length, completion_length)
    if vllm_gpu_memory_utilization is None:
        return Estimate(model=spec, gpu=card, setup=setup, trainer=trainer, memory_model=label,
                        warnings=tuple(warnings), extra=extra)
    capacity = colocated_vllm(spec, card, trainer.load_bytes, vllm_gpu_memory_utilization,
                              weights=weights, max_model_len=vllm_max_model_len,
                              max_num_seqs=vllm_max_num_seqs or batch_size * steps_per_generation
                              * vllm_tensor_parallel_size,
                              tensor_parallel_size=vllm_tensor_parallel_size, kv_cache_dtype=vllm_kv_cache_dtype,
                              quantization=vllm_quantization, max_num_batched_tokens=vllm_max_num_batched_tokens,
                              enforce_eager=vllm_enforce_eager, vllm_version=vllm_version, trl_version=trl_version)
    blocks = {**trainer_blocks(trainer.components, {"merge_transient": merge_transient_bytes(spec, setup)}),
              **vllm_blocks(capacity)}
    phases = colocated_phases(blocks, sleep_mode, tuple(sleep_warnings(trl_version) if sleep_mode else ()))
    warnings += list(phases.warnings)
    return Estimate(model=spec, gpu=card, setup=setup, trainer=trainer, memory_model=label, vllm=capacity,
                    phases=phases, warnings=tuple(warnings), extra=extra)


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
    covers the setup: (TrainerMemory, memory-model label, warnings)."""
    trainer = trainer_memory(spec, setup)
    if calibration is None:
        return trainer, "analytic", []
    components, label, warnings = apply_calibration(dict(trainer.components), calibration, setup,
                                                    run_reserve_bytes=trainer.run_reserve_bytes,
                                                    accumulated_gradient_bytes=trainer.accumulated_gradient_bytes)
    if components == trainer.components:
        return trainer, "analytic", list(warnings)
    return replace(trainer, components=components), label, list(warnings)
