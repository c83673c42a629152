"""Hand-off to TRL: turn a :class:`~planner.search.results.Plan` into what ``GRPOTrainer`` takes.

    >>> import planner
    >>> p = planner.plan("Qwen/Qwen2.5-3B-Instruct", "L4", max_completion_length=1024)
    >>> args = p.grpo_config(output_dir="run1")              # a real trl.GRPOConfig
    >>> model = AutoModelForCausalLM.from_pretrained(p.model.model_id, **p.model_init_kwargs())
    >>> trainer = GRPOTrainer(model, reward_funcs, args=args, train_dataset=ds, peft_config=p.peft_config())
    >>> planner.train("Qwen/Qwen2.5-3B-Instruct", reward_funcs, ds, gpu="auto")   # all of the above
    >>> planner.report.emit.write_grpo_yaml(p, "grpo.yaml")   # then: trl grpo --config grpo.yaml ...

Two facts of TRL 1.16 the hand-off takes care of:
- a model given as a string loads in **float32** unless ``model_init_kwargs`` has a ``dtype``
  (trl/trainer/utils.py ``create_model_from_path``), so the planned dtype is always passed;
- 4-bit loading goes through ``GRPOTrainer(quantization_config=...)``.

Where the plan cannot run as planned (no CUDA GPU, or no vllm package: vLLM needs both), the
real config falls back to ``use_vllm=False`` and ``bf16=False`` where the device lacks bf16 (and
``fp16=False`` without a GPU), with a warning. On a card without bf16 (T4, V100) the real GRPOConfig, grpo.yaml,
accelerate.yaml and deepspeed.json train in fp16 mixed precision (:func:`mixed_precision`).
``planner.report.emit.write_grpo_yaml`` writes the plan unchanged: it is meant for the training machine.
torch, transformers, trl and peft are imported inside the functions (``pip install 'grpo-vram-planner[train]'``).
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from dataclasses import replace

from ..checks.preflight import preflight
from ..errors import MissingDependencyError

DEFAULT_OUTPUT_DIR = "grpo-output"
_TRAIN_HINT = "pip install 'grpo-vram-planner[train]'"
# planner weight format -> the dtype from_pretrained gets (4/8-bit: the compute dtype)
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _require(module: str, what: str, hint: str = _TRAIN_HINT):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{what} needs the '{module}' package: {hint}") from None


def _runtime() -> tuple[bool, bool, bool]:
    """(a CUDA GPU is visible, it supports bf16, the vllm package is installed)."""
    torch = _require("torch", "training")
    cuda = bool(torch.cuda.is_available())
    bf16 = cuda and bool(torch.cuda.is_bf16_supported())
    return cuda, bf16, importlib.util.find_spec("vllm") is not None


def mixed_precision(plan) -> dict:
    """The mixed-precision keys the plan's cards need beyond its config: where a card has no bf16
    (T4, V100: compute capability below 8.0; the config's ``bf16`` is then False) and the weights
    are 16-bit or quantized (not fp32), TRL trains in fp16 mixed precision: ``{"bf16": False,
    "fp16": True}`` (transformers' float16 autocast with its gradient scaler; the adapters, and a
    full fine-tune's master weights, stay as loaded). Empty where bf16 is used, for fp32 weights, for
    a config that already says ``fp16`` (a --config file's key) and for the Unsloth runtime (Unsloth
    picks its precision from the card itself)."""
    cfg = plan.config
    if (getattr(plan, "runtime", "trl") != "trl" or "bf16" not in cfg or "fp16" in cfg or cfg["bf16"]
            or plan.setup.weights == "fp32"):
        return {}
    return {"bf16": False, "fp16": True}


def with_precision(plan, config: dict) -> dict:
    """``config`` (a copy) with :func:`mixed_precision`'s keys, ``fp16`` next to ``bf16``."""
    extra = mixed_precision(plan)
    if not extra:
        return dict(config)
    out = {}
    for k, v in config.items():
        out[k] = extra.get(k, v)
        if k == "bf16":
            out["fp16"] = extra["fp16"]
    out.setdefault("fp16", extra["fp16"])
    return out


def _config_kwargs(plan, overrides: dict, runtime: bool) -> dict:
    """GRPOConfig keyword arguments: defaults, the plan (fp16 mixed precision on a card without
    bf16: :func:`mixed_precision`), the device fallbacks, then the overrides."""
    kw = {"output_dir": DEFAULT_OUTPUT_DIR, "report_to": "none", **with_precision(plan, plan.config)}
    # TRL rejects generation_batch_size and steps_per_generation together: the override's wins
    if "generation_batch_size" in overrides and "steps_per_generation" not in overrides:
        kw.pop("steps_per_generation", None)
    if "steps_per_generation" in overrides and "generation_batch_size" not in overrides:
        kw.pop("generation_batch_size", None)
    if runtime:
        cuda, bf16, has_vllm = _runtime()
        if kw.get("use_vllm") and not (cuda and has_vllm):
            missing = "a CUDA GPU" if not cuda else "the vllm package"
            warnings.warn(f"vLLM needs a CUDA GPU and the vllm package; this machine lacks {missing}, so "
                          f"use_vllm=False (completions come from transformers' generate)", UserWarning, stacklevel=3)
            kw["use_vllm"] = False
        if kw.get("bf16") and not bf16:
            kw["bf16"] = False  # transformers refuses bf16=True on a device without it
        if kw.get("fp16") and not cuda:
            kw["fp16"] = False  # and fp16 mixed precision without a GPU
    kw.update(overrides)
    return kw


def grpo_config_from_plan(plan, **overrides):
    """A real ``trl.GRPOConfig`` with the plan's settings; ``overrides`` win.

    Defaults: ``output_dir="grpo-output"``, ``report_to="none"``, ``model_init_kwargs`` with the
    planned dtype (so a model given as a string does not load in float32). Without a CUDA GPU or
    the vllm package ``use_vllm`` becomes False (with a warning); ``bf16`` only where supported.
    """
    trl = _require("trl", "grpo_config_from_plan")
    return _build_config(trl, plan, _config_kwargs(plan, overrides, runtime=True))


def _build_config(trl, plan, kw: dict):
    import dataclasses

    kw = checkpointing_renamed(kw)  # the installed transformers: the one whose GRPOConfig this builds
    known = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    if "use_liger_loss" in kw and "use_liger_loss" not in known:  # a plan for TRL 0.17-0.24, TRL >= 0.28 here
        kw["use_liger_kernel"] = kw.pop("use_liger_loss")
    passed = set(plan.extra.get("passthrough", ()))  # a TRL config file's other keys (script, ModelConfig)
    if passed:
        kw = {k: v for k, v in kw.items() if k not in passed or k in known}
    kw.setdefault("model_init_kwargs", {"dtype": model_init_kwargs_from_plan(plan, quantization=False)["dtype"]})
    return trl.GRPOConfig(**kw)


def checkpointing_renamed(kw: dict, transformers_version: str | None = None) -> dict:
    """``kw`` (a copy, key order kept) with ``gradient_checkpointing`` named as this transformers
    release reads it: ``activation_checkpointing`` from 5.23.0, where the old name is a deprecated
    alias that warns on every config (``planner.specs.versions.transformers_checkpointing_field``;
    ``None``: the installed release). Used for the real GRPOConfig and for grpo.yaml alike."""
    from ..specs.versions import transformers_checkpointing_field

    new = transformers_checkpointing_field(transformers_version)
    if new == "gradient_checkpointing" or "gradient_checkpointing" not in kw or new in kw:
        return dict(kw)
    return {(new if k == "gradient_checkpointing" else k): v for k, v in kw.items()}


def model_init_kwargs_from_plan(plan, quantization: bool = True) -> dict:
    """``from_pretrained`` keyword arguments that load the model as planned.

    ``dtype`` always (TRL's default for a string model is float32). nf4 adds a
    ``BitsAndBytesConfig`` (4-bit NF4, double quantisation as planned, bf16 compute on cards with
    bf16, else fp16); int8 adds ``load_in_8bit``. ``quantization=False`` leaves the config out.
    """
    weights = plan.setup.weights
    compute = "bfloat16" if plan.gpu.bf16 else "float16"
    kw = {"dtype": _DTYPES.get(weights, compute)}
    if quantization and weights in ("nf4", "int8"):
        transformers = _require("transformers", f"loading {weights} weights")
        if weights == "nf4":
            torch = _require("torch", "loading nf4 weights")
            kw["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=bool(getattr(plan.setup, "double_quant", True)),
                bnb_4bit_compute_dtype=getattr(torch, compute))
        else:
            kw["quantization_config"] = transformers.BitsAndBytesConfig(load_in_8bit=True)
    return kw


def peft_config_from_plan(plan):
    """``peft.LoraConfig`` with the planned rank, alpha (default 2 x rank) and targets
    (default ``"all-linear"``: every linear but the LM head); None for full fine-tuning."""
    if plan.setup.finetune != "lora":
        return None
    peft = _require("peft", "LoRA fine-tuning")
    r = plan.setup.lora_rank
    targets = list(plan.setup.lora_target_modules) if plan.setup.lora_target_modules else "all-linear"
    return peft.LoraConfig(r=r, lora_alpha=plan.lora_alpha or 2 * r, target_modules=targets, lora_dropout=0.0,
                           task_type="CAUSAL_LM")


# -- YAML -------------------------------------------------------------------------------------

def _model_config_keys(plan) -> dict:
    """trl.ModelConfig fields (what ``trl grpo`` reads for loading and LoRA)."""
    s = plan.setup
    kw = {"model_name_or_path": plan.model.model_id, "dtype": model_init_kwargs_from_plan(plan, False)["dtype"],
          "use_peft": s.finetune == "lora"}
    if s.finetune == "lora":
        kw.update(lora_r=s.lora_rank, lora_alpha=plan.lora_alpha or 2 * s.lora_rank, lora_dropout=0.0,
                  lora_target_modules=list(s.lora_target_modules) if s.lora_target_modules else "all-linear")
    if s.weights == "nf4":
        kw.update(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=bool(s.double_quant))
    elif s.weights == "int8":
        kw.update(load_in_8bit=True)
    return kw


# memory direction of each knob, written next to it (torchtune-style)
YAML_COMMENTS = {
    "per_device_train_batch_size": "higher: more activation memory per micro-step",
    "steps_per_generation": "higher: more sequences in vLLM at once (max_num_seqs = batch x this)",
    "max_completion_length": "higher: more KV cache and activations",
    "vllm_gpu_memory_utilization": "vLLM's share of the whole card: weights + activations + KV cache",
    "vllm_max_model_length": "prompt + completion; unset, vLLM sizes for the model's full context",
    "vllm_enable_sleep_mode": "true frees vLLM's weights and KV cache while training (costs wake-up time)",
    "gradient_checkpointing": "true reduces memory",
    "activation_checkpointing": "true reduces memory (transformers >= 5.23 name of gradient_checkpointing)",
    "optim": "8-bit states: about 2 B per trainable parameter instead of 8",
    "dtype": "TRL loads float32 when no dtype is given",
    "lora_r": "higher: more adapter, gradient and optimizer memory",
}


# -- train ------------------------------------------------------------------------------------

def spec_of(model):
    """A ModelSpec for a string id/path or an instantiated model (from its config)."""
    if isinstance(model, str):
        return model
    from ..specs.model import spec_from_config

    cfg = model.config.to_dict()
    return spec_from_config(cfg, getattr(model.config, "_name_or_path", "") or cfg.get("model_type", "model"),
                            source="instantiated model")


def train_with_plan(model, reward_funcs, train_dataset, plan, *, checks: bool = True, dry_run: bool = False,
                    processing_class=None, **overrides):
    """Build TRL's GRPOTrainer as ``plan`` says, run the pre-flight checks, train, return the trainer
    (``planner.train`` solves for a plan first when none is given).

    ``model``: a Hub id / path (loaded with the planned dtype and quantisation) or a
    ``PreTrainedModel``. ``overrides``: GRPOConfig fields, applied last. With ``checks`` the
    pre-flight checks run on what will actually run (plan + overrides) and any error raises
    PreflightError before anything is loaded. ``dry_run=True`` returns the trainer untrained.
    """
    trl = _require("trl", "planner.train")
    if not isinstance(model, str):
        overrides.setdefault("model_init_kwargs", None)  # TRL ignores them for a loaded model, with a warning
    kw = _config_kwargs(plan, overrides, runtime=True)
    if checks:  # on what will run: the plan with the device fallbacks and the overrides
        preflight(replace(plan, config=kw), live_gpu=_runtime()[0], for_training=True).raise_for_errors()
    config = _build_config(trl, plan, kw)
    extra = {}
    if isinstance(model, str):
        qc = model_init_kwargs_from_plan(plan).get("quantization_config")
        if qc is not None:
            extra["quantization_config"] = qc
    peft_config = None if getattr(model, "peft_config", None) else peft_config_from_plan(plan)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=train_dataset,
                              processing_class=processing_class, peft_config=peft_config, **extra)
    if not dry_run:
        trainer.train()
    return trainer
