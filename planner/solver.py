"""The solver: pick vLLM's share of the card, batch, accumulation, generations and completion
length so that every phase of a colocated GRPO step fits with a safety margin.

Decision variables: ``vllm_gpu_memory_utilization`` (0.3-0.7, step 0.01, or the user's range),
``per_device_train_batch_size`` B, ``steps_per_generation`` S (= gradient accumulation),
``num_generations`` G (fixed or chosen), ``max_completion_length`` C (up to the target),
``vllm_max_model_length`` (= prompt + C), gradient checkpointing and sleep mode.

Constraints: every phase (load, weight sync, generation, training) under ``(1 - margin) x total``;
vLLM starts (free memory at its start >= its budget); one full-length sequence fits the KV cache;
TRL's rules: the generation batch ``B x S x world`` is divisible by G, G >= 2.

Objective, lexicographic (stated in every plan):
1. reach the requested completion length;
2. the most completions per optimisation step generated in one wave (``B x S`` <= concurrency);
3. the largest training micro-batch B;
4. the least idle memory (the highest utilisation that fits: more KV cache, faster generation).
Sleep mode is used only when it wins on that objective (it costs wake-up latency).

Search: the trainer's peak depends on (C, B) only and vLLM's capacity on (utilisation, C), so both
are tabulated once and combined; the whole search is a few thousand additions, well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .errors import InfeasibleError, InvalidSetupError
from .estimation import (Estimate, calibrated_trainer_memory, colocated_vllm, default_logprob_head, estimate,
                         resolve_calibration)
from .gpu_spec import GpuSpec, margin_budget_bytes, resolve_gpu
from .memory.allocator import expandable_segments_from_env
from .memory.trainer import TrainerSetup, trainer_memory
from .model_spec import ModelSpec, resolve_model
from .phases import colocated_peak_bytes, merge_transient_bytes
from .units import GIB

OBJECTIVE = ("reach the requested completion length",
             "most completions per optimisation step generated in one wave",
             "largest training micro-batch",
             "least idle memory (highest vLLM utilisation that fits)")
DEFAULT_UTILIZATION_RANGE = (0.3, 0.7)
GENERATION_CHOICES = (8, 16, 4, 2)  # num_generations the solver may pick when the user does not
MAX_BATCH = 64
MAX_COMPLETIONS_PER_STEP = 512


@dataclass(frozen=True)
class Plan:
    """A configuration that fits, with its memory per phase and the reasons for each choice."""

    model: ModelSpec
    gpu: GpuSpec
    setup: TrainerSetup  # the trainer side as planned (batch, lengths, weights, LoRA, ...)
    config: dict  # GRPOConfig keyword arguments
    estimate: Estimate  # the chosen configuration's full estimate (trainer + vLLM + phases)
    margin: float
    targets: dict  # what the user asked for
    reasons: tuple = ()
    waves: int = 1
    checks: tuple = ()  # pre-flight Check results, filled by planner.checks
    lora_alpha: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def budget_bytes(self) -> int:
        """The card less the safety margin: every phase must stay under it."""
        return margin_budget_bytes(self.gpu, self.margin)

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.estimate.peak_bytes

    def to_dict(self) -> dict:
        e = self.estimate.to_dict()
        return {
            "model": e["model"], "gpu": e["gpu"],
            "config": dict(self.config),
            "phases": e.get("phases", {}),
            "vllm": e.get("vllm", {}),
            "trainer": e["trainer"],
            "headroom_bytes": self.headroom_bytes,
            "budget_bytes": self.budget_bytes,
            "margin": self.margin,
            "waves": self.waves,
            "objective": list(OBJECTIVE),
            "reasons": list(self.reasons),
            "targets": dict(self.targets),
            "memory_model": self.estimate.memory_model,
            "warnings": list(self.estimate.warnings),
            "checks": [c.to_dict() if hasattr(c, "to_dict") else c for c in self.checks],
            **self.extra,
        }

    # -- hand-off (planner/handoff.py) -----------------------------------------------------
    def grpo_config(self, **overrides):
        """A real ``trl.GRPOConfig`` with the planned settings (``overrides`` win)."""
        from .handoff import grpo_config_from_plan

        return grpo_config_from_plan(self, **overrides)

    def model_init_kwargs(self) -> dict:
        """``from_pretrained`` keyword arguments that load the model as planned (dtype, 4-bit)."""
        from .handoff import model_init_kwargs_from_plan

        return model_init_kwargs_from_plan(self)

    def peft_config(self):
        """A ``peft.LoraConfig`` with the planned rank and targets (None for full fine-tuning)."""
        from .handoff import peft_config_from_plan

        return peft_config_from_plan(self)


@dataclass(frozen=True)
class _Candidate:
    completion_length: int
    completions: int  # B x S per device
    batch_size: int
    utilization: float
    sleep: bool
    concurrency: float
    peak_bytes: int

    @property
    def waves(self) -> int:
        if self.concurrency <= 0:
            return 0
        return max(1, math.ceil(self.completions / max(1, int(self.concurrency))))

    def key(self) -> tuple:
        """The objective, lexicographic: length, completions in one wave (several waves only when
        not even one group fits at once: fewer waves first), micro-batch, no sleep, utilisation."""
        single = self.waves == 1
        return (self.completion_length, single, self.completions if single else -self.waves,
                self.batch_size, not self.sleep, self.utilization)


def _completion_ladder(target: int) -> list[int]:
    """Completion lengths to try, longest first: the target, then shrinking by ~1/8 to 64."""
    out, c = [], target
    while c >= 64:
        out.append(c)
        c = int(c * 7 / 8) // 32 * 32
    return out or [target]


def _utilizations(lo: float, hi: float) -> list[float]:
    n = int(round((hi - lo) / 0.01))
    return [round(hi - i * 0.01, 2) for i in range(n + 1)]


def plan(model: "str | ModelSpec", gpu: "str | GpuSpec" = "auto", *, weights: str = "bf16",
         finetune: str = "lora", lora_rank: int = 16, lora_target_modules=None, optim: str = "adamw_8bit",
         gradient_checkpointing: bool = True, logprob_head: str | None = None,
         expandable_segments: bool | None = None, num_generations: int | None = None,
         max_completion_length: int | None = None, prompt_length: int = 256,
         utilization_range: tuple = DEFAULT_UTILIZATION_RANGE, margin: float = 0.05,
         sleep_mode: str = "auto", vllm_version: str | None = None, trl_version: str | None = None,
         vllm_kv_cache_dtype: str = "auto", vllm_tensor_parallel_size: int = 1,
         calibration="auto", relax: bool = True) -> Plan:
    """Solve for the configuration that fits and makes the most of the card (module docstring)."""
    spec = resolve_model(model)
    card = resolve_gpu(gpu)
    if max_completion_length is None:  # TRL's own default for the release planned for
        from .versions import trl_facts

        max_completion_length = trl_facts(trl_version).max_completion_length_default
    lo, hi = _check_targets(spec, utilization_range, margin, num_generations, max_completion_length,
                            prompt_length, sleep_mode, weights)
    if expandable_segments is None:
        expandable_segments = expandable_segments_from_env()
    head = logprob_head or default_logprob_head()
    targets = dict(num_generations=num_generations, max_completion_length=max_completion_length,
                   prompt_length=prompt_length, utilization_range=[lo, hi], margin=margin, sleep_mode=sleep_mode)
    base = dict(weights=weights, finetune=finetune, lora_rank=lora_rank,
                lora_target_modules=tuple(lora_target_modules) if lora_target_modules else None, optim=optim,
                logprob_head=head, expandable_segments=bool(expandable_segments))
    ckpt = bool(gradient_checkpointing)
    vkw = dict(vllm_version=vllm_version, trl_version=trl_version, vllm_kv_cache_dtype=vllm_kv_cache_dtype,
               vllm_tensor_parallel_size=vllm_tensor_parallel_size,
               calibration=resolve_calibration(spec, card, calibration))  # looked up once
    best = _search(spec, card, base, ckpt, targets, lo, hi, margin, sleep_mode, vkw)
    if best is None:
        raise _infeasible(spec, card, base, ckpt, targets, lo, hi, margin, sleep_mode, vkw, relax)
    cand, by_sleep, G = best
    chosen = _make_plan(spec, card, base, ckpt, cand, dict(targets, chosen_generations=G), margin, vkw,
                        by_sleep.get(not cand.sleep))
    from .checks import with_checks  # the pre-flight checks travel with every plan

    return with_checks(chosen)


def _check_targets(spec, utilization_range, margin, num_generations, max_completion_length, prompt_length,
                   sleep_mode, weights):
    try:
        lo, hi = (float(x) for x in utilization_range)
    except (TypeError, ValueError):
        raise InvalidSetupError(f"--utilization-range must be two numbers LO,HI, got {utilization_range!r}") from None
    if not (0 < lo <= hi <= 1):
        raise InvalidSetupError(f"--utilization-range must satisfy 0 < LO <= HI <= 1, got {lo},{hi}")
    if not (0 <= margin < 0.5):
        raise InvalidSetupError(f"--margin must be in [0, 0.5), got {margin}")
    if num_generations is not None and (not isinstance(num_generations, int) or num_generations < 2):
        raise InvalidSetupError(f"--num-generations must be at least 2 (GRPO needs a group to compute "
                                f"advantages), got {num_generations}")
    if not isinstance(max_completion_length, int) or max_completion_length <= 0:
        raise InvalidSetupError(f"--max-completion-length must be a positive integer, got {max_completion_length}")
    if not isinstance(prompt_length, int) or prompt_length < 0:
        raise InvalidSetupError(f"--prompt-length must be a non-negative integer, got {prompt_length}")
    if prompt_length + max_completion_length > spec.max_position_embeddings:
        raise InvalidSetupError(f"prompt + completion ({prompt_length} + {max_completion_length}) exceeds "
                                f"{spec.model_id}'s context of {spec.max_position_embeddings} tokens")
    if weights == "int8":
        raise InvalidSetupError("--weights int8 cannot be colocated with vLLM: TRL raises 'vLLM does not support "
                                "in-flight 8-bit quantization'; use --weights nf4 or bf16")
    if sleep_mode not in ("auto", "on", "off"):
        raise InvalidSetupError(f"--sleep-mode must be auto, on or off, got {sleep_mode!r}")
    return lo, hi


def _vllm_table(spec, card, base, trainer_load, utils, C, prompt_length, guess_seqs, vkw):
    """vLLM capacity, awake footprint and asleep residue for every utilisation at completion length C."""
    from .vllm import sleep_resident_bytes, vllm_process_bytes

    out = {}
    for u in utils:
        cap = colocated_vllm(spec, card, trainer_load, u, weights=base["weights"],
                             max_model_len=prompt_length + C, max_num_seqs=guess_seqs,
                             tensor_parallel_size=vkw["vllm_tensor_parallel_size"],
                             kv_cache_dtype=vkw["vllm_kv_cache_dtype"], vllm_version=vkw["vllm_version"],
                             trl_version=vkw["trl_version"])
        out[u] = (cap, vllm_process_bytes(cap), sleep_resident_bytes(cap, level=2))
    return out


def training_setup(base: dict, ckpt: bool, B: int, P: int, C: int, **extra) -> TrainerSetup:
    """The trainer setup the solvers evaluate for micro-batch ``B`` of ``P + C`` tokens. A
    generation wave is several micro-batches (gradient_accumulation_steps = completions per step
    / B), so it is one that holds the earlier ones' gradients."""
    return TrainerSetup(**base, gradient_checkpointing=ckpt, batch_size=B, prompt_length=P, completion_length=C,
                        gradient_accumulation_steps=2, **extra)


