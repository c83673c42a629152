"""The search for Unsloth's ``fast_inference=True`` runtime: what to pass so every phase fits.

    req = unsloth_request("meta-llama/Llama-3.1-8B-Instruct", "T4", weights="nf4", lora_rank=32,
                          max_seq_length=1024)
    p = solve_unsloth(req)     # a planner.search.results.Plan, p.runtime == "unsloth"
    p.fits, p.config, p.runtime_details.from_pretrained_kwargs(), p.runtime_details.kwargs(p.config)

The request is the TRL runtime's (planner.search.request.PlanRequest, ``runtime="unsloth"``) in the
same words: ``weights="nf4"`` is Unsloth's ``load_in_4bit=True`` (the default here, Unsloth's),
``lora_rank``, ``prompt_length``, ``max_completion_length``, ``num_generations``, the pins
(``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``vllm_gpu_memory_utilization``
= from_pretrained's ``gpu_memory_utilization``), ``kv_cache_dtype="fp8"`` (= ``float8_kv_cache``),
``margin``, ``vllm_version``; Unsloth's own: ``max_seq_length``, ``standby``, ``unsloth_version``
(request.UnslothOptions). What this runtime cannot honour (several GPUs, a layout, an engine, full
fine-tuning, ...) is refused with one line each (:func:`unsloth_problems`).

It is a runtime of the one solver loop (:data:`UNSLOTH_RUNTIME`, planner.search.loop): its
candidates are the requested utilisation, standby, the group size, the completion length, the
per-device batch and the accumulation steps, evaluated through :func:`planner.runtimes.unsloth.unsloth_estimate`
(the memory model, Unsloth's rules per release); the loop ranks what fits with the one objective
(planner.search.objective.score). Unsloth's rules are honoured, not fought: with a standby override
the request rendered is the value Unsloth will use (no rewrite), the batch is one Unsloth's
GRPOConfig keeps (the divisibility rule), and the rank vLLM gets is Unsloth's rounding. The margin is
the runtime's band (planner.search.margins.RUNTIME_MARGIN) unless given. Pure: no environment read
beyond the installed-version defaults the facts table resolves (planner.specs.versions).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any

from ..errors import InfeasibleError, InvalidSetupError
from ..memory.lora import lora_params
from ..memory.trainer import TrainerMemory, TrainerSetup
from ..runtimes.unsloth import (
    UnslothEstimate,
    adjusted_batch_size,
    requested_utilization,
    standby_target,
    unsloth_checks,
    unsloth_estimate,
    unsloth_snippet,
)
from ..specs.gpu import GpuSpec
from ..specs.model import ModelSpec
from ..specs.topology import Topology
from ..specs.units import GIB
from ..specs.versions import (
    UNSLOTH_LOAD_IN_FP8_FROM,
    UNSLOTH_RL_DEFAULTS,
    UnslothFacts,
    grpo_config_has_max_prompt_length,
    parse_version,
    unsloth_facts,
    unsloth_trl_version,
)
from .estimation import resolve_request
from .loop import Found, Scored, Walk, nearest_pins, solve_with
from .margins import RUNTIME_MARGIN
from .objective import Candidate
from .request import PlanRequest, Targets, TopologyOptions, TrainerOptions, VllmOptions, plan_request
from .results import Option, Plan, RoleMemory
from .timing import option_time

MAX_SEQ_LENGTH_DEFAULT = 2048  # from_pretrained(max_seq_length=2048) (unsloth 2026.10.9 models/loader.py:1243)
DEFAULT_WEIGHTS = "nf4"  # Unsloth's notebooks load in 4 bit
WEIGHTS = ("nf4", "bf16", "fp16", "fp8")  # fp8: load_in_fp8=True (versions.UNSLOTH_LOAD_IN_FP8_FROM)
_UTILIZATIONS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
_GROUP_SIZES = (8, 6, 4, 2)


# -- what only this runtime has ------------------------------------------------------------------

@dataclass(frozen=True)
class UnslothRuntime:
    """``Plan.runtime_details`` of an Unsloth plan: the estimate it was judged by, the TRL release
    Unsloth pairs with, and what Unsloth will change from what was asked."""

    estimate: UnslothEstimate
    trl_version: str
    trl_version_reason: str
    changes: tuple[str, ...] = ()

    def from_pretrained_kwargs(self) -> dict:
        return self.estimate.from_pretrained_kwargs()

    def get_peft_model_kwargs(self) -> dict:
        return self.estimate.get_peft_model_kwargs()

    def env(self) -> dict:
        return self.estimate.env()

    def kwargs(self, grpo_config: dict) -> dict:
        """Everything the hand-off passes: from_pretrained, get_peft_model, GRPOConfig (the plan's
        ``config``), env."""
        return {"from_pretrained": self.from_pretrained_kwargs(), "get_peft_model": self.get_peft_model_kwargs(),
                "grpo_config": dict(grpo_config), "env": self.env()}

    def snippet(self, grpo_config: dict) -> str:
        """A complete Python script: env, from_pretrained, get_peft_model, GRPOConfig, GRPOTrainer."""
        return unsloth_snippet(self.kwargs(grpo_config))

    def to_dict(self) -> dict:
        """The JSON's ``"unsloth"``: the estimate's runtime figures (vLLM as Unsloth configures it,
        the trainer's terms outside vLLM's share), the keyword arguments and the environment."""
        e = self.estimate.to_dict()
        return {"unsloth_version": e["unsloth_version"], "trl_version": self.trl_version,
                "trl_version_reason": self.trl_version_reason, "from_pretrained": e["from_pretrained"],
                "get_peft_model": e["get_peft_model"], "env": e["env"],
                "gpu_memory_utilization_asked": self.estimate.requested_gpu_memory_utilization,
                "vllm_gpu_memory_utilization": self.estimate.vllm_gpu_memory_utilization,
                "standby": self.estimate.standby, "standby_requested": self.estimate.standby_requested,
                "max_seq_length": self.estimate.max_seq_length, "vllm": e["vllm"], "trainer": e["trainer"],
                "pre_vllm_used_bytes": e["pre_vllm_used_bytes"], "batch_adjusted": e["batch_adjusted"],
                "changes": list(self.changes)}


# -- the request ---------------------------------------------------------------------------------

def default_weights(finetune: Any) -> str:
    """The weights when none are given: Unsloth's 4-bit for LoRA (full fine-tuning is refused with
    its own line, not as "full fine-tuning of nf4 weights")."""
    return DEFAULT_WEIGHTS if finetune in (None, "lora") else TrainerOptions.weights


def unsloth_request(model: Any, gpu: Any = "auto", **options: Any) -> PlanRequest:
    """A validated request for the Unsloth runtime from ``planner.plan``'s keyword arguments
    (Unsloth's default weights: 4-bit)."""
    options.setdefault("weights", default_weights(options.get("finetune")))
    return plan_request(model, gpu, runtime="unsloth", **options)


_DEFAULTS = {**{f.name: f.default for f in fields(TrainerOptions)}, **{f.name: f.default for f in fields(VllmOptions)},
             **{f.name: f.default for f in fields(Targets)}, **{f.name: f.default for f in fields(TopologyOptions)}}
# request fields this runtime does not read: (section, name) -> why, refused unless at their default
_NOT_HONOURED = {
    ("topology", "layout"): "vLLM runs inside the training process (no layout to choose)",
    ("topology", "engine"): "one process trains (no data-parallel engine)",
    ("topology", "server_gpus"): "vLLM runs inside the training process (no server)",
    ("topology", "server_host"): "vLLM runs inside the training process (no server)",
    ("topology", "server_port"): "vLLM runs inside the training process (no server)",
    ("topology", "server_utilization_range"): "vLLM runs inside the training process (no server)",
    ("vllm", "tensor_parallel_size"): "one GPU (no vLLM tensor parallelism)",
    ("vllm", "trl_version"): "the TRL release follows --unsloth-version (Unsloth's pairing)",
    ("trainer", "lora_target_modules"): "get_peft_model targets every projection (Unsloth's notebooks)",
    ("trainer", "logprob_head"): "Unsloth computes the loss in chunks (its own head)",
    ("trainer", "use_liger_kernel"): "Unsloth computes the loss in chunks (its own head)",
    ("topology", "use_vllm"): "fast_inference=True generates with Unsloth's own vLLM",
    ("trainer", "expandable_segments"): "standby strips it; the runtime checks read the environment",
    ("trainer", "transformers_version"): "the transformers release is not modelled for this runtime",
    ("targets", "utilization_range"): "pin the utilisation (--gpu-memory-utilization) or let the search choose",
    ("targets", "sleep_mode"): "Unsloth's sleep is --standby",
    ("targets", "max_batch"): "the search tries the batches Unsloth keeps",
    ("targets", "rollout_turns"): "multi-turn rollouts are modelled with TRL only",
}
_GEN = "the search sets generation_batch_size = batch x accumulation (pin those)"
_PINS_NOT_HONOURED = {"generation_batch_size": _GEN, "completions_per_step": _GEN,
                      "vllm_enable_sleep_mode": "use --standby", "vllm_max_model_length": "use --max-seq-length",
                      "lora_target_modules": "get_peft_model targets every projection",
                      "steps_per_generation": "pin --gradient-accumulation-steps"}


def fp8_release_problem(facts: UnslothFacts) -> str | None:
    """The line refusing ``--weights fp8`` for a release without from_pretrained(load_in_fp8=...); None from it on."""
    if parse_version(facts.release, "Unsloth") >= parse_version(UNSLOTH_LOAD_IN_FP8_FROM, "Unsloth"):
        return None
    return (f"--weights fp8 needs Unsloth >= {UNSLOTH_LOAD_IN_FP8_FROM} (from_pretrained(load_in_fp8=True)); "
            f"planned for Unsloth {facts.release}: pass --unsloth-version {UNSLOTH_LOAD_IN_FP8_FROM} or newer")


def not_honoured(name: str) -> str:
    """The line that refuses a request field the Unsloth runtime does not honour (as unsloth_problems
    words it), for the CLI's fixed estimate, which has no request."""
    return _not_honoured_line(name, next(w for (_, n), w in _NOT_HONOURED.items() if n == name))


def _not_honoured_line(name: str, why: str) -> str:
    return f"--{name.replace('_', '-')} is not honoured by --runtime unsloth: {why}"


def unsloth_problems(req: PlanRequest) -> list[str]:
    """Every option the Unsloth runtime cannot honour, one line each (from the CLI and Python alike)."""
    p: list[str] = []
    o, t = req.topology, req.trainer
    gpus = req.gpu if isinstance(req.gpu, tuple) else (req.gpu,)
    if o.num_gpus * o.num_nodes != 1 or len(gpus) > 1:
        p.append("--runtime unsloth plans one GPU (vLLM runs inside the one training process): drop --num-gpus, "
                 "--num-nodes and the list of GPUs")
    for (section, name), why in _NOT_HONOURED.items():
        if getattr(getattr(req, section), name) != _DEFAULTS[name]:
            p.append(_not_honoured_line(name, why))
    if t.finetune != "lora":
        p.append("--runtime unsloth plans LoRA (fast_inference=True trains adapters on vLLM's weights)")
    if t.weights not in WEIGHTS:
        p.append(f"--runtime unsloth takes --weights nf4, bf16, fp16 or fp8, got {t.weights}")
    if (req.pins.optim or t.optim) not in (None, "adamw_8bit"):
        p.append("--runtime unsloth is modelled with adamw_8bit (Unsloth's RL default) only")
    if not t.gradient_checkpointing:
        p.append("--no-gradient-checkpointing is not honoured by --runtime unsloth: it always checkpoints "
                 "(use_gradient_checkpointing='unsloth')")
    p += [_not_honoured_line(k, why) for k, why in _PINS_NOT_HONOURED.items() if getattr(req.pins, k) is not None]
    if req.passthrough:
        p.append("TRL settings from a config file are not read by --runtime unsloth")
    if not (isinstance(req.calibration, str) and req.calibration == "auto"):
        p.append("calibration profiles are TRL's: --runtime unsloth uses its own memory model")
    return p + _length_problems(req)


def _length_problems(req: PlanRequest) -> list[str]:
    a = _asked(req)
    seq, prompt, completion = a["max_seq_length"], a["max_prompt_length"], a["max_completion_length"]
    p = []
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 2:
        p.append(f"--max-seq-length must be an integer >= 2, got {seq!r}")
    elif prompt < 1:
        p.append(f"--prompt-length must be a positive integer, got {prompt!r}")
    elif prompt >= seq:
        p.append(f"--prompt-length {prompt} leaves no completion within --max-seq-length {seq}")
    elif completion is not None and prompt + completion > seq:
        p.append(f"--prompt-length {prompt} + --max-completion-length {completion} exceeds --max-seq-length {seq} "
                 f"(vLLM's max_model_len)")
    s, v = req.unsloth.standby, req.unsloth.unsloth_version
    if s is not None and not isinstance(s, bool):
        p.append(f"standby must be True, False or None, got {s!r}")
    if v is not None and (not isinstance(v, str) or not v.strip()):
        p.append(f"--unsloth-version must be a release number like '2026.10.9', got {v!r}")
    return p


def _asked(req: PlanRequest) -> dict[str, Any]:
    """The request in unsloth_estimate's words (None: the search chooses, or Unsloth's default)."""
    pins, g, t, u = req.pins, req.targets, req.trainer, req.unsloth
    return dict(max_seq_length=MAX_SEQ_LENGTH_DEFAULT if u.max_seq_length is None else u.max_seq_length,
                max_prompt_length=pins.max_prompt_length if pins.max_prompt_length is not None else g.prompt_length,
                max_completion_length=pins.max_completion_length or g.max_completion_length,
                num_generations=pins.num_generations or g.num_generations,
                per_device_train_batch_size=pins.per_device_train_batch_size,
                gradient_accumulation_steps=pins.gradient_accumulation_steps,
                gpu_memory_utilization=pins.vllm_gpu_memory_utilization, standby=u.standby,
                load_in_4bit=t.weights == "nf4", weights_fp8=t.weights == "fp8", lora_rank=pins.lora_r or t.lora_rank,
                float8_kv_cache=req.vllm.kv_cache_dtype == "fp8", unsloth_version=u.unsloth_version,
                vllm_version=req.vllm.vllm_version)


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


def _setup(req: PlanRequest, e: UnslothEstimate) -> TrainerSetup:
    """The trainer as Unsloth runs the estimate: LoRA, its batch, accumulation and lengths."""
    setup = TrainerSetup(weights="bf16" if e.load_in_fp8 else _weights(e, req), finetune="lora",
                         lora_rank=e.lora_rank, optim="adamw_8bit", batch_size=e.per_device_train_batch_size,
                         prompt_length=e.max_prompt_length, completion_length=e.max_completion_length,
                         gradient_accumulation_steps=e.gradient_accumulation_steps)
    if e.load_in_fp8:  # TrainerSetup knows the formats a TRL trainer loads; this trainer holds no copy of its own
        object.__setattr__(setup, "weights", "fp8")  # (it trains on vLLM's shared FP8 tensors)
    return setup


def _seconds(req: PlanRequest, e: UnslothEstimate, gen_batch: int) -> float:
    """The predicted seconds per optimizer step of an estimate (planner.search.timing.option_time)."""
    return option_time(e.model, e.gpu, _setup(req, e), _ONE_GPU, gen_batch, int(_concurrency(e)), e.standby,
                       e.capacity, "unsloth", **req.targets.timing_inputs()).step_seconds


def _seconds_at(req: PlanRequest, e: UnslothEstimate, gen_batch: int, accumulation: int) -> float:
    """:func:`_seconds` of ``e`` run with ``accumulation`` micro-batches per optimizer step."""
    return _seconds(req, replace(e, gradient_accumulation_steps=accumulation), gen_batch)


def _waves(e: UnslothEstimate, gen_batch: int) -> int:
    """Generation rounds for ``gen_batch`` completions, whole sequences at once (the plan's
    ``Option.concurrency``; a huge number when vLLM holds none at once)."""
    conc = int(_concurrency(e))
    return math.ceil(gen_batch / conc) if conc > 0 else 10 ** 9


def _batches(facts: UnslothFacts, g: int, batch: int | None, ga: int | None) -> list[tuple[int, int]]:
    """(batch, accumulation) to try for group size ``g``: one generation batch of ``g`` completions
    (one prompt) split into micro-batches Unsloth keeps; a batch the user fixed only where Unsloth
    keeps it (none: its GRPOConfig would rewrite the pin, :func:`_batch_rule_problem`)."""
    if batch is not None and ga is not None:
        return [(batch, ga)] if adjusted_batch_size(facts, batch, ga, g) == batch else []
    if batch is not None:
        kept = [(batch, a) for a in range(1, g + 1) if adjusted_batch_size(facts, batch, a, g) == batch
                and (batch * a) % g == 0]
        return kept[:1]
    if ga is not None:
        kept = [(b, ga) for b in range(g, 0, -1) if adjusted_batch_size(facts, b, ga, g) == b and (b * ga) % g == 0]
        return kept or [(g, ga)]
    return kept_batches(facts, g, g)


def _generation_batches(s: _State, e: UnslothEstimate, g: int, ga: int) -> list[tuple[int, int]]:
    """(generation batch, accumulation steps) for the micro-batch ``e`` runs: its one group (``ga`` steps)
    and, like the TRL search, the most groups vLLM generates in one wave at that micro-batch (at most
    ``max_completions_per_step``; the accumulation grows, Unsloth's GRPOConfig keeping the micro-batch).
    The memory does not change with it (each step trains one micro-batch); a pinned accumulation is kept."""
    b = e.per_device_train_batch_size
    out = [(b * ga, ga)]
    if s.asked["gradient_accumulation_steps"] is not None:
        return out
    limit = min(s.req.targets.max_completions_per_step, int(_concurrency(e)))
    for acc in range(limit // b, ga, -1):
        if (b * acc) % g == 0 and adjusted_batch_size(s.facts, b, acc, g) == b:
            return out + [(b * acc, acc)]
    return out


def _batch_rule_problem(facts: UnslothFacts, a: dict[str, Any]) -> str | None:
    """The line naming Unsloth's divisibility rule when it would rewrite a pinned batch with every
    group size the search may take; None when one keeps it."""
    batch, ga = a["per_device_train_batch_size"], a["gradient_accumulation_steps"]
    groups = [a["num_generations"]] if a["num_generations"] else list(_GROUP_SIZES)
    if batch is None or any(_batches(facts, g, batch, ga) for g in groups):
        return None
    rule = ("per_device_train_batch_size x gradient_accumulation_steps x world size"
            if facts.divisibility_rule == "ga_world" else "per_device_train_batch_size")
    pinned = f"per_device_train_batch_size {batch}" + (f", gradient_accumulation_steps {ga}" if ga else "")
    return (f"pinned {pinned}: Unsloth {facts.release}'s GRPOConfig sets per_device_train_batch_size to "
            f"num_generations unless {rule} is a multiple of num_generations ({' or '.join(map(str, groups))}); "
            f"pin a batch it keeps")


def _utilization_problem(s: _State) -> str | None:
    """The line naming Unsloth's standby rule when standby (asked for) would change a pinned utilisation."""
    a = s.asked
    u = a["gpu_memory_utilization"]
    if u is None or a["standby"] is not True:
        return None
    kept, why = requested_utilization(s.facts, u, True, s.card.total_bytes, s.fixed["vllm_version"])
    if round(kept, 4) == round(u, 4):
        return None
    return (f"--vllm-gpu-memory-utilization {u} with --standby: {why} (Unsloth {s.facts.release}'s standby rule); "
            f"pin {kept:.4g}, or drop --standby")


# -- the search ------------------------------------------------------------------------------------

def solve_unsloth(req: PlanRequest) -> Plan:
    """The Unsloth setup that fits with the margin and scores best (planner.search.objective): the
    one solver loop (planner.search.loop.solve_with, as planner.search.solver.solve runs it) with
    :data:`UNSLOTH_RUNTIME`. Raises InvalidSetupError naming every option it cannot honour,
    InfeasibleError naming what breaks when nothing fits."""
    return solve_with(UNSLOTH_RUNTIME, req)


@dataclass(frozen=True)
class _State:
    """One Unsloth solve: the request in unsloth_estimate's words, what every candidate shares, Unsloth's
    own defaults (the reference, and what the error names when nothing fits), the margin and budget."""

    req: PlanRequest
    spec: ModelSpec
    card: GpuSpec
    facts: UnslothFacts
    asked: dict[str, Any]
    fixed: dict[str, Any]
    defaults: UnslothEstimate
    margin: float
    budget: int


_ONE_GPU = Topology(1, 1, "ddp", "colocate", vllm_tensor_parallel_size=1)


class UnslothSolverRuntime:
    """Unsloth's ``fast_inference=True`` as the one solver sees it (planner.search.loop.SolverRuntime):
    one GPU, one stage; its candidates are the requests Unsloth keeps (the utilisation tiers, standby),
    the completion lengths, the group sizes and the batches its GRPOConfig keeps, each evaluated by
    planner.runtimes.unsloth.unsloth_estimate; the margin is RUNTIME_MARGIN's unless given."""

    name: str = "unsloth"
    reads_environment: bool = False  # pure: only the installed-version defaults the facts table resolves
    installed: tuple[str, ...] = ("unsloth_zoo", "trl", "vllm")

    def prepare(self, req: PlanRequest) -> _State:
        return self.prepare_fixed(req, refuse_rewrites=True)

    def prepare_fixed(self, req: PlanRequest, refuse_rewrites: bool) -> _State:
        """The solve's state; ``refuse_rewrites``: refuse a pinned batch or utilisation Unsloth would change
        (the search; a fixed setup shows the change instead, :func:`unsloth_fixed_plan`)."""
        problems = unsloth_problems(req)
        if problems:
            raise InvalidSetupError("\n".join(problems))
        resolved = resolve_request(req)  # one GPU: unsloth_problems refused more
        spec, card = resolved.model, resolved.card
        a = _asked(req)
        margin = RUNTIME_MARGIN["unsloth"] if req.targets.margin is None else req.targets.margin
        facts = unsloth_facts(a["unsloth_version"])
        if a["weights_fp8"] and fp8_release_problem(facts):
            raise InvalidSetupError(fp8_release_problem(facts))
        fixed = {k: a[k] for k in ("max_seq_length", "load_in_4bit", "weights_fp8", "float8_kv_cache", "lora_rank",
                                   "max_prompt_length")}
        fixed.update(unsloth_version=facts.release, vllm_version=a["vllm_version"])
        defaults = unsloth_estimate(spec, card, standby=bool(a["standby"]), **fixed,
                                    **{k: a[k] for k in ("gpu_memory_utilization", "num_generations",
                                                         "per_device_train_batch_size", "gradient_accumulation_steps",
                                                         "max_completion_length")})
        fixed["vllm_version"] = defaults.vllm_version or a["vllm_version"]
        s = _State(req, spec, card, facts, a, fixed, defaults, margin, int(card.total_bytes * (1 - margin)))
        why = refuse_rewrites and (_batch_rule_problem(facts, a) or _utilization_problem(s))
        if why:
            raise InvalidSetupError(why)
        return s

    def budget(self, s: _State) -> int:
        return s.budget

    def stages(self, s: _State) -> tuple[None]:
        return (None,)  # one stage: the objective ranks the lengths and group sizes itself

    def parts(self, s: _State) -> tuple[list[Topology], list[tuple[Topology, str]]]:
        return [_ONE_GPU], []

    def candidates(self, s: _State, stage: None, part: Topology, walk: Walk) -> Iterator[Scored]:
        """Every standby mode, utilisation, completion length, group size and kept batch; those vLLM
        runs with, with their peak (the largest phase)."""
        a, card, facts = s.asked, s.card, s.facts
        seq, prompt = a["max_seq_length"], a["max_prompt_length"]
        completions = [a["max_completion_length"]] if a["max_completion_length"] else \
            sorted({c for c in (seq - prompt, 1024, 512, 256, 128) if 0 < c <= seq - prompt}, reverse=True)
        wanted = a["num_generations"] or UNSLOTH_RL_DEFAULTS["num_generations"]
        groups = [a["num_generations"]] if a["num_generations"] else list(_GROUP_SIZES)
        modes = [a["standby"]] if a["standby"] is not None else [False, True]
        for mode in modes:
            for util in utilization_candidates(facts, mode, card.total_bytes, s.fixed["vllm_version"],
                                               a["gpu_memory_utilization"]):
                if a["gpu_memory_utilization"] is not None and util != round(a["gpu_memory_utilization"], 4):
                    continue  # this standby setting would change the pinned utilisation
                for completion in completions:
                    for g in groups:
                        for b, ga in _batches(facts, g, a["per_device_train_batch_size"],
                                              a["gradient_accumulation_steps"]):
                            e = unsloth_estimate(s.spec, card, standby=mode, gpu_memory_utilization=util,
                                                 num_generations=g, per_device_train_batch_size=b,
                                                 gradient_accumulation_steps=ga, max_completion_length=completion,
                                                 **s.fixed)
                            if not e.fits or (a["per_device_train_batch_size"] is not None and
                                              e.per_device_train_batch_size != a["per_device_train_batch_size"]):
                                continue  # over the card, or Unsloth would rewrite the pinned batch
                            for gen_batch, acc in _generation_batches(s, e, g, ga):
                                yield Scored(Candidate(completion, gen_batch, _waves(e, gen_batch),
                                                       e.per_device_train_batch_size, util, e.standby,
                                                       runtime="unsloth", preferred_group=g == wanted,
                                                       num_generations=g, kv_cache_bytes=e.kv_cache_bytes or 0),
                                             max(e.phases.values()),
                                             lambda e=e, gen_batch=gen_batch, acc=acc:
                                             (replace(e, gradient_accumulation_steps=acc), gen_batch),
                                             partial(_seconds_at, s.req, e, gen_batch, acc))

    def build(self, s: _State, stage: None, chosen: Topology, found: dict[Topology, Found],
              rejected: list[tuple[Topology, str]]) -> Plan:
        best = found[chosen].option
        assert best is not None  # the solver builds a part that fits
        e, gen_batch = best
        e = replace(e, vllm_version_reason=s.defaults.vllm_version_reason)
        trl, trl_reason = unsloth_trl_version(s.facts.release)
        details = UnslothRuntime(estimate=e, trl_version=trl, trl_version_reason=trl_reason,
                                 changes=tuple(_changes(s.facts, e)))
        return _plan_of(s.req, details, gen_batch, s.margin, s.budget,
                        _reasons(e, s.defaults, gen_batch, s.budget))

    def infeasible(self, s: _State, found: dict[Topology, Found],
                   rejected: list[tuple[Topology, str]]) -> InfeasibleError:
        msg, closest = _why_nothing_fits(s.defaults, s.budget, s.margin, s.req), None
        if s.req.relax and s.req.pins.items():
            lines, closest = nearest_pins(s.req, solve_unsloth)  # TRL's release-and-check
            msg += "; " + "; ".join(lines)
        return InfeasibleError(msg, closest=closest)

    def checked(self, p: Plan, for_training: bool | None, strict: bool) -> Plan:
        """The runtime pre-flight checks (``strict`` is TRL's: Unsloth's checks carry their own severity)."""
        return with_unsloth_checks(p, for_training=for_training)

    def next_steps(self, p: Plan) -> dict[str, Any]:
        return unsloth_next_steps(p)


UNSLOTH_RUNTIME = UnslothSolverRuntime()


# -- the plan ----------------------------------------------------------------------------------

def _grpo_config(e: UnslothEstimate, gen_batch: int, trl_version: str) -> dict:
    """The GRPOConfig keyword arguments (as TRL's plan: ``generation_batch_size``, never steps_per_generation)."""
    kw = e.grpo_config_kwargs()
    kw["generation_batch_size"] = gen_batch
    if not grpo_config_has_max_prompt_length(trl_version):
        kw.pop("max_prompt_length", None)
    return kw


def _trainer(e: UnslothEstimate) -> TrainerMemory:
    """The trainer's terms outside vLLM's share, as a TrainerMemory (no weights: vLLM's are shared;
    the offloaded checkpoints and the loss chunk are in the runtime's own figures)."""
    on_gpu = {k: v for k, v in e.trainer.items() if k not in ("host_checkpoint_bytes", "loss_chunk")}
    resident = sum(e.trainer[k] for k in ("adapters", "optimizer_state", "cublas_workspace"))
    return TrainerMemory(components=on_gpu, steady_bytes=resident, resident_bytes=resident, load_bytes=0,
                         trainable_params=lora_params(e.model, e.lora_rank),
                         tokens=e.per_device_train_batch_size * (e.max_prompt_length + e.max_completion_length))


def _plan_of(req: PlanRequest, details: UnslothRuntime, gen_batch: int, margin: float, budget: int,
             reasons: list[str]) -> Plan:
    """The unified Plan of the chosen estimate: one GPU, vLLM in the process, Unsloth's phases."""
    e = details.estimate
    topo = Topology(1, 1, "ddp", "colocate", vllm_tensor_parallel_size=1)
    role = RoleMemory("training_rank", 1, topo.training_devices, e.phase_parts, "unsloth", e.standby, budget,
                      None, e.capacity)
    option = Option(topo, e.max_completion_length, e.per_device_train_batch_size, gen_batch,
                    e.requested_gpu_memory_utilization, e.standby, int(_concurrency(e)), role.peak_bytes,
                    step_seconds=_seconds(req, e, gen_batch))
    setup = _setup(req, e)
    g, u = req.targets, req.unsloth
    targets = dict(num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                   prompt_length=e.max_prompt_length, margin=margin, max_seq_length=e.max_seq_length,
                   standby=u.standby, gpu_memory_utilization=req.pins.vllm_gpu_memory_utilization)
    pins = [f"{k} {v}: pinned" for k, v in req.pins.items()]
    return Plan(model=e.model, gpu=e.gpu, gpus=(e.gpu,), topology=topo, setup=setup, trainer=_trainer(e),
                config=_grpo_config(e, gen_batch, details.trl_version), roles={"training_rank": role},
                margin=margin, targets=targets, option=option, reasons=tuple(pins + reasons),
                memory_model=MEMORY_MODEL, pinned=req.pinned, runtime="unsloth", runtime_details=details)


def _weights(e: UnslothEstimate, req: PlanRequest) -> str:
    """The plan's weight format: nf4 for load_in_4bit, fp8 for load_in_fp8, else the request's 16 bits."""
    return "nf4" if e.load_in_4bit else ("fp8" if e.load_in_fp8 else req.trainer.weights)


MEMORY_MODEL = "unsloth runtime (planner/runtimes/unsloth.py: Unsloth's rules per release, analytic)"


def _changes(facts: UnslothFacts, e: UnslothEstimate) -> list[str]:
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
    one_wave = _waves(e, gen_batch) == 1
    out = [f"vLLM {e.vllm_version} ({e.vllm_version_reason})",
           f"the weights live once, inside vLLM's share ({(e.capacity.weights_bytes if e.capacity else 0) / GIB:.2f} "
           f"GiB); the trainer adds {e.trainer_peak_bytes / GIB:.2f} GiB",
           f"{gen_batch} completions per generation in {'one wave' if one_wave else 'several waves'}"
           f" (vLLM runs {_concurrency(e):.1f} sequences of {e.max_prompt_length + e.max_completion_length} tokens at once)",
           f"peak {max(e.phases.values()) / GIB:.2f} GiB of a {budget / GIB:.2f} GiB budget"
           + (" (standby frees the KV cache while training)" if e.standby else "")]
    if defaults.fits is False:
        out.append("Unsloth's defaults (gpu_memory_utilization "
                   f"{defaults.requested_gpu_memory_utilization}, batch {defaults.requested_batch_size} x "
                   f"{defaults.gradient_accumulation_steps} x {defaults.num_generations}) do not fit this card")
    return out


def _why_nothing_fits(d: UnslothEstimate, budget: int, margin: float, req: PlanRequest) -> str:
    """What breaks at the request's settings (Unsloth's defaults where it sets none), and what to try
    that the request has not set already."""
    if d.capacity is None:
        return f"nothing to plan with: {d.vllm_not_modelled}"
    at = "the pinned settings" if req.pins.items() else "Unsloth's defaults"
    parts = [f"no Unsloth setup fits {d.gpu.name} with a {margin:.0%} margin"]
    if d.capacity.errors:
        parts.append(f"vLLM at {at}: {d.capacity.errors[0]}")
    if d.phases:
        worst = max(d.phases, key=lambda k: d.phases[k])
        parts.append(f"at {at} the {worst.replace('_bytes', '')} phase needs "
                     f"{d.phases[worst] / GIB:.2f} GiB of {budget / GIB:.2f}")
    tries = (["--weights nf4"] if not d.load_in_4bit else []) + ["a shorter --max-seq-length", "a smaller --lora-rank"] \
        + (["--standby"] if req.unsloth.standby is False else [])  # None: the search tried both
    parts.append("try " + ", ".join(tries[:-1]) + " or " + tries[-1])
    return "; ".join(parts)


# -- checks and what to run next --------------------------------------------------------------------

def with_unsloth_checks(p: Plan, for_training: bool | None = None) -> Plan:
    """The plan with its runtime pre-flight checks (planner.runtimes.unsloth.unsloth_checks)."""
    d: UnslothRuntime = p.runtime_details
    return replace(p, checks=tuple(unsloth_checks(d.estimate, trl_version=d.trl_version, for_training=for_training)))


def unsloth_next_steps(p: Plan) -> dict[str, Any]:
    """What to run: the script (env, from_pretrained, get_peft_model, GRPOConfig, GRPOTrainer), or
    the same plan in Python with planner.train; the check to run first on the training machine."""
    d: UnslothRuntime = p.runtime_details
    gpu = p.gpu.name if p.gpu.free_bytes is None else "auto"
    pins = {k: p.pin_value(k) for k in p.pinned}
    u = d.estimate
    args = [repr(p.model.model_id), repr(gpu), "runtime='unsloth'",
            f"weights={p.setup.weights!r}",
            f"lora_rank={u.lora_rank}", f"max_seq_length={u.max_seq_length}"] + ([f"pin={pins!r}"] if pins else [])
    python = "\n".join(["import planner", f"plan = planner.plan({', '.join(args)})",
                        "# reward_fn(completions, **kwargs) -> list[float]; dataset: a datasets.Dataset with a "
                        "'prompt' column",
                        f"trainer = planner.train({p.model.model_id!r}, [reward_fn], dataset, plan=plan)"])
    return {"command": "python train_unsloth.py  # the script below, with your reward and dataset",
            "check": f"plan check --runtime unsloth --model {p.model.model_id} --gpu {gpu} --for-training",
            "script": d.snippet(p.config), "python": python, "files": []}


def unsloth_fixed_plan(req: PlanRequest) -> Plan:
    """The Plan of one fixed Unsloth setup, no search: the request's settings and pins, Unsloth's defaults
    for the rest (gpu_memory_utilization 0.5, batch 4 x 2 x 8 generations, standby off) and what Unsloth
    changes in them (a batch its GRPOConfig rewrites, a standby utilisation), fitting or not
    (``plan estimate --runtime unsloth``; the checks, assumptions and next steps as a plan has them come
    from planner.api). InvalidSetupError where the vLLM release is not modelled (no Plan to build)."""
    s = UNSLOTH_RUNTIME.prepare_fixed(req, refuse_rewrites=False)
    e = s.defaults
    if e.capacity is None:
        raise InvalidSetupError(f"vLLM side not modelled: {e.vllm_not_modelled}")
    trl, trl_reason = unsloth_trl_version(s.facts.release)
    details = UnslothRuntime(estimate=e, trl_version=trl, trl_version_reason=trl_reason,
                             changes=tuple(_changes(s.facts, e)))
    gen_batch = e.per_device_train_batch_size * e.gradient_accumulation_steps
    return _plan_of(s.req, details, gen_batch, s.margin, s.budget, _reasons(e, e, gen_batch, s.budget))


def unsloth_plan(model: Any, gpu: Any = "auto", **options: Any) -> Plan:
    """The search alone (no checks, assumptions or next steps: planner.plan(..., runtime="unsloth") adds them)."""
    return solve_unsloth(unsloth_request(model, gpu, **options))


__all__ = ["UnslothRuntime", "UnslothSolverRuntime", "UNSLOTH_RUNTIME", "fp8_release_problem",
           "default_weights", "unsloth_request", "unsloth_problems", "solve_unsloth", "unsloth_plan", "unsloth_fixed_plan",
           "with_unsloth_checks", "unsloth_next_steps", "kept_batches", "utilization_candidates"]
