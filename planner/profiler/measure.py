"""Measure the trainer's memory on this machine's GPU, the way data/calibration/README.md did,
and write a calibration profile (``planner.memory.calibration``) with the rows and fitted coefficients.

    plan profile --model Qwen/Qwen2.5-0.5B-Instruct --gpu auto
    plan profile --model Qwen/Qwen3-4B --gpu auto --weights nf4 --output results/qwen3-4b.json

The step, field for field as in the calibration README:
- the model is built from its config (``AutoModelForCausalLM.from_config``, bf16,
  ``attn_implementation="sdpa"``) directly on the GPU with random weights;
- ``weights="nf4"``: every ``nn.Linear`` except ``lm_head`` is swapped for bitsandbytes
  ``Linear4bit`` (NF4, double quantisation, bf16 compute), as ``load_in_4bit`` loading would;
- TRL's fused head (``add_fused_lm_head(model, outputs=("log_probs", "entropy"))``) before PEFT;
  LoRA on q,k,v,o,gate,up,down, alpha = 2 x rank, no dropout, ``enable_input_require_grads()``;
  full fine-tuning trains every parameter;
- bitsandbytes ``AdamW8bit`` over the trainable parameters;
- gradient checkpointing ``gradient_checkpointing_enable({"use_reentrant": False})`` when on;
- one GRPO-shaped step per shape: ``batch`` random sequences of ``prompt + completion`` tokens,
  labels masked to the completion, ``model(..., labels=labels, fused_lm_head=True).log_probs``,
  loss = -(exp(logp - logp.detach()) * advantage).mean(), backward, ``optimizer.step()``,
  ``zero_grad(set_to_none=True)``; the first step also creates the optimizer state. Between
  shapes the allocator's cache is emptied and its peak statistics reset.
An out-of-memory step is a measurement too: it is recorded (``ok: false, error: "OOM"``), memory is
freed and the next shape runs.

Fields (MiB): ``weights_mib``, ``adapter_mib``, ``device_used_mib_after_load``,
``reserved_mib_after_load`` (load row); ``before_mib``, ``peak_alloc_fwdbwd_mib``,
``peak_reserved_fwdbwd_mib``, ``peak_alloc_step_mib``, ``peak_reserved_step_mib``, ``grads_mib``,
``opt_state_mib``, ``device_used_mib_end`` (step rows); device-wide figures come from
``torch.cuda.mem_get_info``, so non-PyTorch memory = used - reserved.
"""

from __future__ import annotations

import gc
import json
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigError, InvalidSetupError, MissingDependencyError, NoGpuError
from ..specs.model import ModelSpec
from ..specs.units import MIB
from .trace import LORA_TARGETS, Shape, _hf_config, _quiet_transformers, _set_checkpointing

# What each optional package is needed for, for the one-line install hint.
REQUIREMENTS = {
    "transformers": "to build the model from its config",
    "peft": "for the LoRA adapters",
    "trl": "for TRL's fused log-prob head (add_fused_lm_head, TRL >= 1.16)",
    "bitsandbytes": "for the 8-bit AdamW optimizer and NF4 weights",
    "accelerate": "which transformers needs to build models on a device",
}


@dataclass
class MeasureResult:
    """The rows measured (env, load, step; calibration-jsonl format) and where they were written."""

    model_id: str
    rows: list = field(default_factory=list)
    fits: list = field(default_factory=list)
    output: str = ""
    gpu_name: str = ""
    versions: dict = field(default_factory=dict)


def _no_gpu_message(model_id: str) -> str:
    return (f"no CUDA GPU visible to torch on this machine; trace the step on the CPU instead: "
            f"plan profile --model {model_id} --trace")


def require_gpu(model_id: str):
    """torch with a visible CUDA device, or :class:`NoGpuError` pointing to ``--trace``."""
    try:
        import torch
    except ImportError:
        raise NoGpuError(_no_gpu_message(model_id)) from None
    if not torch.cuda.is_available():
        raise NoGpuError(_no_gpu_message(model_id))
    return torch


def require_packages(weights: str, finetune: str) -> dict:
    """Import the packages a measured step needs; one line naming each missing one and its use."""
    import importlib

    needed = ["transformers", "accelerate", "trl", "bitsandbytes"]
    if finetune == "lora":
        needed.insert(1, "peft")
    modules, missing = {}, []
    for name in needed:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        why = "; ".join(f"{m} {REQUIREMENTS[m]}" for m in missing)
        raise MissingDependencyError(f"plan profile --gpu needs {', '.join(missing)} ({why}): "
                                     f"pip install {' '.join(missing)}")
    return modules


