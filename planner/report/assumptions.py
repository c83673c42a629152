"""Every assumption a plan rests on, with its value and where it came from.

    assumptions(req, completed, plan, installed={"trl": "1.16.0", "vllm": None, ...})
    # {"prompt_length": {"value": 256, "source": "default"}, "vllm_version": {"value": "0.33.0",
    #  "source": "default", "installed": None, "note": "..."}, ...}

Sources: ``pinned`` (a TRL setting the user fixed), ``config file`` (read from ``--config``),
``option`` (a planner option set to a value other than its default), ``installed package`` (read
from this machine's packages or environment), ``memory model`` (the margin: the measured band of
the memory model the plan uses, planner.search.margins), ``default`` (the planner's default). Pure: the
caller (planner.api) reads the installed versions and which memory model the margin followed.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..search.margins import label_kind
from ..search.request import PlanRequest, Targets, TrainerOptions

# the memory model's expected error, from the README's measurements (section "Accuracy (measured)")
EXPECTED_ERROR = {
    "analytic": "held-out H100 steps: median |error| 2.2%, worst under-prediction -0.94%, max 6.2% on peaks above "
                "8 GiB (19% over-prediction on sub-1B models); calibration rows, each model family predicted by constants "
                "fitted without it: worst under-prediction -3.75% (benchmarks/results/heldout_fits.txt); whole runs "
                "-1.6% to +9.2% (README, Accuracy)",
    "calibrated": "held-out H100 steps of a calibrated family: worst under-prediction -2.99%, worst over-prediction "
                  "+8.2% (a first step); whole runs of calibrated models -0.02% to +9.2% "
                  "(benchmarks/results/margin_bands.txt)",
    "unsloth": "not measured as a peak: vLLM's side of 7 shared Unsloth runs, utilisation within 0.0071, the KV "
               "cache of 4 within 3.5% (benchmarks/unsloth_reports.py); the trainer's side is read from Unsloth's code",
}
_TARGET_DEFAULTS = {f.name: f.default for f in fields(Targets)}
_TRAINER_DEFAULTS = {f.name: f.default for f in fields(TrainerOptions)}


def _entry(value: Any, source: str, **more: Any) -> dict[str, Any]:
    return {"value": list(value) if isinstance(value, tuple) else value, "source": source, **more}


def _option_source(value: Any, default: Any) -> str:
    return "default" if value == default else "option"


def reserve_entry(gpu: Any) -> dict[str, Any] | None:
    """The memory kept free on every card (``--reserve``, ``reserve_gib=``), or None without one."""
    reserve = getattr(gpu, "reserve_bytes", 0)
    if not reserve:
        return None
    return _entry(round(reserve / 2**30, 4), "option", bytes=reserve,
                  note="kept free for a display or another process: the budget is the card less the margin "
                       "less this")


def margin_entry(given: float | None, base: float | None, used: float, kind: str) -> dict[str, Any]:
    """The margin a plan used and where it came from: ``given`` by the user (None: the memory
    model's band), ``base`` after the defaults (the band, or what was given), ``used`` with what
    planner.search.margins adds for a setup the measurements do not cover (``unmodelled``)."""
    base = used if base is None else base
    extra = round(used - base, 4)
    why = ("given (--margin)" if given is not None
           else "the Unsloth runtime's band (planner/search/margins.py, RUNTIME_MARGIN: not measured)"
           if kind == "unsloth" else f"the {kind} memory model's measured error band (planner/search/margins.py)")
    if extra:
        why += f", +{extra:.0%} for what the measurements do not cover (see the warnings)"
    return _entry(used, "option" if given is not None else "memory model", memory_model=kind, base=base,
                  unmodelled=extra, note=why)


def assumptions(req: PlanRequest, completed: PlanRequest, plan: Any, installed: dict[str, str | None],
                notes: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``req``: the request as the user gave it; ``completed``: with the environment's defaults
    filled in (planner.api.complete_request); ``installed``: dist -> installed version or None."""
    notes = notes or {}
    sources = dict(req.sources)
    out: dict[str, dict[str, Any]] = {}
    for name, _ in req.pins.items():
        out[name] = _entry(plan.pin_value(name), sources.get(name, "pinned"))
    g = req.targets
    if "max_prompt_length" not in out:
        out["prompt_length"] = _entry(plan.turn_prompt_length, _option_source(g.prompt_length, 256),
                                      note="sets vllm_max_model_length with the completion length")
    out["trained_prompt_length"] = _trained_prompt_entry(plan.setup.prompt_length // max(1, g.rollout_turns),
                                                         g.typical_prompt_length)
    if g.rollout_turns != 1:
        out["rollout_turns"] = _entry(g.rollout_turns, "option",
                                      note=f"a rollout_func concatenating its turns: vLLM serves one turn, the "
                                           f"trainer trains on up to {plan.setup.prompt_length} + "
                                           f"{plan.setup.completion_length} tokens per sequence")
    if "max_completion_length" not in out:
        src = "option" if g.max_completion_length is not None else "installed package" \
            if installed.get("trl") else "default"
        out["max_completion_length"] = _entry(completed.targets.max_completion_length, src,
                                              note="a target: cut when it does not fit (pin it to hold it)")
    vllm_targets = ("utilization_range", "sleep_mode") if req.topology.use_vllm is not False else ()
    for name in ("max_batch", "max_completions_per_step", *vllm_targets):
        value = getattr(g, name)
        out[name] = _entry(value, _option_source(value, _TARGET_DEFAULTS[name]))
    kind = notes.get("memory_model_kind") or label_kind(plan.memory_model)
    out["margin"] = margin_entry(g.margin, completed.targets.margin, plan.margin, kind)
    if "optim" not in out:
        src = "option" if req.trainer.optim is not None else notes.get("optim_source", "default")
        out["optim"] = _entry(plan.config["optim"], src, **({"note": notes["optim"]} if "optim" in notes else {}))
    t = req.trainer
    for name in ("weights", "finetune", "gradient_checkpointing"):
        out[name] = _entry(getattr(t, name), _option_source(getattr(t, name), _TRAINER_DEFAULTS[name]))
    out["logprob_head"] = _entry(completed.trainer.logprob_head, "option" if t.logprob_head else "installed package"
                                 if installed.get("trl") else "default", **_liger_note(t, completed.trainer.logprob_head))
    out["expandable_segments"] = _entry(completed.trainer.expandable_segments, "option"
                                        if t.expandable_segments is not None else "installed package",
                                        note="PYTORCH_CUDA_ALLOC_CONF")
    v = req.vllm
    vllm = plan.vllm
    for dist, asked, assumed in (("trl", v.trl_version, notes.get("trl_assumed")),
                                 ("vllm", v.vllm_version, vllm.version if vllm is not None else None),
                                 ("transformers", t.transformers_version, notes.get("transformers_assumed"))):
        out[f"{dist}_version"] = _version_entry(dist, asked, assumed, installed.get(dist))
    out["memory_model"] = _entry(plan.memory_model, "default" if req.calibration == "auto" else "option",
                                 expected_error=EXPECTED_ERROR[kind])
    return out


def _trained_prompt_entry(value: int, typical: int | None) -> dict[str, Any]:
    """Which prompt length the trainer's memory (and transformers' generate) was planned at."""
    if typical is not None:
        return _entry(value, "option", note="--typical-prompt-length: the length a batch pads to (TRL pads each "
                                            "batch to its longest prompt); vLLM's max_model_len keeps the longest")
    return _entry(value, "default", note="the longest prompt (max_prompt_length is only TRL's bound; a batch pads "
                                         "to its own longest prompt): the safe side; --typical-prompt-length plans "
                                         "at the length your batches pad to")


def _liger_note(t: Any, head: str | None) -> dict[str, str]:
    """What ``use_liger_kernel`` did to the head (planner.memory.logprob_head), as a note."""
    if not getattr(t, "use_liger_kernel", False):
        return {}
    if head == "fused":
        return {"note": "use_liger_kernel: this TRL only patches the layers with Liger's kernels (not modelled: "
                        "their savings are not counted) and keeps the fused head"}
    return {"note": f"use_liger_kernel: the '{head}' head (no [B, C, V] logits; derived from the TRL and "
                    f"liger-kernel source, not measured)"}


# the Unsloth runtime's defaults, where they are not the request's (planner.search.unsloth_solver)
UNSLOTH_DEFAULTS = {"weights": "nf4", "max_seq_length": 2048}


def _version_entry(dist: str, asked: str | None, assumed: str | None, have: str | None) -> dict[str, Any]:
    src = "option" if asked else "installed package" if have else "default"
    entry = _entry(asked or assumed, src, installed=have)
    if have and (asked or assumed) and (asked or assumed) != have:
        entry["note"] = f"planned for {dist} {asked or assumed}, but {have} is installed"
    elif not have:
        entry["note"] = f"{dist} is not installed: planned for {asked or assumed}"
    return entry


def unsloth_assumptions(req: PlanRequest, plan: Any, installed: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """The assumptions of an Unsloth plan (``plan.runtime == "unsloth"``), in the TRL plan's form:
    the pins, the lengths, the group size, the weights and rank, standby, the utilisation, the
    margin, the releases (unsloth_zoo, vLLM, TRL: Unsloth's pairing) and the memory model."""
    sources = dict(req.sources)
    e = plan.runtime_details.estimate
    out: dict[str, dict[str, Any]] = {}
    for name, _ in req.pins.items():
        out[name] = _entry(plan.pin_value(name), sources.get(name, "pinned"))
    g, u = req.targets, req.unsloth
    if "max_prompt_length" not in out:
        out["prompt_length"] = _entry(e.max_prompt_length, _option_source(g.prompt_length, 256),
                                      note="with the completion, within max_seq_length (vLLM's max_model_len)")
    out["max_seq_length"] = _entry(e.max_seq_length, "option" if u.max_seq_length is not None else "default")
    if "max_completion_length" not in out:
        out["max_completion_length"] = _entry(e.max_completion_length, "option" if g.max_completion_length
                                              else "default", note="default: the longest that fits, up to "
                                                                   "max_seq_length - prompt")
    if "num_generations" not in out:
        out["num_generations"] = _entry(e.num_generations, "option" if g.num_generations else "default",
                                        note="default: Unsloth's 8, else the largest that fits")
    out["weights"] = _entry(req.trainer.weights, _option_source(req.trainer.weights, UNSLOTH_DEFAULTS["weights"]),
                            note="nf4: from_pretrained(load_in_4bit=True)")
    if "lora_r" not in out:
        out["lora_rank"] = _entry(e.lora_rank, _option_source(req.trainer.lora_rank, _TRAINER_DEFAULTS["lora_rank"]))
    out["standby"] = _entry(e.standby, "option" if u.standby is not None else "default",
                            note="UNSLOTH_VLLM_STANDBY; default: off unless on does better")
    if "vllm_gpu_memory_utilization" not in out:
        out["gpu_memory_utilization"] = _entry(e.requested_gpu_memory_utilization, "default",
                                               note="searched; vLLM receives "
                                                    f"{e.vllm_gpu_memory_utilization:.4f}")
    out["margin"] = margin_entry(g.margin, None, plan.margin, "unsloth")
    out["unsloth_version"] = _version_entry("unsloth_zoo", u.unsloth_version, e.facts.release,
                                            installed.get("unsloth_zoo"))
    out["vllm_version"] = _version_entry("vllm", req.vllm.vllm_version, e.vllm_version, installed.get("vllm"))
    trl = _version_entry("trl", None, plan.runtime_details.trl_version, installed.get("trl"))
    trl["note"] = "; ".join(x for x in (plan.runtime_details.trl_version_reason, trl.get("note")) if x)
    out["trl_version"] = trl
    out["memory_model"] = _entry(plan.memory_model, "default", expected_error=EXPECTED_ERROR["unsloth"])
    return out
