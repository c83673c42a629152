"""Calibration profiles: coefficients measured on a real GPU (``plan profile --gpu auto``) that
replace the analytic activation, log-prob head, allocator and non-PyTorch terms for the model and
card they were measured on.

    cal = find_calibration(resolve_model("Qwen/Qwen2.5-0.5B-Instruct"), resolve_gpu("H100-80GB"))
    if cal is not None:
        components, label, warnings = apply_calibration(estimate.trainer.components, cal, setup)
        # label: "calibrated (H100-80GB, trl 1.16.0, torch 2.11.0)"

Where profiles are looked up, in order (the first match wins):
1. ``$PLANNER_CALIBRATION_DIR`` if set, else ``~/.cache/planner/calibration/`` (what
   ``plan profile --gpu auto`` writes), newest file first;
2. ``profiles/calibration/`` shipped with the planner (``planner.specs.shipped``), by file name.

A profile matches a model by its architecture fingerprint (model_type, hidden size, layers,
attention and KV heads, intermediate size, vocabulary), not by name, so a fine-tune of a measured
base model uses the base model's profile. It matches a GPU by name (the planner's name or the
device name CUDA reported). Library versions that differ from the installed ones (major.minor)
come back as warnings: activation memory follows the transformers/TRL/torch code, not the weights.

A profile read from disk is checked before use (:func:`profile_problems`): a schema-1 profile
with a value of the wrong type (a string or ``NaN`` slope, a fit that is not an object, a missing
key) is an error, one line per problem naming the file and the key (``ConfigError``: exit 2),
never a traceback: a profile silently skipped would silently change the plan. Fix or delete the
file, or re-run ``plan profile --gpu auto``. A file that is not JSON at all (or not UTF-8), or JSON
with another ``schema``, cannot be told from another program's file in the folder and is skipped.

Profile file (JSON, written by ``planner.profiler.measure``)::

    {"schema": 1, "created": "...", "gpu": {"name": "H100-80GB", "device_name": "NVIDIA H100 80GB HBM3",
     "total_bytes": ..., "driver": "..."}, "versions": {"torch": "2.11.0+cu130", "trl": "1.16.0", ...},
     "models": [{"model_id": ..., "fingerprint": {...}, "fits": [ModelFit.to_dict(), ...], "rows": [...]}]}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..specs.model import ModelSpec
from ..specs.shipped import PROFILES_DIR, json_files
from .fit import ModelFit, gc_key

SCHEMA_VERSION = 1
SHIPPED_DIR = PROFILES_DIR.joinpath("calibration")  # a Traversable (importlib.resources)
USER_DIR = Path("~/.cache/planner/calibration")
ENV_DIR = "PLANNER_CALIBRATION_DIR"
VERSIONED_PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes")
# Beyond this multiple of the largest measured token count, the fitted line is an extrapolation
# worth a warning (activation memory stays linear in tokens with flash attention, but the allocator
# reserve and the head's tiling may not).
EXTRAPOLATION_WARN_FACTOR = 2.0


def fingerprint(spec: ModelSpec) -> dict:
    """Architecture facts that decide activation memory; two specs with equal fingerprints trace
    the same graph."""
    return {"model_type": spec.model_type, "hidden_size": spec.hidden_size, "num_layers": spec.num_layers,
            "num_attention_heads": spec.num_attention_heads, "num_kv_heads": spec.num_kv_heads,
            "intermediate_size": spec.intermediate_size, "vocab_size": spec.vocab_size}


@dataclass(frozen=True)
class Calibration:
    """Measured coefficients for one model architecture on one GPU.

    ``fits`` hold one :class:`~planner.memory.fit.ModelFit` per measured family (weights format,
    fine-tuning mode, LoRA rank). ``warnings`` are set by :func:`find_calibration` (library
    versions that differ from the installed ones).
    """

    model_id: str
    gpu_name: str
    versions: dict
    fits: tuple
    path: str = ""
    device_name: str = ""
    created: str = ""
    warnings: tuple = field(default_factory=tuple)

    @property
    def label(self) -> str:
        """``calibrated (H100-80GB, trl 1.16.0, torch 2.11.0)``: where the numbers come from."""
        parts = [self.gpu_name]
        for pkg in ("trl", "torch"):
            v = self.versions.get(pkg)
            if v:
                parts.append(f"{pkg} {str(v).split('+')[0]}")
        return f"calibrated ({', '.join(parts)})"

    def fit_for(self, weights: str, finetune: str, lora_rank: int | None = None) -> ModelFit | None:
        """The family measured with ``weights`` and ``finetune``; for LoRA, the one whose rank is
        closest to ``lora_rank`` among the measured ranks (``None`` when the rank is outside the
        measured range: adapter activations scale with the rank)."""
        same = [f for f in self.fits if f.weights == weights and f.finetune == finetune]
        if finetune != "lora" or not same:
            return same[0] if same else None
        ranks = sorted(f.lora_rank for f in same if f.lora_rank is not None)
        if lora_rank is None or not ranks or not (ranks[0] <= lora_rank <= ranks[-1]):
            return None
        return min(same, key=lambda f: abs((f.lora_rank or 0) - lora_rank))

    def activation_bytes(self, gradient_checkpointing: bool, tokens: int, weights: str = "bf16",
                         finetune: str = "lora", lora_rank: int | None = 16) -> int | None:
        """The step's peak above the resident bytes for ``tokens`` per micro-batch (includes the
        log-prob head and the gradients alive at the peak), or None without a matching fit."""
        f = self.fit_for(weights, finetune, lora_rank)
        line = f.activation.get(gc_key(gradient_checkpointing)) if f else None
        return None if line is None else max(0, int(round(line(tokens))))


# -- the store ------------------------------------------------------------------------------------

def search_dirs() -> list:
    """Folders searched for calibration profiles, in order (the user's, then the shipped one)."""
    env = os.environ.get(ENV_DIR)
    first = Path(env).expanduser() if env else USER_DIR.expanduser()
    return [first, SHIPPED_DIR]


def default_output_dir() -> Path:
    """Where ``plan profile --gpu auto`` writes (the first search folder)."""
    return search_dirs()[0]


def installed_versions() -> dict:
    """Installed versions of the packages calibration depends on, without importing them."""
    from ..specs.versions import installed_version

    return {pkg: v for pkg in VERSIONED_PACKAGES if (v := installed_version(pkg)) is not None}


def _major_minor(version: str) -> tuple:
    parts = str(version).split("+")[0].split(".")
    return tuple(parts[:2])


def version_warnings(measured: dict, installed: dict) -> list[str]:
    """One line per package whose major.minor differs between the profile and this machine."""
    out = []
    for pkg in VERSIONED_PACKAGES:
        a, b = measured.get(pkg), installed.get(pkg)
        if a and b and _major_minor(a) != _major_minor(b):
            out.append(f"calibration measured with {pkg} {a}, installed {pkg} {b}: "
                       f"activation memory may differ; re-run `plan profile --gpu auto`")
    return out


def _gpu_names(gpu) -> set:
    names = {str(getattr(gpu, "name", "") or "").lower(), str(getattr(gpu, "nvml_name", "") or "").lower()}
    names.discard("")
    return names


def _profile_files(folder) -> list:
    if folder is SHIPPED_DIR:
        return json_files(folder)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)


