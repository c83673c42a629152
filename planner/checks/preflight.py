"""Pre-flight checks: what would stop a planned GRPO run before it allocates anything.

    >>> import planner
    >>> report = planner.preflight(planner.plan("Qwen/Qwen2.5-7B-Instruct", "auto"))
    >>> [c.id for c in report.errors]          # [] when nothing blocks the run
    >>> report.raise_for_errors()              # PreflightError naming every failed check

Each :class:`Check` has an ``id`` (``trl-colocate-version``, ``gpu-free-memory``, ...), a severity,
a message and the fix. Passing checks are reported too, with severity ``info``.

What is checked, and where each rule comes from:

- installed packages (``trl-*``, ``vllm-*``, ``bitsandbytes-*``, ``peft-installed``, ``liger-installed``): TRL colocate
  support, sleep mode, the releases whose colocated sleep mode generates from stale weights
  (trl#5312), vLLM inside the range the installed TRL supports, bitsandbytes for 8-bit and paged
  optimizers and for nf4/int8 weights. Every version fact comes from :mod:`planner.specs.versions`.
- the card (``gpu-*``): bf16 support; with a live reading (``--gpu auto``), free memory now
  against the plan's peak (other processes hold memory too) and vLLM's start-up free-memory
  check (``vllm-startup-memory``, also read from the plan's vLLM estimate).
- TRL's own validation (``trl-*``, ``vllm-tensor-parallel``): GRPOConfig.__post_init__ and
  VLLMGeneration (trl 1.16.0 trl/trainer/grpo_config.py, trl/generation/vllm_generation.py); the
  messages quote TRL's.
- lengths (``context-length``) and ``PYTORCH_CUDA_ALLOC_CONF`` with sleep mode
  (``alloc-conf-sleep-mode``).
- the architecture (``model-architecture``): a ``model_type`` the planner does not model is
  planned with a Llama-like decoder's facts; the check names the nearest modelled family and
  suggests ``plan profile --trace``. ``strict`` (pre-flight proper: ``planner.preflight``,
  ``plan check``) makes it an error; a plan carries it as a warning (``with_checks``).

Severity of environment checks (a missing or wrong package, no GPU to read): a machine that only
plans does not need TRL, vLLM or bitsandbytes, so there they are warnings. They are errors when
``for_training=True`` (``plan check --for-training``, and ``planner.train``), and by default when
the plan was made for the live card (``--gpu auto``): then this machine is the one that trains.
Every other failed check (a rule TRL or vLLM enforces, memory that is not free) is an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

from ..errors import NoGpuError, PreflightError, VersionError
from ..specs.model import unmodelled_architecture
from ..specs.units import format_gib
from ..specs.versions import installed_version as _installed  # read live (tests fake it here)

SEVERITIES = ("error", "warning", "info")
_INSTALL_HINT = "pip install 'grpo-vram-planner[train]'"


@dataclass(frozen=True)
class Check:
    """One pre-flight check: ``severity`` is ``error`` (the run would fail), ``warning`` or ``info``."""

    id: str
    severity: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity, "message": self.message, "fix": self.fix}

    def __str__(self) -> str:
        return f"{self.severity}: {self.id}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


@dataclass(frozen=True)
class CheckReport:
    """Every check run on one plan, in order: iterable over its checks (``for c in report``),
    ``len(report)`` of them, and printed (``print(report)``) one line per check (severity, id,
    message), its fix under it, then the count of errors and warnings, as ``plan check`` prints it.
    A report is true even with no checks (it was run)."""

    checks: tuple
    for_training: bool = False

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def __bool__(self) -> bool:
        return True

    def lines(self) -> list[str]:
        """The checks as aligned lines (severity, id, message; ``fix:`` under a failed one) and the
        count line."""
        width = max((len(c.id) for c in self.checks), default=0)
        out = []
        for c in self.checks:
            out.append(f"  {c.severity:<7}  {c.id:<{width}}  {c.message}")
            if c.fix and c.severity != "info":
                out.append(f"  {'':<7}  {'':<{width}}  fix: {c.fix}")
        n_err, n_warn = len(self.errors), len(self.warnings)
        out.append(f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    @property
    def errors(self) -> tuple:
        return tuple(c for c in self.checks if c.severity == "error")

    @property
    def warnings(self) -> tuple:
        return tuple(c for c in self.checks if c.severity == "warning")

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"ok": self.ok, "for_training": self.for_training, "errors": len(self.errors),
                "warnings": len(self.warnings), "checks": [c.to_dict() for c in self.checks]}

    def raise_for_errors(self) -> None:
        """Raise one PreflightError naming every failed check, on one line."""
        if self.errors:
            parts = "; ".join(f"{c.id}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in self.errors)
            n = len(self.errors)
            raise PreflightError(f"{n} pre-flight check{'s' if n > 1 else ''} failed: {parts}", checks=self.errors)


def preflight(plan, *, live_gpu=None, for_training: bool | None = None, strict: bool = True) -> CheckReport:
    """Run every check on a :class:`~planner.search.results.Plan` (``planner.preflight`` also takes the
    options of ``planner.plan``).

    ``live_gpu``: ``None`` uses the plan's card when it is a live reading (``--gpu auto``);
    ``True`` reads card 0 through NVML now; a ``GpuSpec`` is used as the live card; ``False``
    skips the live checks. ``for_training``: see the module docstring (``None`` = the plan's card
    is live). ``strict``: an unmodelled architecture is an error (else a warning).
    """
    live, live_error = _live_card(plan, live_gpu)
    if for_training is None:
        for_training = live is not None
    ctx = _Context(plan, live, bool(for_training))
    checks = [*_packages(ctx)]
    if live_error is not None:
        checks.append(Check("gpu-free-memory", "warning", live_error,
                            "install nvidia-ml-py and run on the training machine, or plan for a named card"))
    for rule in (_gpu, _trl_rules, _context, _alloc_conf, _vllm_startup):
        checks += rule(ctx)
    checks += _architecture(plan.model, "error" if strict else "warning")
    return CheckReport(checks=tuple(checks), for_training=ctx.for_training)


# -- context ----------------------------------------------------------------------------------

class _Context:
    """The plan's effective settings (config keys win over the solver's setup) and the environment."""

    def __init__(self, plan, live, for_training: bool):
        cfg = dict(plan.config)
        self.plan, self.cfg, self.live, self.for_training = plan, cfg, live, for_training
        self.env = "error" if for_training else "warning"  # severity of environment checks
        self.setup = plan.setup
        self.use_vllm = bool(cfg.get("use_vllm", False))
        self.colocate = self.use_vllm and cfg.get("vllm_mode", "colocate") == "colocate"
        self.sleep = self.colocate and bool(cfg.get("vllm_enable_sleep_mode", False))
        self.optim = str(cfg.get("optim", plan.setup.optim))
        self.B = int(cfg.get("per_device_train_batch_size", 8))  # transformers' default
        self.G = cfg.get("num_generations", 8)
        self.world = int(plan.setup.world_size)
        self.tp = int(cfg.get("vllm_tensor_parallel_size", 1))
        self.trl_version = _installed("trl")
        self.trl = None  # TrlFacts of the installed TRL, when known
        if self.trl_version:
            from ..specs.versions import TRL_NEWEST_KNOWN, trl_facts

            try:
                self.trl = trl_facts(self.trl_version)
            except VersionError:
                self.trl = trl_facts(TRL_NEWEST_KNOWN) if _newer_than(self.trl_version, TRL_NEWEST_KNOWN) else None

    @property
    def card(self):
        return self.live if self.live is not None else self.plan.gpu


def _release(v: str) -> str:
    """``"1.16.0.dev0"`` -> ``"1.16.0"``, as TrlFacts.release spells it."""
    from ..specs.versions import parse_version

    return ".".join(str(x) for x in parse_version(v, "TRL"))


def _newer_than(a: str, b: str) -> bool:
    from ..specs.versions import parse_version

    return parse_version(a, "TRL") > parse_version(b, "TRL")


def _live_card(plan, live_gpu):
    """(live GpuSpec or None, message when a requested live reading failed)."""
    if live_gpu is False:
        return None, None
    if live_gpu is None:
        return (plan.gpu if plan.gpu.free_bytes is not None else None), None
    if live_gpu is True:
        from ..specs.gpu import detect_gpu

        try:
            return detect_gpu(), None
        except NoGpuError as e:
            return None, f"cannot read free GPU memory: {e}"
    return live_gpu, None


# -- installed packages -----------------------------------------------------------------------

def _packages(ctx: _Context) -> list:
    from ..specs.versions import trl_first_release

    out = []
    env = ctx.env
    # TRL
    v = ctx.trl_version
    colocate_min = trl_first_release("colocate_supported")
    if v is None:
        out.append(Check("trl-installed", env, "TRL is not installed: GRPOTrainer and GRPOConfig are unavailable here",
                         f"pip install 'trl>={colocate_min}' (or {_INSTALL_HINT})"))
    elif ctx.trl is None:
        out.append(Check("trl-colocate-version", env, f"TRL {v} is older than any release the planner knows and "
                         f"has no colocated vLLM", f"pip install -U 'trl>={colocate_min}'"))
    else:
        f = ctx.trl
        if f.release != _release(v):
            out.append(Check("trl-installed", "warning", f"TRL {v} is newer than the planner's table; the facts of "
                             f"TRL {f.release} are assumed", "check the release notes for colocate changes"))
        else:
            out.append(Check("trl-installed", "info", f"TRL {v} installed"))
        if ctx.colocate:
            if f.colocate_supported:
                out.append(Check("trl-colocate-version", "info", f"TRL {v} supports vllm_mode='colocate'"))
            else:
                out.append(Check("trl-colocate-version", env, f"TRL {v} has no colocated vLLM "
                                 f"(vllm_mode='colocate' needs TRL >= {colocate_min})",
                                 f"pip install -U 'trl>={colocate_min}'"))
        if ctx.sleep:
            sleep_min = trl_first_release("sleep_mode_supported")
            fixed = trl_first_release("sleep_weight_sync_broken", False)
            if not f.sleep_mode_supported:
                out.append(Check("trl-sleep-mode-version", env, f"TRL {v} has no vllm_enable_sleep_mode "
                                 f"(needs TRL >= {sleep_min})",
                                 f"pip install -U 'trl>={fixed}', or re-plan with --sleep-mode off"))
            elif f.sleep_weight_sync_broken:
                out.append(Check("trl-sleep-mode-sync", env, f"TRL {v}: colocated sleep mode generates from the "
                                 f"checkpoint on disk, not the trained weights (trl#5312, fixed in {fixed})",
                                 f"pip install -U 'trl>={fixed}', or re-plan with --sleep-mode off"))
            else:
                out.append(Check("trl-sleep-mode-version", "info", f"TRL {v} supports sleep mode and syncs "
                                 f"weights correctly with it (trl#5312 fixed)"))
    # PEFT for LoRA
    if ctx.setup.finetune == "lora" and _installed("peft") is None:
        out.append(Check("peft-installed", env, "PEFT is not installed: LoRA fine-tuning needs it",
                         f"pip install peft (or {_INSTALL_HINT})"))
    # Liger: TRL's loss imports liger_kernel, and transformers' layer patching needs it too
    if ctx.cfg.get("use_liger_kernel") or ctx.cfg.get("use_liger_loss"):
        liger = _installed("liger-kernel")
        out.append(Check("liger-installed", env, "use_liger_kernel needs liger-kernel, which is not installed (TRL "
                         "raises ImportError)", "pip install liger-kernel") if liger is None else
                   Check("liger-installed", "info", f"liger-kernel {liger} installed for use_liger_kernel"))
    # vLLM
    if ctx.use_vllm:
        out += _vllm_package(ctx)
    # bitsandbytes
    bnb = _installed("bitsandbytes")
    if ctx.optim.startswith("paged_") or "8bit" in ctx.optim:
        if bnb is None:
            out.append(Check("bitsandbytes-optimizer", env, f"optim='{ctx.optim}' needs bitsandbytes, which is "
                             f"not installed", "pip install bitsandbytes, or --optim adamw_torch "
                             "(8 B of optimizer state per fp32 trainable parameter instead of ~2)"))
        else:
            out.append(Check("bitsandbytes-optimizer", "info", f"bitsandbytes {bnb} installed for optim='{ctx.optim}'"))
    if ctx.setup.weights in ("nf4", "int8"):
        if bnb is None:
            out.append(Check("bitsandbytes-weights", env, f"{ctx.setup.weights} weights need bitsandbytes, which "
                             f"is not installed", "pip install bitsandbytes, or --weights bf16"))
        else:
            out.append(Check("bitsandbytes-weights", "info", f"bitsandbytes {bnb} installed for "
                             f"{ctx.setup.weights} weights"))
    return out


def _vllm_package(ctx: _Context) -> list:
    from ..specs.versions import parse_version, vllm_facts, vllm_first_release

    out = []
    env = ctx.env
    v = _installed("vllm")
    f = ctx.trl
    rng = (f.vllm_min, f.vllm_max) if f is not None and f.vllm_min and f.vllm_max else None
    pin = f"'vllm>={rng[0]},<={rng[1]}'" if rng else "vllm"
    if v is None:
        out.append(Check("vllm-installed", env, "vLLM is not installed: use_vllm=True needs it (TRL raises "
                         "ImportError when it builds the engine)", f"pip install {pin}"))
    elif rng is None:
        out.append(Check("vllm-version-range", "info", f"vLLM {v} installed; the planner does not know which "
                         f"vLLM releases TRL {ctx.trl_version} supports"))
    elif not (parse_version(rng[0], "vLLM") <= parse_version(v, "vLLM") <= parse_version(rng[1], "vLLM")):
        out.append(Check("vllm-version-range", env, f"vLLM {v} is outside {rng[0]}-{rng[1]}, the range TRL "
                         f"{ctx.trl_version} supports (TRL only warns, but the engine API it calls differs)",
                         f"pip install {pin}"))
    else:
        out.append(Check("vllm-version-range", "info", f"vLLM {v} is inside {rng[0]}-{rng[1]}, the range TRL "
                         f"{ctx.trl_version} supports"))
    weights = ctx.setup.weights
    if weights == "int8":
        # trl 1.16.0 vllm_generation.py:337-344: a Linear8bitLt anywhere in the model raises
        out.append(Check("vllm-8bit-weights", "error", "TRL refuses int8 (bitsandbytes 8-bit) trainer weights "
                         "with vLLM: 'vLLM does not support in-flight 8-bit quantization.'",
                         "use --weights nf4 or bf16"))
    elif weights == "nf4" and f is not None and f.quantization_for_4bit == "bitsandbytes":
        try:
            facts = vllm_facts(v)  # None: the newest vLLM the planner knows
        except VersionError:
            facts = None
        if facts is not None and not facts.bitsandbytes_supported:
            gone = vllm_first_release("bitsandbytes_supported", False)
            which = f"vLLM {v}" if v else f"the newest vLLM ({facts.release})"
            out.append(Check("vllm-bitsandbytes", env if v else "warning",
                             f"{which} has no quantization='bitsandbytes' (removed in {gone}), which TRL passes "
                             f"for a 4-bit trainer model",
                             f"pip install 'vllm<{gone}'" + (f" inside {rng[0]}-{rng[1]}" if rng else "")
                             + ", or --weights bf16"))
    return out


# -- the card ---------------------------------------------------------------------------------

def _gpu(ctx: _Context) -> list:
    out = []
    card, plan = ctx.card, ctx.plan
    if ctx.cfg.get("bf16") and not card.bf16:
        out.append(Check("gpu-bf16", "error", f"{card.name} has no bf16 support but the config sets bf16=True",
                         "set bf16=False (fp16=True for mixed precision), or re-plan for this card"))
    elif ctx.setup.weights == "bf16" and not card.bf16:
        out.append(Check("gpu-bf16", "warning", f"{card.name} has no native bf16: bf16 weights run emulated "
                         f"and slowly", "use --weights fp16"))
    else:
        out.append(Check("gpu-bf16", "info", f"{card.name}: bf16 {'supported' if card.bf16 else 'not used'}"))
    if ctx.live is None:
        out.append(Check("gpu-free-memory", "info", f"planned for {plan.gpu.name} without a live reading; free "
                         f"memory is not checked", "run `plan check --gpu auto` on the training machine"))
        return out
    live = ctx.live
    if abs(live.total_bytes - plan.gpu.total_bytes) > 0.01 * plan.gpu.total_bytes:
        out.append(Check("gpu-match", "warning", f"the plan is for {plan.gpu.name} ({format_gib(plan.gpu.total_bytes)}) "
                         f"but this card is {live.name} ({format_gib(live.total_bytes)})", "re-plan with --gpu auto"))
    free = live.free_bytes if live.free_bytes is not None else live.total_bytes
    peak = plan.peak_bytes
    others = f" ({format_gib(live.other_process_bytes)} held by other processes)" if live.other_process_bytes else ""
    where = f" in the {plan.training_rank.binding_phase} phase"
    if free < peak:
        out.append(Check("gpu-free-memory", "error", f"{format_gib(free)} free on {live.name} now{others}, but the plan "
                         f"peaks at {format_gib(peak)}{where}",
                         "stop the other processes on this GPU, or re-plan with --gpu auto (it plans around "
                         "what is free)"))
    elif free - peak < plan.margin * live.total_bytes:
        out.append(Check("gpu-free-memory", "warning", f"{format_gib(free)} free on {live.name} now{others}; the plan "
                         f"peaks at {format_gib(peak)}{where}, leaving less than the {plan.margin:.0%} margin",
                         "free memory on this GPU, or re-plan with --gpu auto"))
    else:
        out.append(Check("gpu-free-memory", "info", f"{format_gib(free)} free on {live.name}{others}; the plan peaks at "
                         f"{format_gib(peak)}{where}"))
    return out


# -- TRL's validation rules -------------------------------------------------------------------

def _trl_rules(ctx: _Context) -> list:
    """GRPOConfig.__post_init__ (trl 1.16.0 grpo_config.py) and VLLMGeneration's TP rule."""
    out = []
    cfg, B, G, world = ctx.cfg, ctx.B, ctx.G, ctx.world
    if G is None or G < 2:
        out.append(Check("trl-num-generations", "error", f"GRPO requires at least 2 generations per prompt to "
                         f"calculate the advantages. You provided {G}, which is less than the minimum required.",
                         "set num_generations >= 2"))
    gbs, spg = cfg.get("generation_batch_size"), cfg.get("steps_per_generation")
    if gbs is not None and spg is not None:
        out.append(Check("trl-generation-batch", "error", "'generation_batch_size' and 'steps_per_generation' can "
                         "not be both configured at the same time", "set only one of them"))
        return out
    if gbs is not None and gbs % (B * world):
        out.append(Check("trl-generation-batch", "error", f"generation_batch_size ({gbs}) must be divisible by the "
                         f"global batch size ({B * world}).",
                         f"use a multiple of per_device_train_batch_size x world size ({B} x {world})"))
        return out
    if gbs is None:
        S = spg or int(cfg.get("gradient_accumulation_steps", 1))
        gbs = B * world * S
    else:
        S = gbs // (B * world)
    if G is not None and G >= 2:
        if gbs % G:
            step = G // math.gcd(B * world, G)  # smallest steps_per_generation that works
            out.append(Check("trl-generation-batch", "error", f"generation_batch_size ({gbs}) must be divisible by "
                             f"num_generations ({G}).",
                             f"make per_device_train_batch_size x steps_per_generation x world ({B} x {S} x {world}) "
                             f"a multiple of {G}, e.g. steps_per_generation={step * max(1, -(-S // step))}"))
        else:
            out.append(Check("trl-generation-batch", "info", f"generation batch {B} x {S} x {world} = {gbs} "
                             f"completions = {gbs // G} prompts x {G} generations"))
    if str(cfg.get("eval_strategy", "no")) not in ("no", "IntervalStrategy.NO"):
        n = cfg.get("num_generations_eval") or G
        e = int(cfg.get("per_device_eval_batch_size", 8))
        if n and (e * world) % n:
            out.append(Check("trl-eval-batch", "error", f"The global eval batch size ({e} * {world}) must be "
                             f"divisible by the number of generations used for evaluation ({n}).",
                             f"set per_device_eval_batch_size to a multiple of {n}, or num_generations_eval"))
    if ctx.colocate and world % ctx.tp:
        # trl 1.16.0 vllm_generation.py:314-318
        out.append(Check("vllm-tensor-parallel", "error", f"tensor_parallel_size ({ctx.tp}) must divide world size "
                         f"({world}) evenly.", f"set vllm_tensor_parallel_size to a divisor of {world}"))
    return out