def package_versions(modules: dict) -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda": torch.version.cuda or ""}
    for name in ("transformers", "peft", "trl", "bitsandbytes", "accelerate"):
        m = modules.get(name)
        if m is not None:
            out[name] = getattr(m, "__version__", "")
    return out


class _CudaMemory:
    """The allocator's and the device's view of memory, in MiB (what the README's fields hold)."""

    def __init__(self, torch, device: int = 0):
        self.torch = torch
        self.device = device

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def allocated(self) -> float:
        return self.torch.cuda.memory_allocated(self.device) / MIB

    def reserved(self) -> float:
        return self.torch.cuda.memory_reserved(self.device) / MIB

    def peak_allocated(self) -> float:
        return self.torch.cuda.max_memory_allocated(self.device) / MIB

    def peak_reserved(self) -> float:
        return self.torch.cuda.max_memory_reserved(self.device) / MIB

    def reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def empty_cache(self) -> None:
        gc.collect()
        self.torch.cuda.empty_cache()

    def device_used_total(self) -> tuple[float, float]:
        free, total = self.torch.cuda.mem_get_info(self.device)
        return (total - free) / MIB, total / MIB

    def device_name(self) -> str:
        return self.torch.cuda.get_device_name(self.device)


def _quantize_nf4(model, bnb, torch) -> int:
    """Swap every ``nn.Linear`` except ``lm_head`` for bitsandbytes ``Linear4bit`` (NF4, double
    quantisation, bf16 compute), quantising the random bf16 weights on the GPU."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or name == "lm_head":
                continue
            device = child.weight.device
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                  device="meta")
            # As transformers' bitsandbytes loader: Params4bit(bf16 weight).to(device) quantises.
            kwargs = dict(requires_grad=False, compress_statistics=True, quant_type="nf4")
            try:
                weight = bnb.nn.Params4bit(child.weight.data, module=q, **kwargs)
            except TypeError:  # bitsandbytes < 0.43 has no ``module``
                weight = bnb.nn.Params4bit(child.weight.data, **kwargs)
            q._parameters["weight"] = weight.to(device)
            if child.bias is not None:
                q._parameters["bias"] = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, q)
            del child
            swapped += 1
    return swapped


def _build(spec: ModelSpec, weights: str, finetune: str, lora_rank: int, mods: dict, torch, mem,
           device: str = "cuda"):
    """The model, quantised and wrapped, on the GPU; returns (model, optimizer, load row fields)."""
    from trl.trainer.utils import add_fused_lm_head

    transformers = mods["transformers"]
    config = _hf_config(spec)
    mem.empty_cache()
    start = mem.allocated()
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                              attn_implementation="sdpa")
    if weights == "nf4":
        _quantize_nf4(model, mods["bitsandbytes"], torch)
    mem.empty_cache()
    n_params = sum(p.numel() * (2 if getattr(p, "quant_type", None) else 1) for p in model.parameters())
    weights_mib = mem.allocated() - start
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    if finetune == "lora":
        from peft import LoraConfig, get_peft_model

        model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                                                 target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    mem.empty_cache()
    adapter_mib = mem.allocated() - start - weights_mib
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = mods["bitsandbytes"].optim.AdamW8bit(trainable, lr=1e-5)
    used, total = mem.device_used_total()
    load = {"n_params": int(n_params), "n_trainable": int(sum(p.numel() for p in trainable)),
            "weights_mib": weights_mib, "adapter_mib": adapter_mib, "device_total_mib": total,
            "device_used_mib_after_load": used, "reserved_mib_after_load": mem.reserved()}
    return model, optimizer, load


def _state_bytes(optimizer) -> int:
    """Bytes of the optimizer's state tensors (each storage once)."""
    import torch

    seen, total = set(), 0
    for state in optimizer.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                st = v.untyped_storage()
                if st.data_ptr() not in seen:
                    seen.add(st.data_ptr())
                    total += st.nbytes()
    return total


