"""The search for Unsloth's ``fast_inference=True`` runtime: what to pass so every phase fits.

    p = unsloth_plan("meta-llama/Llama-3.1-8B-Instruct", "T4", load_in_4bit=True, lora_rank=32,
                     max_seq_length=1024)
    p.fits, p.vllm_gpu_memory_utilization, p.unsloth_kwargs(), print(p.snippet())

It searches the requested utilisation, standby, the group size, the completion length, the
per-device batch and the accumulation steps, through :func:`planner.runtimes.unsloth.unsloth_estimate`
(the memory model, Unsloth's rules per release). Unsloth's rules are honoured, not fought: with a
standby override the request rendered is the value Unsloth will use (no rewrite), the batch is one
Unsloth's GRPOConfig keeps (the divisibility rule), and the rank vLLM gets is Unsloth's rounding.

Objective, lexicographic (as planner.search.results.OBJECTIVE, for this runtime):
``UNSLOTH_OBJECTIVE``. Pure: no environment read beyond the installed-version defaults the facts
table resolves (planner.specs.versions).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import InfeasibleError, InvalidSetupError
from ..runtimes.unsloth import (
    UnslothEstimate,
    adjusted_batch_size,
    requested_utilization,
    standby_target,
    unsloth_checks,
    unsloth_estimate,
    unsloth_snippet,
)
from ..specs.gpu import GpuSpec, resolve_gpu
from ..specs.model import ModelSpec, resolve_model
from ..specs.units import GIB
from ..specs.versions import (
    UNSLOTH_RL_DEFAULTS,
    UnslothFacts,
    grpo_config_has_max_prompt_length,
    unsloth_facts,
    unsloth_trl_version,
)

UNSLOTH_OBJECTIVE = ("reach the requested completion length (max_seq_length - prompt)",
                     "the requested group size, else the largest that fits (8, 6, 4, 2)",
                     "the generation batch in one vLLM wave",
                     "largest training micro-batch (fewest accumulation steps)",
                     "standby off unless it does better (Unsloth's default)",
                     "one wave at the lowest utilisation, else the most KV cache")
MAX_SEQ_LENGTH_DEFAULT = 2048  # from_pretrained(max_seq_length=2048) (unsloth 2026.10.9 models/loader.py:1243)
_UTILIZATIONS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
_GROUP_SIZES = (8, 6, 4, 2)


@dataclass(frozen=True)
class UnslothPlan:
    """The chosen Unsloth setup: the estimate it was judged by, and what to pass where."""

    estimate: UnslothEstimate
    margin: float
    trl_version: str
    trl_version_reason: str
    generation_batch_size: int
    reasons: tuple[str, ...] = ()
    unsloth_changes: tuple[str, ...] = ()   # what Unsloth will change from what the user asked
    checks: tuple = ()
    runtime: str = "unsloth"

    @property
    def model(self) -> ModelSpec:
        return self.estimate.model

    @property
    def gpu(self) -> GpuSpec:
        return self.estimate.gpu

    @property
    def fits(self) -> bool:
        return bool(self.estimate.fits) and self.peak_bytes <= self.budget_bytes

    @property
    def peak_bytes(self) -> int:
        return max(self.estimate.phases.values()) if self.estimate.phases else 0

    @property
    def budget_bytes(self) -> int:
        return int(self.gpu.total_bytes * (1 - self.margin))

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.peak_bytes

    @property
    def vllm_gpu_memory_utilization(self) -> float:
        """What vLLM really receives (after Unsloth's override and its free/total shrink)."""
        return self.estimate.vllm_gpu_memory_utilization

    def from_pretrained_kwargs(self) -> dict:
        return self.estimate.from_pretrained_kwargs()

    def get_peft_model_kwargs(self) -> dict:
        return self.estimate.get_peft_model_kwargs()

    def grpo_config_kwargs(self) -> dict:
        kw = self.estimate.grpo_config_kwargs()
        kw["generation_batch_size"] = self.generation_batch_size
        if not grpo_config_has_max_prompt_length(self.trl_version):
            kw.pop("max_prompt_length", None)
        return kw

    @property
    def config(self) -> dict:
        """The GRPOConfig arguments (as Plan.config: ``generation_batch_size``, never steps_per_generation)."""
        return self.grpo_config_kwargs()

    def env(self) -> dict:
        return self.estimate.env()

    def unsloth_kwargs(self) -> dict:
        """Everything the hand-off passes: from_pretrained, get_peft_model, GRPOConfig, env."""
        return {"from_pretrained": self.from_pretrained_kwargs(), "get_peft_model": self.get_peft_model_kwargs(),
                "grpo_config": self.grpo_config_kwargs(), "env": self.env()}

    def snippet(self) -> str:
        """A complete Python script: env, from_pretrained, get_peft_model, GRPOConfig, GRPOTrainer."""
        return unsloth_snippet(self.unsloth_kwargs())

    def to_dict(self) -> dict:
        d = self.estimate.to_dict()
        d.update({
            "runtime": "unsloth", "fits": self.fits, "margin": self.margin,
            "peak_bytes": self.peak_bytes, "budget_bytes": self.budget_bytes, "headroom_bytes": self.headroom_bytes,
            "config": self.grpo_config_kwargs(), "grpo_config": self.grpo_config_kwargs(),
            "vllm_gpu_memory_utilization": self.vllm_gpu_memory_utilization,
            "trl_version": self.trl_version, "trl_version_reason": self.trl_version_reason,
            "unsloth_changes": list(self.unsloth_changes), "reasons": list(self.reasons),
            "objective": list(UNSLOTH_OBJECTIVE), "checks": [c.to_dict() for c in self.checks],
        })
        return d


# -- candidates ------------------------------------------------------------------------------------

def kept_batches(facts: UnslothFacts, generation_batch: int, num_generations: int,
                 world_size: int = 1) -> list[tuple[int, int]]:
    """(per_device_train_batch_size, gradient_accumulation_steps) pairs making ``generation_batch``
    that Unsloth's GRPOConfig does not rewrite (:func:`planner.runtimes.unsloth.adjusted_batch_size`),
    largest batch first."""
    out = []
    for b in range(generation_batch, 0, -1):
        if generation_batch % b:
            continue
        ga = generation_batch // b
        if adjusted_batch_size(facts, b, ga, num_generations, world_size) == b:
            out.append((b, ga))
    return out


def utilization_candidates(facts: UnslothFacts, standby: bool, total_bytes: int, vllm_version: str | None,
                           given: float | None) -> list[float]:
    """Requests worth trying, each one Unsloth keeps as asked (a standby override collapses the
    rest to the one value it uses: that value is the request rendered)."""
    asked = [given] if given is not None else list(_UTILIZATIONS)
    out: list[float] = []
    for u in asked:
        kept, _why = requested_utilization(facts, u, standby, total_bytes, vllm_version)
        kept = round(kept, 4)
        if given is None and kept != u:
            continue  # Unsloth would change this request: try the value it uses instead
        if kept not in out:
            out.append(kept)
    target = standby_target(facts, total_bytes, vllm_version) if standby else None
    if given is None and target is not None and round(target, 4) not in out:
        out.append(round(target, 4))
    return sorted(out)


def _concurrency(e: UnslothEstimate) -> float:
    """Sequences of prompt + completion tokens vLLM runs at once: KV tokens and max_num_seqs."""
    if not e.kv_cache_tokens:
        return 0.0
    return min(e.max_num_seqs, e.kv_cache_tokens / (e.max_prompt_length + e.max_completion_length))


# -- the search ------------------------------------------------------------------------------------

def unsloth_plan(model: Any, gpu: Any = "auto", *, unsloth_version: str | None = None,
                 vllm_version: str | None = None, standby: bool | None = None, max_seq_length: int | None = None,
                 gpu_memory_utilization: float | None = None, float8_kv_cache: bool = False,
                 load_in_4bit: bool = True, weights_fp8: bool = False, lora_rank: int = 16,
                 num_generations: int | None = None, per_device_train_batch_size: int | None = None,
                 gradient_accumulation_steps: int | None = None, max_prompt_length: int = 256,
                 max_completion_length: int | None = None, margin: float = 0.05,
                 free_bytes: int | None = None) -> UnslothPlan:
    """The Unsloth setup that fits with the margin and makes the most of the card (UNSLOTH_OBJECTIVE).

    ``None`` lets the search choose (``standby``: off unless on does better). Raises
    InfeasibleError naming what breaks when nothing fits (``.closest``: Unsloth's defaults' estimate).
    """
    spec = resolve_model(model)
    card = resolve_gpu(gpu)
    facts = unsloth_facts(unsloth_version)
    seq = MAX_SEQ_LENGTH_DEFAULT if max_seq_length is None else max_seq_length
    problems = []
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 2:
        problems.append(f"--max-seq-length must be an integer >= 2, got {seq!r}")
    if not isinstance(margin, (int, float)) or not 0 <= margin < 0.5:
        problems.append(f"--margin must be in [0, 0.5), got {margin!r}")
    if isinstance(max_prompt_length, bool) or not isinstance(max_prompt_length, int) or max_prompt_length < 1:
        problems.append(f"--prompt-length must be a positive integer, got {max_prompt_length!r}")
    elif isinstance(seq, int) and max_prompt_length >= seq:
        problems.append(f"--prompt-length {max_prompt_length} leaves no completion within --max-seq-length {seq}")
    elif max_completion_length is not None and isinstance(seq, int) and max_prompt_length + max_completion_length > seq:
        problems.append(f"--prompt-length {max_prompt_length} + --max-completion-length {max_completion_length} "
                        f"exceeds --max-seq-length {seq} (vLLM's max_model_len)")
    if problems:
        raise InvalidSetupError("\n".join(problems))
    trl, trl_reason = unsloth_trl_version(facts.release)
    base = dict(max_seq_length=seq, load_in_4bit=load_in_4bit, float8_kv_cache=float8_kv_cache,
                lora_rank=lora_rank, max_prompt_length=max_prompt_length, unsloth_version=facts.release,
                vllm_version=vllm_version, free_bytes=free_bytes, weights_fp8=weights_fp8)
    # Unsloth's own defaults: the reference, and the closest plan when nothing fits
    defaults = unsloth_estimate(spec, card, standby=bool(standby), gpu_memory_utilization=gpu_memory_utilization,
                                num_generations=num_generations, per_device_train_batch_size=per_device_train_batch_size,
                                gradient_accumulation_steps=gradient_accumulation_steps,
                                max_completion_length=max_completion_length, **base)  # type: ignore[arg-type]
    vllm_version = defaults.vllm_version or vllm_version
    base["vllm_version"] = vllm_version
    budget = int(card.total_bytes * (1 - margin))

    completions = [max_completion_length] if max_completion_length else \
        sorted({c for c in (seq - max_prompt_length, 1024, 512, 256, 128) if 0 < c <= seq - max_prompt_length},
               reverse=True)
    groups = [num_generations] if num_generations else list(_GROUP_SIZES)
    modes = [standby] if standby is not None else [False, True]
    best_key, best = None, None
    for mode in modes:
        for util in utilization_candidates(facts, mode, card.total_bytes, vllm_version, gpu_memory_utilization):
            for completion in completions:
                for g in groups:
                    for b, ga in _batches(facts, g, per_device_train_batch_size, gradient_accumulation_steps):
                        e = unsloth_estimate(spec, card, standby=mode, gpu_memory_utilization=util, num_generations=g,
                                             per_device_train_batch_size=b, gradient_accumulation_steps=ga,
                                             max_completion_length=completion, **base)  # type: ignore[arg-type]
                        if not e.fits or max(e.phases.values()) > budget:
                            continue
                        gen_batch = e.per_device_train_batch_size * ga
                        one_wave = _concurrency(e) >= gen_batch
                        key = (completion, g == (num_generations or UNSLOTH_RL_DEFAULTS["num_generations"]), g,
                               one_wave, e.per_device_train_batch_size, not e.standby,
                               -util if one_wave else e.kv_cache_bytes or 0)
                        if best_key is None or key > best_key:
                            best_key, best = key, (e, gen_batch)
    if best is None:
        raise InfeasibleError(_why_nothing_fits(defaults, budget, margin), closest=None)
    e, gen_batch = best
    e = replace(e, vllm_version_reason=defaults.vllm_version_reason)
    changes = _changes(facts, e, gpu_memory_utilization, per_device_train_batch_size, gradient_accumulation_steps)
    reasons = _reasons(e, defaults, gen_batch, budget)
    return UnslothPlan(estimate=e, margin=margin, trl_version=trl, trl_version_reason=trl_reason,
                       generation_batch_size=gen_batch, reasons=tuple(reasons), unsloth_changes=tuple(changes))


def _batches(facts: UnslothFacts, g: int, batch: int | None, ga: int | None) -> list[tuple[int, int]]:
    """(batch, accumulation) to try for group size ``g``: one generation batch of ``g`` completions
    (one prompt) split into micro-batches Unsloth keeps; a batch or accumulation the user fixed is
    kept as given (Unsloth may then rewrite it, which the plan reports)."""
    if batch is not None and ga is not None:
        return [(batch, ga)]
    if batch is not None:
        kept = [(batch, a) for a in range(1, g + 1) if adjusted_batch_size(facts, batch, a, g) == batch
                and (batch * a) % g == 0]
        return kept[:1] or [(batch, 1)]
    if ga is not None:
        kept = [(b, ga) for b in range(g, 0, -1) if adjusted_batch_size(facts, b, ga, g) == b and (b * ga) % g == 0]
        return kept or [(g, ga)]
    return kept_batches(facts, g, g)


def _changes(facts: UnslothFacts, e: UnslothEstimate, util: float | None, batch: int | None,
             ga: int | None) -> list[str]:
    out = []
    asked = e.requested_gpu_memory_utilization
    kept, why = requested_utilization(facts, asked, e.standby, e.gpu.total_bytes, e.vllm_version)
    if round(kept, 4) != round(asked, 4):
        out.append(f"gpu_memory_utilization {asked} -> {kept:.4g}: {why}")
    out.append(f"vLLM receives gpu_memory_utilization {e.vllm_gpu_memory_utilization:.4f} "
               f"({e.utilization_reason})")
    if e.max_lora_rank != e.lora_rank:
        out.append(f"max_lora_rank {e.lora_rank} -> {e.max_lora_rank} (a rank vLLM accepts)")
    if e.per_device_train_batch_size != e.requested_batch_size:
        out.append(f"per_device_train_batch_size {e.requested_batch_size} -> {e.per_device_train_batch_size} "
                   f"(= num_generations: the divisibility rule, Unsloth {facts.release})")
    if e.standby_requested and not e.standby:
        out.append("standby off: Unsloth turns it off for vision models (UNSLOTH_VLLM_STANDBY_VISION=1 forces it)")
    return out


def _reasons(e: UnslothEstimate, defaults: UnslothEstimate, gen_batch: int, budget: int) -> list[str]:
    out = [f"vLLM {e.vllm_version} ({e.vllm_version_reason})",
           f"the weights live once, inside vLLM's share ({(e.capacity.weights_bytes if e.capacity else 0) / GIB:.2f} "
           f"GiB); the trainer adds {e.trainer_peak_bytes / GIB:.2f} GiB",
           f"{gen_batch} completions per generation in {'one wave' if _concurrency(e) >= gen_batch else 'several waves'}"
           f" (vLLM runs {_concurrency(e):.1f} sequences of {e.max_prompt_length + e.max_completion_length} tokens at once)",
           f"peak {max(e.phases.values()) / GIB:.2f} GiB of a {budget / GIB:.2f} GiB budget"
           + (" (standby frees the KV cache while training)" if e.standby else "")]
    if defaults.fits is False:
        out.append("Unsloth's defaults (gpu_memory_utilization "
                   f"{defaults.requested_gpu_memory_utilization}, batch {defaults.requested_batch_size} x "
                   f"{defaults.gradient_accumulation_steps} x {defaults.num_generations}) do not fit this card")
    return out


def _why_nothing_fits(d: UnslothEstimate, budget: int, margin: float) -> str:
    if d.capacity is None:
        return f"nothing to plan with: {d.vllm_not_modelled}"
    parts = [f"no Unsloth setup fits {d.gpu.name} with a {margin:.0%} margin"]
    if d.capacity.errors:
        parts.append(f"vLLM at Unsloth's defaults: {d.capacity.errors[0]}")
    if d.phases:
        worst = max(d.phases, key=lambda k: d.phases[k])
        parts.append(f"at Unsloth's defaults the {worst.replace('_bytes', '')} phase needs "
                     f"{d.phases[worst] / GIB:.2f} GiB of {budget / GIB:.2f}")
    parts.append("try --weights nf4, a shorter --max-seq-length, a smaller --lora-rank or --standby")
    return "; ".join(parts)


def with_unsloth_checks(p: UnslothPlan, for_training: bool | None = None) -> UnslothPlan:
    """The plan with its runtime pre-flight checks (planner.runtimes.unsloth.unsloth_checks)."""
    return replace(p, checks=tuple(unsloth_checks(p.estimate, trl_version=p.trl_version,
                                                  for_training=for_training)))