# -- lengths ----------------------------------------------------------------------------------

def _context(ctx: _Context) -> list:
    spec = ctx.plan.model
    P = ctx.plan.turn_prompt_length  # per turn: what vLLM serves and max_model_len must hold
    C = int(ctx.cfg.get("max_completion_length") or ctx.plan.turn_completion_length)
    ctx_len = spec.max_position_embeddings
    out = []
    if P + C > ctx_len:
        out.append(Check("context-length", "error", f"prompt + completion ({P} + {C} = {P + C} tokens) exceeds "
                         f"{spec.model_id}'s context of {ctx_len} tokens", "lower --max-completion-length or "
                         "--prompt-length"))
        return out
    if ctx.colocate:
        mml = ctx.cfg.get("vllm_max_model_length")
        if mml is None:
            out.append(Check("context-length", "warning", f"vllm_max_model_length is unset: vLLM takes the model's "
                             f"full context ({ctx_len} tokens) as max_model_len", f"set vllm_max_model_length={P + C}"))
            return out
        if mml < P + C:
            out.append(Check("context-length", "error", f"vllm_max_model_length {mml} is shorter than prompt + "
                             f"completion ({P} + {C} = {P + C}): vLLM rejects longer prompts and cuts completions",
                             f"set vllm_max_model_length={P + C}"))
            return out
        if mml > ctx_len:
            out.append(Check("context-length", "error", f"vllm_max_model_length {mml} exceeds {spec.model_id}'s "
                             f"context of {ctx_len} tokens; vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1",
                             f"set vllm_max_model_length <= {ctx_len}"))
            return out
    out.append(Check("context-length", "info", f"prompt + completion = {P + C} tokens fit the context of "
                     f"{ctx_len}; TRL does not truncate prompts", f"drop prompts longer than {P} tokens"))
    return out