def grpo_forward_backward(model, torch, batch: int, prompt: int, completion: int, vocab: int, device) -> None:
    """Forward and backward of one GRPO-shaped micro-batch (data/calibration/README.md): random
    tokens, labels masked to the completion, TRL's fused head, the policy-gradient loss. Every
    tensor it made is freed on return; the gradients stay."""
    input_ids = torch.randint(0, vocab, (batch, prompt + completion), device=device)
    labels = input_ids.clone()
    labels[:, :prompt] = -100
    logp = model(input_ids=input_ids, labels=labels, fused_lm_head=True).log_probs
    advantages = torch.randn(batch, 1, device=device)
    loss = -(torch.exp(logp - logp.detach()) * advantages).mean()
    del logp
    loss.backward()


def _step(model, optimizer, shape: Shape, vocab: int, torch, mem, device) -> dict:
    """One GRPO-shaped training step; the README's step fields."""
    mem.empty_cache()
    mem.reset_peak()
    before = mem.allocated()
    t0 = time.perf_counter()
    grpo_forward_backward(model, torch, shape.batch_size, shape.prompt_length, shape.completion_length, vocab,
                          device)
    mem.sync()
    fwdbwd_alloc, fwdbwd_reserved = mem.peak_allocated(), mem.peak_reserved()
    grads = mem.allocated() - before
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mem.sync()
    used, _ = mem.device_used_total()
    return {"ok": True, "secs": round(time.perf_counter() - t0, 3), "before_mib": before,
            "peak_alloc_fwdbwd_mib": fwdbwd_alloc, "peak_reserved_fwdbwd_mib": fwdbwd_reserved,
            "peak_alloc_step_mib": mem.peak_allocated(), "peak_reserved_step_mib": mem.peak_reserved(),
            "grads_mib": grads, "opt_state_mib": _state_bytes(optimizer) / MIB, "device_used_mib_end": used}