def _search(spec, card, base, ckpt, targets, lo, hi, margin, sleep_mode, vkw):
    """Best candidate at the longest completion length that has one, or None."""
    budget = margin_budget_bytes(card, margin)
    G_options = [targets["num_generations"]] if targets["num_generations"] else list(GENERATION_CHOICES)
    P = targets["prompt_length"]
    sleeps = {"auto": [False, True], "on": [True], "off": [False]}[sleep_mode]
    utils = _utilizations(lo, hi)
    for C in _completion_ladder(targets["max_completion_length"]):
        trainers = {}
        for B in range(1, MAX_BATCH + 1):
            tm, _, _ = calibrated_trainer_memory(spec, training_setup(base, ckpt, B, P, C), vkw["calibration"])
            if tm.peak_bytes > budget:
                break
            trainers[B] = tm
        if not trainers:
            continue
        any_tm = trainers[1]
        table = _vllm_table(spec, card, base, any_tm.load_bytes, utils, C, P, MAX_COMPLETIONS_PER_STEP, vkw)
        for G in G_options:  # the user's G, else TRL's default 8 first, others only if 8 cannot fit
            found = _best_for(spec, base, trainers, table, utils, sleeps, budget, G, C)
            if found is not None:
                best, best_by_sleep = found
                return best, best_by_sleep, G
    return None