# -- allocator settings -----------------------------------------------------------------------

def _alloc_conf(ctx: _Context) -> list:
    from ..memory.allocator import expandable_segments_from_env

    if not ctx.sleep:
        return []
    if ctx.setup.expandable_segments or expandable_segments_from_env():
        # vLLM's CuMemAllocator (sleep mode) asserts expandable segments are off
        # (vllm/device_allocator/cumem.py; pytorch/pytorch#147851)
        return [Check("alloc-conf-sleep-mode", "error", "PYTORCH_CUDA_ALLOC_CONF has expandable_segments:True "
                      "and vLLM sleep mode is on: vLLM's CuMem allocator refuses to start ('Expandable segments "
                      "are not compatible with memory pool.')",
                      "unset expandable_segments (and re-plan with --no-expandable-segments), or --sleep-mode off")]
    return [Check("alloc-conf-sleep-mode", "info", "expandable segments off, as vLLM sleep mode requires")]


# -- vLLM start-up ----------------------------------------------------------------------------

def _vllm_startup(ctx: _Context) -> list:
    """vLLM refuses to start when free memory < ceil(total x utilization) (docs/vllm-memory.md §2)."""
    if not ctx.colocate:
        return []
    cap = ctx.plan.training_rank.vllm
    util = float(ctx.cfg.get("vllm_gpu_memory_utilization", 0.3))
    out = []
    if cap is not None and not cap.startup_ok:
        errors = "; ".join(cap.errors) or "vLLM does not start"
        out.append(Check("vllm-startup-memory", "error", f"vLLM at utilisation {util}: {errors}",
                         "lower vllm_gpu_memory_utilization or re-plan"))
        return out
    if ctx.live is not None:
        from ..memory.vllm import budget_bytes, startup_error

        live = ctx.live
        requested = budget_bytes(live.total_bytes, util)
        load = ctx.plan.vllm_start_bytes  # the trainer's weights are resident when vLLM starts
        base = cap.baseline_bytes if cap is not None else 0  # vLLM's own, before its snapshot
        free = (live.free_bytes if live.free_bytes is not None else live.total_bytes) - load - base
        err = startup_error(max(0, free), live.total_bytes, util, requested)
        if err:
            best = math.floor(max(0, free) / live.total_bytes * 100) / 100
            out.append(Check("vllm-startup-memory", "error", f"vLLM will not start beside the trainer "
                             f"({format_gib(load)} loaded) with the memory free now: {err}",
                             f"lower vllm_gpu_memory_utilization to {best:.2f} or less (re-plan with --gpu auto), "
                             f"or free memory held by other processes"))
            return out
    out.append(Check("vllm-startup-memory", "info", f"vLLM's start-up check passes at utilisation {util}"))
    return out


# -- the architecture ---------------------------------------------------------------------------

def _architecture(spec, severity: str) -> list:
    why = unmodelled_architecture(spec)
    if why is None:
        return [Check("model-architecture", "info", f"model_type '{spec.model_type}' is modelled")]
    return [Check("model-architecture", severity, why,
                  f"run `plan profile --model {spec.model_id} --trace` to trace its activation memory")]


def architecture_warnings(spec) -> list[str]:
    """The plan's warning line for an architecture the planner does not model (none otherwise)."""
    return [str(c.message) + f"; {c.fix}" for c in _architecture(spec, "warning") if c.severity == "warning"]


def with_checks(plan, **kwargs):
    """``plan`` with its ``checks`` field filled by :func:`preflight` (keyword arguments pass through;
    ``strict`` defaults to False here: a plan carries an unmodelled architecture as a warning)."""
    kwargs.setdefault("strict", False)
    return replace(plan, checks=preflight(plan, **kwargs).checks)