def load_profile(path) -> dict | None:
    """A calibration profile's JSON; None when the file is not one (unreadable, not JSON, no
    ``schema`` 1); a :class:`ConfigError` naming the file and the key when a schema-1 profile is
    malformed (:func:`profile_problems`). ``path``: a file path or a shipped ``Traversable``."""
    try:
        with (path if hasattr(path, "open") else Path(path)).open("rb") as f:
            data = json.loads(f.read().decode("utf-8"))  # NaN parses: profile_problems names its key
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        return None
    problems = profile_problems(data)
    if problems:
        raise ConfigError("\n".join(f"calibration profile {path}: {p}; fix or delete it" for p in problems))
    return data


_FIT_NUMBERS = ("slope", "intercept", "n", "x_min", "x_max")


def _finite(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def profile_problems(data: dict) -> list[str]:
    """What keeps a schema-1 profile from being used, one line per problem, naming the key."""
    out: list[str] = []
    if not isinstance(data.get("gpu", {}), dict):
        out.append("'gpu' must be an object")
    if not isinstance(data.get("versions", {}), dict):
        out.append("'versions' must be an object")
    models = data.get("models")
    if not isinstance(models, list):
        return out + [f"'models' must be a list, got {type(models).__name__}"]
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            out.append(f"'{where}' must be an object")
            continue
        if not isinstance(entry.get("fingerprint", {}), dict):
            out.append(f"'{where}.fingerprint' must be an object")
        fits = entry.get("fits", [])
        if not isinstance(fits, list):
            out.append(f"'{where}.fits' must be a list")
            continue
        for j, fit in enumerate(fits):
            out += _fit_problems(fit, f"{where}.fits[{j}]")
    return out


def _fit_problems(fit, where: str) -> list[str]:
    if not isinstance(fit, dict):
        return [f"'{where}' must be an object"]
    out = [f"'{where}.{k}' must be a string" for k in ("model", "weights", "finetune")
           if not isinstance(fit.get(k), str)]
    rank = fit.get("lora_rank")
    if rank is not None and not (_finite(rank) and rank >= 1):
        out.append(f"'{where}.lora_rank' must be a positive integer or null")
    for k in ("non_torch_bytes", "weights_bytes", "adapter_bytes", "optimizer_state_bytes"):
        if k in fit and not (_finite(fit[k]) and fit[k] >= 0):
            out.append(f"'{where}.{k}' must be a non-negative number")
    for part in ("activation", "reserve"):
        lines = fit.get(part, {})
        if not isinstance(lines, dict):
            out.append(f"'{where}.{part}' must be an object")
            continue
        for key, line in lines.items():
            if not isinstance(line, dict):
                out.append(f"'{where}.{part}.{key}' must be an object")
                continue
            bad = [k for k in _FIT_NUMBERS if not _finite(line.get(k))]
            if bad:
                out.append(f"'{where}.{part}.{key}' needs finite numbers for {', '.join(bad)}")
    return out


def find_calibration(model_spec: ModelSpec, gpu_spec, versions: dict | None = None,
                     folders: list | None = None) -> Calibration | None:
    """The newest calibration profile for this model architecture on this GPU, or None.

    ``versions`` (package -> version) are compared with the profile's; by default the installed
    versions (read from package metadata, nothing imported). Differences are in ``.warnings``.
    ``folders``: where to look (default :func:`search_dirs`; ``[SHIPPED_DIR]`` for the shipped
    profiles alone, as the accuracy evaluations do).
    """
    want = fingerprint(model_spec)
    gpu_names = _gpu_names(gpu_spec)
    for folder in search_dirs() if folders is None else folders:
        for path in _profile_files(folder):
            data = load_profile(path)
            if data is None:
                continue
            gpu = data.get("gpu", {})
            if not gpu_names & {str(gpu.get("name", "")).lower(), str(gpu.get("device_name", "")).lower()}:
                continue
            for entry in data["models"]:
                if entry.get("fingerprint") != want or not entry.get("fits"):
                    continue
                measured = dict(data.get("versions", {}))
                have = installed_versions() if versions is None else dict(versions)
                return Calibration(model_id=entry.get("model_id", model_spec.model_id),
                                   gpu_name=gpu.get("name") or gpu.get("device_name", ""),
                                   device_name=gpu.get("device_name", ""), versions=measured,
                                   fits=tuple(ModelFit.from_dict(f) for f in entry["fits"]),
                                   path=str(path), created=str(data.get("created", "")),
                                   warnings=tuple(version_warnings(measured, have)))
    return None


def calibration_gap(calibration: Calibration, setup) -> str | None:
    """Why ``calibration`` does not cover ``setup`` (the warning line: its analytic terms are kept),
    or None when it does: a measured family (weights, fine-tuning mode, LoRA rank within the
    measured ranks), a fit with the setup's gradient checkpointing, TRL's fused log-prob head.
    ``setup`` needs ``weights``, ``finetune``, ``lora_rank``, ``gradient_checkpointing`` and
    optionally ``logprob_head`` (a ``TrainerSetup`` has them). Whether a plan's memory model is
    calibrated, and so its default margin (planner.search.margins), is decided here before any solving."""
    weights = getattr(setup, "weights", "bf16")
    finetune = getattr(setup, "finetune", "lora")
    rank = getattr(setup, "lora_rank", None) if finetune == "lora" else None
    gc = bool(getattr(setup, "gradient_checkpointing", True))
    fit = calibration.fit_for(weights, finetune, rank)
    if fit is None:
        measured = ", ".join(f"{f.weights}/{f.finetune}" + (f" r{f.lora_rank}" if f.lora_rank else "")
                             for f in calibration.fits)
        return (f"calibration for {calibration.model_id} on {calibration.gpu_name} covers {measured}, "
                f"not {weights}/{finetune}" + (f" r{rank}" if rank else "") + "; analytic terms kept")
    if fit.activation.get(gc_key(gc)) is None:
        return (f"calibration has no measurement {'with' if gc else 'without'} gradient checkpointing; "
                f"analytic terms kept")
    if getattr(setup, "logprob_head", "fused") != "fused":
        return "calibration was measured with TRL's fused log-prob head, not the plain head; analytic terms kept"
    return None


def apply_calibration(estimate_components: dict, calibration: Calibration | None, setup,
                      run_reserve_bytes: int = 0, accumulated_gradient_bytes: int = 0) -> tuple:
    """Replace the analytic activation, log-prob head, allocator reserve and non-PyTorch terms
    with the calibrated ones when the setup belongs to a measured family.

    ``setup`` needs ``weights``, ``finetune``, ``lora_rank``, ``gradient_checkpointing``,
    ``batch_size``, ``prompt_length``, ``completion_length`` and optionally ``logprob_head`` and
    ``expandable_segments`` (a ``TrainerSetup`` has them). Returns ``(components, label, warnings)``:
    new component bytes (a copy), the calibration's label or None when nothing was replaced, and
    warning lines (version differences, why the profile did not apply, extrapolation).

    The calibrated activation figure is the measured step peak above the resident bytes: it holds
    the log-prob head and the gradients alive at the peak, so ``logprob_head`` becomes 0 and
    ``activations`` is that figure less the (kept) analytic ``gradients`` term.
    """
    components = dict(estimate_components)
    if calibration is None:
        return components, None, []
    warnings = list(calibration.warnings)
    gap = calibration_gap(calibration, setup)
    if gap is not None:
        return components, None, warnings + [gap]
    finetune = getattr(setup, "finetune", "lora")
    gc = bool(getattr(setup, "gradient_checkpointing", True))
    fit = calibration.fit_for(getattr(setup, "weights", "bf16"), finetune,
                              getattr(setup, "lora_rank", None) if finetune == "lora" else None)
    assert fit is not None  # calibration_gap said the profile covers the setup
    line = fit.activation[gc_key(gc)]
    tokens = int(setup.batch_size) * (int(setup.prompt_length) + int(setup.completion_length))
    if tokens > EXTRAPOLATION_WARN_FACTOR * line.x_max:
        warnings.append(f"{tokens} tokens per micro-batch is beyond {EXTRAPOLATION_WARN_FACTOR:g}x the largest "
                        f"calibrated shape ({line.x_max} tokens): the calibrated line is extrapolated")
    activation = max(0, int(round(line(tokens))))
    # the measured figure already holds one step's gradients at its peak; accumulation adds the rest
    step_gradients = int(components.get("gradients", 0)) - accumulated_gradient_bytes
    components["activations"] = max(0, activation - step_gradients)
    components["logprob_head"] = 0
    if getattr(setup, "expandable_segments", False):
        warnings.append("calibration was measured without expandable_segments: analytic allocator reserve kept")
    else:
        reserve = fit.reserve.get(gc_key(gc))
        if reserve is not None:
            # the profile measured isolated steps; a run with varied lengths holds at least the
            # analytic run-level reserve (memory/allocator.py)
            components["allocator_reserve"] = max(0, int(round(reserve(activation))), run_reserve_bytes)
    if fit.non_torch_bytes and "non_torch" in components:
        components["non_torch"] = fit.non_torch_bytes
    return components, calibration.label, warnings