def _best_for(spec, base, trainers, table, utils, sleeps, budget, G, C):
    """Best candidate (and best per sleep setting) for one completion length and group size."""
    best, best_by_sleep = None, {}
    merge = merge_transient_bytes(spec, TrainerSetup(**base))
    for u in utils:
        cap, awake, asleep = table[u]
        if not cap.startup_ok or cap.max_concurrency < 1:
            continue
        conc = int(cap.max_concurrency)
        for sleep in sleeps:
            for B, tm in trainers.items():
                peak = colocated_peak_bytes(tm.peak_bytes, tm.steady_bytes, tm.load_bytes, merge, awake, asleep, sleep)
                if peak > budget:
                    break  # larger B only grows
                step = B * G // math.gcd(B, G)  # completions must be a multiple of B and of G
                n = max(step, min(MAX_COMPLETIONS_PER_STEP, conc) // step * step)
                c = _Candidate(C, n, B, u, sleep, cap.max_concurrency, peak)
                if best is None or c.key() > best.key():
                    best = c
                other = best_by_sleep.get(sleep)
                if other is None or c.key() > other.key():
                    best_by_sleep[sleep] = c
    return None if best is None else (best, best_by_sleep)


def _make_plan(spec, card, base, ckpt, cand: _Candidate, targets, margin, vkw, alternative=None) -> Plan:
    B, n = cand.batch_size, cand.completions
    S = n // B
    P, C = targets["prompt_length"], cand.completion_length
    G = targets.pop("chosen_generations")
    e = estimate(spec, card, **base, gradient_checkpointing=ckpt, batch_size=B, prompt_length=P,
                 completion_length=C, gradient_accumulation_steps=S, vllm_gpu_memory_utilization=cand.utilization,
                 vllm_max_model_len=P + C, steps_per_generation=S, sleep_mode=cand.sleep,
                 vllm_version=vkw["vllm_version"], trl_version=vkw["trl_version"],
                 vllm_kv_cache_dtype=vkw["vllm_kv_cache_dtype"],
                 vllm_tensor_parallel_size=vkw["vllm_tensor_parallel_size"], calibration=vkw["calibration"])
    config = {
        "per_device_train_batch_size": B,
        "gradient_accumulation_steps": S,
        "steps_per_generation": S,
        "num_generations": G,
        "max_completion_length": C,
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": cand.utilization,
        "vllm_max_model_length": P + C,
        "vllm_enable_sleep_mode": cand.sleep,
        "vllm_tensor_parallel_size": vkw["vllm_tensor_parallel_size"],
        "gradient_checkpointing": ckpt,
        "bf16": bool(card.bf16) and base["weights"] != "fp32",
        "optim": base["optim"],
    }
    waves = max(1, math.ceil(n / max(1, int(e.vllm.max_concurrency))))
    reasons = _reasons(spec, card, targets, cand, S, G, e, margin, waves, alternative)
    return Plan(model=spec, gpu=card, setup=e.setup, config=config, estimate=e, margin=margin, targets=targets,
                reasons=tuple(reasons), waves=waves, lora_alpha=2 * base["lora_rank"])


def _reasons(spec, card, targets, cand, S, G, e, margin, waves, alternative) -> list[str]:
    tgt = targets["max_completion_length"]
    r = []
    if cand.completion_length == tgt:
        r.append(f"completion length {tgt} reached as requested")
    else:
        r.append(f"completion length cut to {cand.completion_length} (requested {tgt}): longer does not fit "
                 f"{card.name} with a {margin:.0%} margin")
    conc = int(e.vllm.max_concurrency)
    r.append(f"{cand.completions} completions per step ({cand.completions // G} prompts x {G} generations) = "
             f"batch {cand.batch_size} x {S} steps per generation; vLLM holds "
             f"{conc} full-length sequences at once, so "
             f"{'one wave' if waves == 1 else f'{waves} waves'}")
    r.append(f"micro-batch {cand.batch_size}: the largest whose training step fits beside vLLM")
    r.append(f"vllm_gpu_memory_utilization {cand.utilization:.2f}: the highest in the range that keeps every "
             f"phase under {(1 - margin):.0%} of {card.total_bytes / GIB:.1f} GiB "
             f"(binding phase: {e.phases.binding_phase})")
    if cand.sleep:
        if alternative is None:
            r.append("sleep mode on: without it no configuration fits beside vLLM's budget")
        else:
            r.append(f"sleep mode on: awake all the time vLLM would allow only {alternative.completions} completions "
                     f"per step at batch {alternative.batch_size} (utilisation {alternative.utilization:.2f})")
    else:
        r.append("sleep mode off: everything fits with vLLM awake (no wake-up latency"
                 + (")" if alternative is None else ", and sleeping would not improve the objective)"))
    return r


def _infeasible(spec, card, base, ckpt, targets, lo, hi, margin, sleep_mode, vkw, relax) -> InfeasibleError:
    """Name the term that breaks the budget and find the closest plan that fits."""
    P = targets["prompt_length"]
    C = min(64, targets["max_completion_length"])
    budget = margin_budget_bytes(card, margin)
    tm = trainer_memory(spec, TrainerSetup(**base, gradient_checkpointing=ckpt, batch_size=1,
                                           prompt_length=P, completion_length=C))
    c = tm.components
    if tm.peak_bytes > budget:
        biggest = max(c, key=c.get)
        why = (f"the trainer alone needs {tm.peak_bytes / GIB:.1f} GiB at batch 1 (largest term: {biggest} "
               f"{c[biggest] / GIB:.1f} GiB) but {card.name} allows {budget / GIB:.1f} GiB with a {margin:.0%} margin")
    else:
        at_lo = colocated_vllm(spec, card, tm.load_bytes, lo, weights=base["weights"], max_model_len=P + C,
                               vllm_version=vkw["vllm_version"], trl_version=vkw["trl_version"])
        at_hi = colocated_vllm(spec, card, tm.load_bytes, hi, weights=base["weights"], max_model_len=P + C,
                               vllm_version=vkw["vllm_version"], trl_version=vkw["trl_version"])
        if not at_lo.startup_ok and at_lo.free_at_init_bytes < at_lo.budget_bytes:
            why = (f"vLLM cannot start beside the trainer's {tm.load_bytes / GIB:.1f} GiB of loaded weights even at "
                   f"utilisation {lo}: {at_lo.errors[0]}")
        elif not at_hi.startup_ok:
            why = f"vLLM's share at utilisation {hi} has no room for the KV cache: {at_hi.errors[-1]}"
        else:
            why = (f"the trainer's step ({tm.peak_bytes / GIB:.1f} GiB) plus vLLM's share at utilisation {lo} "
                   f"exceeds {budget / GIB:.1f} GiB ({card.name} less a {margin:.0%} margin)")
    closest = None
    tried = []
    if relax:
        relaxations = []
        if base["weights"] in ("bf16", "fp16", "fp32"):
            relaxations.append(("4-bit weights (--weights nf4)", dict(base, weights="nf4")))
        if base["finetune"] == "lora" and base["lora_rank"] > 8:
            relaxations.append(("LoRA rank 8", dict(base, lora_rank=8)))
        if lo > 0.2:
            relaxations.append(("utilisation range 0.1-0.9", None))
        for label, b in relaxations:
            tried.append(label)
            kw = dict(b or base)
            rng = (0.1, 0.9) if b is None else (lo, hi)
            try:
                closest = plan(spec, card, **kw, gradient_checkpointing=ckpt,
                               num_generations=targets["num_generations"],
                               max_completion_length=targets["max_completion_length"], prompt_length=P,
                               utilization_range=rng, margin=margin, sleep_mode=sleep_mode,
                               vllm_version=vkw["vllm_version"], trl_version=vkw["trl_version"], relax=False)
                closest = replace(closest, extra={"relaxation": label})
                break
            except InfeasibleError:
                continue
    msg = f"no configuration fits: {why}"
    if closest is not None:
        cfg = closest.config
        msg += (f"; closest plan that fits: {closest.extra['relaxation']} with batch "
                f"{cfg['per_device_train_batch_size']}, max_completion_length {cfg['max_completion_length']}, "
                f"vllm_gpu_memory_utilization {cfg['vllm_gpu_memory_utilization']}")
    elif relax:
        msg += "; nothing close fits either (tried " + ", ".join(tried or ["shorter completions"]) + ")"
    return InfeasibleError(msg, closest=closest)