def _progress(total: int):
    """A tqdm bar on stderr when tqdm is installed, else one printed line per step."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, unit="step", file=sys.stderr, leave=True)

        def update(label: str, done: bool = False) -> None:
            if done:
                bar.update(1)
            else:
                bar.set_description(label)

        return update, bar.close
    state = {"i": 0}

    def update(label: str, done: bool = False) -> None:  # type: ignore[no-redef]
        if not done:
            state["i"] += 1
            print(f"[{state['i']}/{total}] {label}", file=sys.stderr, flush=True)

    return update, lambda: None


def measure(spec: ModelSpec, shapes, *, weights: str = "bf16", finetune: str = "lora", lora_rank: int = 16,
            gradient_checkpointing=(True, False), output: str | None = None, gpu_name: str | None = None,
            memory=None, device: str = "cuda", progress: bool = True) -> MeasureResult:
    """Measure one training step per shape and checkpointing setting; write the profile JSON.

    ``memory``/``device`` exist for tests (a stand-in memory reader on the CPU); by default the
    GPU is required (:class:`NoGpuError` otherwise).
    """
    with warnings.catch_warnings(), _quiet_transformers():
        # transformers/PEFT deprecation chatter (gradient_checkpointing_enable is what TRL calls)
        warnings.simplefilter("ignore", FutureWarning)
        return _measure(spec, shapes, weights=weights, finetune=finetune, lora_rank=lora_rank,
                        gradient_checkpointing=gradient_checkpointing, output=output, gpu_name=gpu_name,
                        memory=memory, device=device, progress=progress)


def _measure(spec: ModelSpec, shapes, *, weights, finetune, lora_rank, gradient_checkpointing, output, gpu_name,
             memory, device, progress) -> MeasureResult:
    if weights not in ("bf16", "nf4"):
        raise InvalidSetupError(f"--weights for a measured profile must be bf16 or nf4, got '{weights}'")
    if finetune == "full" and weights == "nf4":
        raise InvalidSetupError("full fine-tuning of nf4 weights is not possible; use --finetune lora")
    if spec.is_moe:
        raise ConfigError(f"{spec.model_id}: measured profiles of mixture-of-experts models are not supported")
    if memory is None:
        torch = require_gpu(spec.model_id)
        memory = _CudaMemory(torch)
    else:
        import torch
    mods = require_packages(weights, finetune)
    settings = (gradient_checkpointing,) if isinstance(gradient_checkpointing, bool) else tuple(gradient_checkpointing)
    shapes = tuple(shapes)
    versions = package_versions(mods)
    used_at_init, total = memory.device_used_total()
    device_name = memory.device_name()
    env = {"stage": "env", "torch": versions["torch"], "cuda": versions.get("cuda", ""),
           "bnb": versions.get("bitsandbytes", ""), "transformers": versions.get("transformers", ""),
           "peft": versions.get("peft", ""), "trl": versions.get("trl", ""), "gpu": device_name,
           "total_mib": total, "used_mib_at_init": used_at_init, "t": time.time()}
    from ..memory.allocator import expandable_segments_from_env

    family = {"model": spec.model_id, "weights": weights, "mode": finetune,
              "rank": lora_rank if finetune == "lora" else None, "optimizer": "adamw_8bit",
              "expandable_segments": expandable_segments_from_env()}
    if progress:
        print(f"building {spec.model_id} ({weights}, {finetune}) on {device_name} ...", file=sys.stderr, flush=True)
    model, optimizer, load = _build(spec, weights, finetune, lora_rank, mods, torch, memory, device)
    load_row = {**family, **load, "stage": "load", "t": time.time()}
    rows = [env, load_row]
    vocab = int(getattr(_hf_config(spec), "vocab_size", spec.vocab_size))
    update, close = _progress(len(settings) * len(shapes)) if progress else (lambda *a, **k: None, lambda: None)
    oom_error = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    try:
        for gc_on in settings:
            _set_checkpointing(model, gc_on)
            for shape in shapes:
                update(f"{spec.model_id.split('/')[-1]} {shape} gc={'on' if gc_on else 'off'}")
                row = {**family, **load, "stage": "step", "grad_ckpt": gc_on, "batch": shape.batch_size,
                       "prompt_len": shape.prompt_length, "completion_len": shape.completion_length}
                oom = None
                try:
                    row.update(_step(model, optimizer, shape, vocab, torch, memory, device))
                except oom_error as e:  # a shape that does not fit is data, not an error
                    oom = str(e)
                if oom is not None:
                    optimizer.zero_grad(set_to_none=True)
                    memory.empty_cache()
                    row.update(ok=False, error="OOM", detail=oom[:300])
                row["t"] = time.time()
                rows.append(row)
                update("", done=True)
    finally:
        close()
    from ..memory.fit import fit_rows

    fits = fit_rows(rows)
    result = MeasureResult(model_id=spec.model_id, rows=rows, fits=fits, gpu_name=gpu_name or device_name,
                           versions=versions)
    result.output = str(write_profile(spec, result, device_name=device_name, total_mib=total, output=output))
    del model, optimizer
    memory.empty_cache()
    return result


def _planner_gpu_name(device_name: str) -> str:
    """The shipped profile name for a CUDA device name (``NVIDIA H100 80GB HBM3`` -> ``H100-80GB``)."""
    from ..specs.gpu import _lookup

    entry = _lookup(device_name)
    return entry["name"] if entry else device_name


def _driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # noqa: BLE001 - NVML missing: the driver is informative only
        return ""


def profile_path(folder: Path, gpu_name: str, model_id: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{gpu_name}__{model_id.replace('/', '__')}")
    return folder / f"{slug}.json"


def write_profile(spec: ModelSpec, result: MeasureResult, *, device_name: str, total_mib: float,
                  output: str | None = None) -> Path:
    """Write (or update) the calibration profile: one file per GPU and model; families measured now
    replace the same families measured before, others are kept."""
    from ..memory.calibration import SCHEMA_VERSION, default_output_dir, fingerprint, load_profile

    name = _planner_gpu_name(device_name)
    path = Path(output).expanduser() if output else profile_path(default_output_dir(), name, spec.model_id)
    data = load_profile(path) if path.exists() else None
    entry: dict = {"model_id": spec.model_id, "fingerprint": fingerprint(spec),
             "fits": [f.to_dict() for f in result.fits], "rows": result.rows}
    if data is not None:
        kept = []
        for old in data.get("models", []):
            if old.get("fingerprint") != entry["fingerprint"]:
                kept.append(old)
                continue
            new_keys = {(f["weights"], f["finetune"], f.get("lora_rank")) for f in entry["fits"]}
            entry["fits"] += [f for f in old.get("fits", [])
                              if (f["weights"], f["finetune"], f.get("lora_rank")) not in new_keys]
            entry["rows"] = old.get("rows", []) + entry["rows"]
        models = kept + [entry]
    else:
        models = [entry]
    profile = {"schema": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "gpu": {"name": name, "device_name": device_name, "total_bytes": int(total_mib * MIB),
                       "driver": _driver_version()},
               "versions": result.versions, "models": models}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(profile, indent=1))
    tmp.replace(path)
    return path
