"""Trace one GRPO training step on the CPU, with no GPU and no weights, and measure the peak of
live tensor bytes the way the CUDA caching allocator would count them.

    from planner.profiler.trace import Shape, trace_steps
    result = trace_steps(resolve_model("Qwen/Qwen2.5-0.5B-Instruct"), [Shape(4, 256, 1024)])
    result.steps[0].activation_peak_bytes

How (the same step as data/calibration/README.md, op for op):
- The model is built from its config with transformers (``AutoModelForCausalLM.from_config``,
  bf16, ``attn_implementation="sdpa"``) on the **meta** device: tensors carry shape, dtype and
  strides, kernels compute nothing and no memory is touched, so an 8B model traces in seconds.
  (``FakeTensorMode`` would be the other choice; PEFT cannot swap fake parameters when it moves
  adapters, and a CPU-only torch cannot fake CUDA tensors through Python indexing.)
- TRL's fused head is installed as TRL's GRPO trainer does (``add_fused_lm_head(model,
  outputs=("log_probs", "entropy"))``) before PEFT wraps the model with LoRA on what the plan hands
  to PEFT, ``target_modules="all-linear"`` (q,k,v,o,gate,up,down on a dense decoder; PEFT's own
  resolution elsewhere: memory/lora.py), alpha = 2 x rank, no dropout, ``enable_input_require_grads()``;
  gradient checkpointing is ``gradient_checkpointing_enable({"use_reentrant": False})``.
- One step: ``batch`` sequences of ``prompt + completion`` tokens, labels masked to the
  completion, ``model(..., labels=labels, fused_lm_head=True).log_probs``,
  loss = -(exp(logp - logp.detach()) * advantage).mean(), backward.
- ``_LiveBytes`` (a ``TorchDispatchMode``) sees every aten op, registers each new storage once
  (views share it) rounded up to 512 bytes (the caching allocator's block granularity), and drops
  it when the storage dies. The peak of the live sum over forward and backward, minus what was
  live before (weights, adapters, buffers), is the step's activation peak. It includes the
  gradients alive at that moment, like the calibration's ``peak_alloc_step - before``.

Where CUDA kernels keep different tensors than the CPU/meta kernels, the trace substitutes the
CUDA behaviour (each substitution is listed in ``TraceResult.notes``):
- SDPA: ``F.scaled_dot_product_attention`` is replaced by a function that allocates what the CUDA
  flash kernel saves (q, k, v, output and an fp32 log-sum-exp of batch x heads x seq) or, with an
  explicit mask, the memory-efficient kernel (the same plus the mask converted to an additive
  bias), and the backward's work buffers (fp32 dq accumulator, softmax row sums, expanded dk/dv
  under GQA). The CPU math path would keep seq x seq scores that CUDA never allocates.
- TRL's fused head: on CUDA it scores only the completion positions (``hidden[mask]``) with
  Triton kernels that fold each logits tile in place and accumulate gradients in fp32 through
  ``addmm(out_dtype=float32)``; its CPU fallback makes fp32 copies of every tile. The trace runs
  TRL's own autograd function on its CUDA branch with the in-place kernels as no-ops.
- Data-dependent values (``.item()``, boolean indexing) have no data on meta tensors: a boolean
  scalar reads as True (transformers' "no packed sequences" check), a boolean index of the label
  mask selects ``batch x completion`` rows (what the real mask selects).
- Both CUDA attention kernels write their output as (batch, seq, heads, dim) and return the
  transposed view, so the ``transpose(1, 2).contiguous()`` after attention copies nothing.
- bitsandbytes NF4 cannot run here: the graph is the bf16 one, with every frozen linear
  dequantising its weight to bf16 for the matmul (forward and backward) and freeing it, as
  ``MatMul4Bit`` does; the NF4 weights themselves are the analytic term.
- Autograd sums two gradients of one tensor in place when it holds the only reference, but must
  add out of place under any Python dispatch mode (the tracker is one); the tracker restores
  the in-place sum for the engine's own accumulations.
Not modelled: the caching allocator's block reuse (a cached block up to 1 MiB larger than the
request is handed out whole), cuBLAS workspaces (allocated once per process) and the 8-bit
optimizer's state and step (analytic term).

Checked against all 90 H100 calibration rows (benchmarks/trace_vs_measured.py,
benchmarks/results/trace_vs_measured.txt).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import types
import warnings
import weakref
from dataclasses import dataclass, field

from ..errors import ConfigError, InvalidSetupError, MissingDependencyError, PlannerError
from ..specs.model import ModelSpec
from .allocator_sim import round_size

# the calibration README's q,k,v,o,gate,up,down, plus Phi-3's fused qkv_proj / gate_up_proj (what the
# GPU profile wraps); the trace wraps what the plan hands to PEFT, "all-linear", which on these dense
# text decoders is the same set
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj")
ALL_LINEAR = "all-linear"
DEVICES = ("meta", "cpu")
DEFAULT_SHAPES = "1:256:512,4:256:1024,8:256:1792"  # batch:prompt:completion
WEIGHT_FORMATS = ("bf16", "nf4")
LOGPROB_HEADS = ("fused", "plain")
# config.json keys that describe a checkpoint's own quantisation; the trace builds a bf16 graph.
_DROP_CONFIG_KEYS = ("quantization_config", "auto_map", "_name_or_path", "transformers_version")


@dataclass(frozen=True)
class Shape:
    """One micro-batch: ``batch_size`` sequences of ``prompt_length + completion_length`` tokens."""

    batch_size: int
    prompt_length: int
    completion_length: int

    @property
    def tokens(self) -> int:
        return self.batch_size * (self.prompt_length + self.completion_length)

    def __str__(self) -> str:
        return f"{self.batch_size}:{self.prompt_length}:{self.completion_length}"


def parse_shapes(text: str) -> tuple[Shape, ...]:
    """``"1:256:512,4:256:1024"`` -> shapes; one clear error for anything else."""
    shapes = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+):(\d+):(\d+)", part)
        if not m:
            raise InvalidSetupError(f"--shapes takes batch:prompt:completion triples separated by commas "
                                    f"(e.g. {DEFAULT_SHAPES}), got '{part}'")
        b, p, c = (int(x) for x in m.groups())
        if b <= 0 or c <= 0:
            raise InvalidSetupError(f"--shapes: batch and completion length must be positive, got '{part}'")
        shapes.append(Shape(b, p, c))
    if not shapes:
        raise InvalidSetupError(f"--shapes is empty; pass e.g. {DEFAULT_SHAPES}")
    return tuple(shapes)


@dataclass(frozen=True)
class TracedStep:
    """What one traced step kept alive, in bytes (all 512-byte rounded, allocator view)."""

    shape: Shape
    gradient_checkpointing: bool
    activation_peak_bytes: int  # peak over forward + backward minus resident_bytes
    resident_bytes: int  # live before the step: weights, adapters, buffers (as traced, bf16)
    forward_peak_bytes: int  # peak during the forward alone, minus resident_bytes
    gradients_bytes: int  # held after backward (the trainable parameters' .grad)
    seconds: float = 0.0
    # peak from the moment the decoder's final norm receives its gradient (the log-prob head's backward
    # is done) to the end of backward, minus resident_bytes: the decoder layers' backward alone
    layers_peak_bytes: int = 0
    # the caching allocator replayed on the step's allocations (profiler/allocator_sim.py; residents
    # first, the cache empty before the step): peak reserved minus peak allocated
    replayed_reserve_bytes: int = 0

    def to_dict(self) -> dict:
        return {"batch": self.shape.batch_size, "prompt_length": self.shape.prompt_length,
                "completion_length": self.shape.completion_length,
                "gradient_checkpointing": self.gradient_checkpointing,
                "activation_peak_bytes": self.activation_peak_bytes,
                "forward_peak_bytes": self.forward_peak_bytes,
                "gradients_bytes": self.gradients_bytes,
                "layers_peak_bytes": self.layers_peak_bytes,
                "replayed_reserve_bytes": self.replayed_reserve_bytes,
                "resident_bytes": self.resident_bytes,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class TraceResult:
    model_id: str
    weights: str
    finetune: str
    lora_rank: int | None
    logprob_head: str
    steps: tuple[TracedStep, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    build_seconds: float = 0.0
    device: str = "meta"
    # exact bytes of the built model's tensors (not block-rounded): the base model's parameters
    # ("weights"), the LoRA adapters ("adapters") and the buffers (RoPE frequencies)
    parameter_bytes: dict = field(default_factory=dict)


# -- the live-bytes tracker ------------------------------------------------------------------------

def _round_block(n_bytes: int) -> int:
    """The caching allocator's block for a storage of ``n_bytes`` (none for an empty one)."""
    return round_size(n_bytes) if n_bytes else 0


def _make_tracker(bool_index_rows):
    """A TorchDispatchMode counting live storage bytes (512-byte blocks), built lazily (torch).

    ``bool_index_rows(mask_shape)`` answers the data-dependent ops of a meta trace (module docstring);
    ``None`` for real tensors (``device="cpu"``), where ``.item()`` and boolean indexing run as they are."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    aten = torch.ops.aten
    engine_code = _engine_code()

    class _LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            # ("malloc", storage, bytes) / ("free", storage) in order, for the allocator replay
            self.events: list[tuple] = []
            self.live: dict[int, weakref.finalize] = {}
            self.current_bytes = 0
            self.peak_bytes = 0
            self.faked_scalars = 0
            self.inplace_accumulations = 0
            self.phase_start_peak: int | None = None

        def _free(self, key: int, n_bytes: int) -> None:
            if self.live.pop(key, None) is not None:
                self.current_bytes -= n_bytes
                self.events.append(("free", key))

        def track(self, t) -> None:
            if not isinstance(t, torch.Tensor):
                return
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.live:
                return
            n_bytes = _round_block(storage.nbytes())
            self.events.append(("malloc", key, storage.nbytes()))
            finalizer = weakref.finalize(storage, self._free, key, n_bytes)
            finalizer.atexit = False
            self.live[key] = finalizer
            self.current_bytes += n_bytes
            if self.current_bytes > self.peak_bytes:
                self.peak_bytes = self.current_bytes

        def reset_peak(self) -> None:
            self.peak_bytes = self.current_bytes

        def start_phase(self) -> None:
            """Keep the peak so far aside (``phase_start_peak``) and count a new one from here."""
            if self.phase_start_peak is None:
                self.phase_start_peak = self.peak_bytes
                self.peak_bytes = self.current_bytes

        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            kwargs = kwargs or {}
            if bool_index_rows is not None:  # meta tensors: data-dependent ops have no data
                faked = _meta_data_dependent(self, func, args, bool_index_rows)
                if faked is not None:
                    return faked
            if func is aten.add.Tensor and engine_code is not None and _caller_code() is engine_code:
                summed = _engine_sum_in_place(self, args, kwargs)
                if summed is not None:
                    return summed
            out = func(*args, **kwargs)
            for t in tree_leaves(out):
                self.track(t)
            return out

    return _LiveBytes()


def _meta_data_dependent(tracker, func, args, bool_index_rows):
    """What a data-dependent op returns on meta tensors (module docstring), or None for any other op:
    ``.item()`` reads True for a bool (transformers' "no packed sequences" / "mask is all ones"
    checks) and 0 for a number; a boolean index selects ``bool_index_rows(mask_shape)`` rows."""
    import torch

    aten = torch.ops.aten
    if func is aten._local_scalar_dense.default:
        tracker.faked_scalars += 1
        return True if args[0].dtype == torch.bool else 0
    if func is aten.index.Tensor:
        masks = [i for i in args[1] if i is not None and i.dtype == torch.bool]
        if masks:
            x, mask = args[0], masks[0]
            rows = bool_index_rows(tuple(mask.shape))
            out = torch.empty((rows, *x.shape[mask.dim():]), dtype=x.dtype, device=x.device)
            tracker.track(out)
            return out
    return None


def _engine_sum_in_place(tracker, args, kwargs):
    """The autograd engine's ``add(old, new)`` of two gradients of one tensor, done in place as the
    engine does without a dispatch mode; None where it cannot be (the op then runs as it is)."""
    import torch

    aten = torch.ops.aten
    old, new = args[0], args[1]
    if (isinstance(new, torch.Tensor) and not kwargs and old.shape == new.shape
            and old.dtype == new.dtype):
        # autograd's InputBuffer sums two gradients of one tensor in place when it
        # holds the only reference, except under a Python dispatch mode (this one),
        # where it must assume a tensor subclass and adds out of place. Like the
        # engine (input_buffer.cpp ``accumulate``), it reuses the buffer already
        # there, else the arriving one (a transposed weight gradient is a view: the
        # embedding lookup's gradient takes the sum).
        for into, other in ((old, new), (new, old)):
            if not into._is_view() and into.is_contiguous():
                tracker.inplace_accumulations += 1
                return aten.add_.Tensor(into, other)
    return None


def _engine_code():
    """The code object of the Python frame the autograd engine's own ops are dispatched from."""
    try:
        from torch.autograd.graph import _engine_run_backward
    except ImportError:
        return None
    return _engine_run_backward.__code__


def _caller_code():
    """Code object of the first Python frame below the dispatch mode: past every ``__torch_dispatch__``
    (a subclass of the tracker calling ``super()`` adds one) and torch's wrappers."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_name == "__torch_dispatch__" or (
            frame.f_code.co_name in ("_fn", "inner") and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename)):
        frame = frame.f_back
    return frame.f_code if frame is not None else None


# -- CUDA behaviour substituted for the CPU/meta kernels --------------------------------------------

def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _flash_eligible(q, k, v, mask) -> bool:
    """Whether PyTorch's CUDA SDPA dispatch takes the flash kernel: no explicit mask and one head
    width for q, k and v up to 256 (sdp_utils.cpp ``check_head_dim_size_flash``); otherwise the
    memory-efficient kernel, which takes a bias and a value width of its own (MLA: 192 vs 128)."""
    return mask is None and q.shape[-1] == k.shape[-1] == v.shape[-1] and q.shape[-1] <= 256


def _make_cuda_sdpa(real_values: bool = False):
    """``F.scaled_dot_product_attention`` with the memory behaviour of the CUDA kernels.

    ``real_values`` (a trace on real tensors): the output also holds the attention's values, computed
    by the original function with the tracker (and every dispatch mode) set aside, so that what the
    CPU math kernel keeps (seq x seq scores) is never counted, then copied into the CUDA-shaped output.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import _disable_current_modes

    original = F.scaled_dot_product_attention

    class _CudaSdpa(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, mask, is_causal, scale, enable_gqa):
            batch, heads, seq, _ = q.shape
            flash = _flash_eligible(q, k, v, mask)
            # Both CUDA kernels write the output as (batch, seq, heads, dim) and return the
            # transposed view, so transformers' transpose(1, 2).contiguous() copies nothing.
            out = q.new_empty((batch, seq, heads, v.shape[-1])).transpose(1, 2)
            if real_values:
                with _disable_current_modes(), torch.no_grad():
                    values = original(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                      enable_gqa=enable_gqa)
                    out.copy_(values)
                    del values
            if flash:
                # flash: softmax_lse fp32 (batch, heads, seq)
                lse = q.new_empty((batch, heads, seq), dtype=torch.float32)
                bias = None
            else:
                # memory-efficient (an explicit mask, or unequal head widths): a boolean mask becomes
                # an additive mask in the compute dtype (convert_boolean_attn_mask) that backward
                # keeps; lse padded to 32.
                bias = None if mask is None else mask if mask.dtype != torch.bool else \
                    torch.empty(mask.shape, dtype=q.dtype, device=q.device)
                lse = q.new_empty((batch, heads, _round_up(seq, 32)), dtype=torch.float32)
            ctx.save_for_backward(q, k, v, out, lse, bias)
            ctx.flash = flash
            return out

        @staticmethod
        def backward(ctx, grad_out):
            q, k, v, out, lse, bias = ctx.saved_tensors
            batch, heads, seq, head_dim = q.shape
            # zeros, not empty: with real tensors the gradients' values flow on (memory is the same)
            dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
            work = []
            if ctx.flash:
                # flash-attention 2 mha_bwd: softmax_d and the fp32 dq accumulator over rounded
                # sizes; with fewer KV heads, dk/dv per query head before they are summed.
                seq_rounded = _round_up(seq, 128)
                dim_rounded = _round_up(head_dim, 32) if head_dim <= 192 else 256
                work.append(q.new_empty((batch, heads, seq_rounded), dtype=torch.float32))
                work.append(q.new_empty((batch, seq_rounded, heads, dim_rounded), dtype=torch.float32))
                if k.shape[1] != heads:
                    work.append(q.new_empty((batch, k.shape[2], heads, head_dim)))
                    work.append(q.new_empty((batch, v.shape[2], heads, v.shape[-1])))
            else:
                # memory-efficient backward: row sums (delta) and an fp32 grad_q accumulator.
                work.append(q.new_empty((batch, heads, _round_up(seq, 32)), dtype=torch.float32))
                work.append(q.new_empty((batch, seq, heads, head_dim), dtype=torch.float32))
            del work
            return dq, dk, dv, None, None, None, None

    def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                     scale=None, enable_gqa=False):
        return _CudaSdpa.apply(query, key, value, attn_mask, is_causal, scale, enable_gqa)

    return scaled_dot_product_attention


class _NoOpKernel:
    """Stands for a Triton kernel that works in place: ``kernel[grid](...)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def _patched(patches):
    """Set ``(obj, name, value)`` attributes for the duration; restore (or delete) them after."""
    missing = object()
    saved = [(obj, name, getattr(obj, name, missing)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, old in reversed(saved):
            if old is missing:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


def _cuda_behaviour_patches(notes: list, real_values: bool = False):
    """Attribute patches that make the traced step take the CUDA code paths (module docstring)."""
    import torch
    import torch.nn.functional as F

    patches = [(F, "scaled_dot_product_attention", _make_cuda_sdpa(real_values))]
    notes.append("SDPA traced as the CUDA flash kernel (saves q, k, v, output and an fp32 log-sum-exp; "
                 "no seq x seq scores) or, with a mask (sliding window) or unequal q/k and v head widths "
                 "(MLA), the memory-efficient kernel")

    original_autocast_query = torch.is_autocast_enabled

    def is_autocast_enabled(*args):
        if args and str(args[0]) == "meta":
            return False
        return original_autocast_query(*args)

    patches.append((torch, "is_autocast_enabled", is_autocast_enabled))
    try:
        import trl.kernels.chunked_logprob as kernels
        import trl.trainer.utils as trl_utils
    except ImportError:  # older TRL without the fused head: nothing to patch
        return patches
    names = ("_use_triton", "_forward_kernel", "_backward_kernel", "_addmm_fp32")
    if all(hasattr(kernels, n) for n in names) and hasattr(trl_utils, "_use_triton"):
        patches += [
            (trl_utils, "_use_triton", lambda device: True),
            (kernels, "_use_triton", lambda device: True),
            (kernels, "_forward_kernel", _NoOpKernel()),
            (kernels, "_backward_kernel", _NoOpKernel()),
            (kernels, "triton", types.SimpleNamespace(cdiv=lambda a, b: -(-a // b))),
            # CUDA: torch.addmm(acc, a, b, out_dtype=float32, out=acc), in place, no fp32 copies
            (kernels, "_addmm_fp32", lambda acc, a, b: None),
        ]
        notes.append("TRL fused head traced on its CUDA path: completion rows only, Triton kernels in "
                     "place, fp32 gradient accumulation without fp32 copies of the tiles")
    else:
        notes.append("TRL's fused-head internals differ from TRL 1.16: traced on its torch fallback, "
                     "which makes fp32 tile copies the CUDA kernels do not (over-counts the head)")
    return patches


# -- building the model -----------------------------------------------------------------------------

def _hf_config(spec: ModelSpec, text_only: bool = True):
    """A transformers config for ``spec``'s text decoder (``text_only=False``: the whole multimodal
    model, vision tower included), SDPA attention."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise MissingDependencyError("plan profile --trace needs transformers to build the model from "
                                     "its config: pip install 'grpo-vram-planner[train]'") from None
    raw = {k: v for k, v in dict(spec.raw_config).items() if k not in _DROP_CONFIG_KEYS}
    model_type = raw.pop("model_type", None) or spec.model_type
    try:
        config = AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError, TypeError) as e:
        if "rope" not in str(e) or not (raw.get("rope_scaling") or raw.get("rope_parameters")):
            raise ConfigError(f"transformers cannot build a '{model_type}' config for {spec.model_id}: {e}") from None
        # an incomplete RoPE-scaling block (e.g. longrope factors left out of a profile) changes no
        # tensor shape: build with plain RoPE instead
        raw.pop("rope_scaling", None)
        raw.pop("rope_parameters", None)
        config = AutoConfig.for_model(model_type, **raw)
    if text_only and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    config.use_cache = False  # training: no KV cache (transformers would switch it off and say so)
    if not text_only and config.get_text_config() is not config:
        config.get_text_config().use_cache = False
    return config


def _build_model(spec: ModelSpec, finetune: str, lora_rank: int, logprob_head: str, attn: str = "sdpa",
                 device: str = "meta", lora_target_modules=ALL_LINEAR):
    """The traced model on ``device`` (meta, or cpu with random weights), prepared as TRL's GRPO trainer
    prepares it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    multimodal = bool(spec.vision_params) and device != "meta"
    config = _hf_config(spec, text_only=not multimodal)
    if device != "meta":
        torch.manual_seed(0)
    with torch.device(device):
        if multimodal:
            # the whole checkpoint as TRL loads a vision-language model (its vision tower resident);
            # the traced step feeds text only
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
        if logprob_head == "fused":
            try:
                from trl.trainer.utils import add_fused_lm_head
            except ImportError:
                raise MissingDependencyError("--logprob-head fused needs TRL >= 1.16 (add_fused_lm_head); "
                                             "pip install 'trl>=1.16' or pass --logprob-head plain") from None
            add_fused_lm_head(model, outputs=("log_probs", "entropy"))
        if finetune == "lora":
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError:
                raise MissingDependencyError("--finetune lora needs peft to wrap the model with LoRA: "
                                             "pip install peft") from None
            model.enable_input_require_grads()
            lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                              target_modules=lora_target_modules if isinstance(lora_target_modules, str)
                              else list(lora_target_modules), task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
        else:
            for p in model.parameters():
                p.requires_grad_(True)
    model.train()
    return model


def _set_checkpointing(model, enabled: bool) -> None:
    """Gradient checkpointing as TRL turns it on (non-reentrant), on the PEFT model's base."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if enabled:
        base.gradient_checkpointing_enable({"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()


def _make_nf4_matmul():
    """bitsandbytes ``MatMul4Bit`` (training path) for memory: the weight is dequantised to the
    compute dtype for the matmul and freed, in forward and again in backward; nothing is saved
    but the quantised weight (resident)."""
    import torch
    import torch.nn.functional as F

    class _Nf4MatMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            dequantised = torch.empty(weight.shape, dtype=x.dtype, device=x.device)
            out = F.linear(x, dequantised, None if bias is None else bias.to(x.dtype))
            ctx.weight_shape = tuple(weight.shape)
            return out

        @staticmethod
        def backward(ctx, grad_out):
            dequantised = torch.empty(ctx.weight_shape, dtype=grad_out.dtype, device=grad_out.device)
            return torch.matmul(grad_out, dequantised), None, None

    return _Nf4MatMul


def _emulate_nf4(model) -> int:
    """Route every frozen decoder ``nn.Linear`` (not ``lm_head``, not the adapters) through the NF4
    matmul's memory behaviour; returns how many were swapped."""
    import torch

    matmul = _make_nf4_matmul()

    def forward(self, x):
        return matmul.apply(x, self.weight, self.bias)

    swapped = 0
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if type(module) is torch.nn.Linear and leaf != "lm_head" and ".lora_" not in f".{name}" \
                and not module.weight.requires_grad:
            module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]
            swapped += 1
    return swapped


def _final_norm(model):
    """The text decoder's final norm (its gradient arrives when the log-prob head's backward ends)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is not None and hasattr(decoder, "get_decoder") and decoder.get_decoder() is not decoder:
        decoder = decoder.get_decoder()  # a vision-language model's language model
    return getattr(decoder, "norm", None)


def _one_step(model, shape: Shape, vocab_size: int, logprob_head: str, tracker) -> tuple[int, int, int]:
    """Run the GRPO-shaped step under ``tracker``; returns (forward peak, peak of the decoder layers'
    backward, live after backward)."""
    import torch

    norm = _final_norm(model)
    hook = None if norm is None else norm.register_full_backward_pre_hook(lambda *_: tracker.start_phase())

    B, P, C = shape.batch_size, shape.prompt_length, shape.completion_length
    input_ids = torch.randint(0, vocab_size, (B, P + C))
    labels = input_ids.clone()
    labels[:, :P] = -100
    if logprob_head == "fused":
        out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        logp = out.log_probs
    else:
        from trl.trainer.utils import selective_log_softmax

        # TRL's GRPO before the fused head: logits of the last C+1 positions, divided by the
        # temperature (a new tensor even at 1.0).
        keep = min(C + 1, P + C)  # no prompt: the first completion token has no prediction
        out = model(input_ids=input_ids, logits_to_keep=keep)
        logits = out.logits[:, :-1, :] / 1.0
        logp = selective_log_softmax(logits, input_ids[:, P + C - keep + 1:])
        del logits
    del out
    forward_peak = tracker.peak_bytes
    advantages = torch.randn(B, 1)
    loss = -(torch.exp(logp - logp.detach()) * advantages).mean()
    del logp
    try:
        loss.backward()
    finally:
        if hook is not None:
            hook.remove()
    del loss, input_ids, labels, advantages
    layers_peak = tracker.peak_bytes if tracker.phase_start_peak is not None else 0
    if tracker.phase_start_peak is not None:
        tracker.peak_bytes = max(tracker.peak_bytes, tracker.phase_start_peak)
    return forward_peak, layers_peak, tracker.current_bytes


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' logger at ERROR for the duration (config and generation-flag notices)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def trace_steps(spec: ModelSpec, shapes, *, weights: str = "bf16", finetune: str = "lora", lora_rank: int = 16,
                gradient_checkpointing=(True,), logprob_head: str = "fused", progress=None,
                device: str = "meta") -> TraceResult:
    """Trace one GRPO step per shape (and per checkpointing setting) and return the peaks.

    ``gradient_checkpointing`` is a bool or a tuple of bools to trace each setting.
    ``progress(i, n, label)``, if given, is called before each step.
    ``device="cpu"`` runs the step on real tensors (random weights, real compute) instead of meta
    tensors: the data-dependent ops then have their data, so mixture-of-experts routing (sort, histc,
    grouped_mm offsets) runs as it does on the GPU. It computes, so it is for small models (a shrunken
    config of the architecture: benchmarks/trace_new_architectures.py). A multimodal model is then built
    whole (its vision tower's weights resident) and fed text.
    """
    with warnings.catch_warnings(), _quiet_transformers():
        # transformers/PEFT deprecation chatter (gradient_checkpointing_enable is what TRL calls)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|torch|trl)\b")
        return _trace_steps(spec, shapes, weights=weights, finetune=finetune, lora_rank=lora_rank,
                            gradient_checkpointing=gradient_checkpointing, logprob_head=logprob_head,
                            progress=progress, device=device)


def _replayed_reserve(events: list, n_resident: int) -> int:
    """Peak reserved minus peak allocated of the step, the caching allocator replayed on its events
    (the residents allocated first, the cache empty before the step, as the calibration measured)."""
    from .allocator_sim import replay

    a = replay(events, n_resident)
    return a.peak_reserved - a.peak_allocated


def _parameter_bytes(model) -> dict:
    """Exact bytes of the model's base parameters, LoRA adapters and buffers."""
    out = {"weights": 0, "adapters": 0, "buffers": 0}
    for name, p in model.named_parameters():
        out["adapters" if ".lora_" in f".{name}" else "weights"] += p.numel() * p.element_size()
    for b in model.buffers():
        out["buffers"] += b.numel() * b.element_size()
    return out


def _trace_steps(spec: ModelSpec, shapes, *, weights, finetune, lora_rank, gradient_checkpointing, logprob_head,
                 progress, device) -> TraceResult:
    """``trace_steps`` (its docstring) with the warnings already silenced: build once, trace each step."""
    _check_trace_setup(spec, weights, finetune, lora_rank, logprob_head, device)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingDependencyError("plan profile --trace needs torch (CPU build is enough): "
                                     "pip install 'grpo-vram-planner[train]'") from None
    settings = (gradient_checkpointing,) if isinstance(gradient_checkpointing, bool) else tuple(gradient_checkpointing)
    shapes = tuple(shapes)
    notes: list[str] = []
    t0 = time.perf_counter()
    model = _build_traced_model(spec, finetune, lora_rank if finetune == "lora" else 0, logprob_head, device, notes)
    build_seconds = time.perf_counter() - t0
    vocab = int(getattr(_hf_config(spec), "vocab_size", spec.vocab_size))
    patches = _substitutions(model, weights, logprob_head, device, notes)
    steps = []
    n = len(settings) * len(shapes)
    i = 0
    for gc_on in settings:
        _set_checkpointing(model, gc_on)
        for shape in shapes:
            if progress is not None:
                progress(i, n, f"{shape} gc={'on' if gc_on else 'off'}")
            i += 1
            step, faked_scalars = _trace_one_step(model, spec, shape, gc_on, vocab, logprob_head, patches, device)
            steps.append(step)
            if faked_scalars:
                note = (f"{faked_scalars} data-dependent scalar(s) per step read without data "
                        f"(transformers' packed-sequence check)")
                if note not in notes:
                    notes.append(note)
    return TraceResult(model_id=spec.model_id, weights=weights, finetune=finetune,
                       lora_rank=lora_rank if finetune == "lora" else None, logprob_head=logprob_head,
                       steps=tuple(steps), notes=tuple(notes), build_seconds=build_seconds, device=device,
                       parameter_bytes=_parameter_bytes(model))


def _check_trace_setup(spec: ModelSpec, weights, finetune, lora_rank, logprob_head, device) -> None:
    """One clear error for a setup the trace cannot run (a mixture of experts needs real data)."""
    if weights not in WEIGHT_FORMATS:
        raise InvalidSetupError(f"--weights for a trace must be one of {', '.join(WEIGHT_FORMATS)}, got '{weights}'")
    if finetune not in ("lora", "full"):
        raise InvalidSetupError(f"--finetune must be lora or full, got '{finetune}'")
    if finetune == "full" and weights == "nf4":
        raise InvalidSetupError("full fine-tuning of nf4 weights is not possible; use --finetune lora")
    if logprob_head not in LOGPROB_HEADS:
        raise InvalidSetupError(f"--logprob-head must be one of {', '.join(LOGPROB_HEADS)}, got '{logprob_head}'")
    if finetune == "lora" and (not isinstance(lora_rank, int) or lora_rank <= 0):
        raise InvalidSetupError(f"--lora-rank must be a positive integer, got {lora_rank}")
    if device not in DEVICES:
        raise InvalidSetupError(f"the trace runs on one of {', '.join(DEVICES)}, got '{device}'")
    if spec.is_moe and device == "meta":
        raise ConfigError(f"{spec.model_id} is a mixture-of-experts model: its routing is data-dependent and "
                          f"cannot be traced without data; use `plan estimate` (analytic) or a GPU profile")


def _build_traced_model(spec: ModelSpec, finetune: str, rank: int, logprob_head: str, device: str, notes: list):
    """The model to trace (``_build_model``), on eager attention where transformers has no SDPA path
    (noted); a build failure is one ConfigError."""
    try:
        try:
            return _build_model(spec, finetune, rank, logprob_head, device=device)
        except ValueError as e:
            if "scaled_dot_product_attention" not in str(e):
                raise
            # e.g. Gemma 2 (attention logit soft-capping), gpt-oss (sinks): transformers has no SDPA path,
            # so a real run uses eager attention too, which keeps the batch x heads x seq x seq scores
            model = _build_model(spec, finetune, rank, logprob_head, attn="eager", device=device)
            notes.append("eager attention: transformers has no SDPA path for this architecture, so the "
                         "run (and this trace) keeps the batch x heads x seq^2 attention scores")
            return model
    except PlannerError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers/PEFT failures on an unusual config
        raise ConfigError(f"cannot build {spec.model_id} from its config for tracing: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def _substitutions(model, weights: str, logprob_head: str, device: str, notes: list):
    """The CUDA behaviour patches for the step (``_cuda_behaviour_patches``), NF4's dequantising linears
    swapped into ``model``, and a note for each (and for what is not traced) appended to ``notes``."""
    if weights == "nf4":
        swapped = _emulate_nf4(model)
        notes.append(f"nf4: bitsandbytes cannot run here; traced as the bf16 graph with each of the {swapped} "
                     f"frozen linears dequantising its weight to bf16 for the matmul (forward and backward) "
                     f"and freeing it, as MatMul4Bit does: the activations are the bf16 ones plus those "
                     f"transients; the weights term is the analytic NF4 one")
    notes.append("optimizer state and step (bitsandbytes 8-bit AdamW): the analytic term, not traced")
    if logprob_head == "plain":
        notes.append("plain head: full logits of the completion positions and TRL's torch selective_log_softmax "
                     "(per-sequence log_softmax), as TRL before the fused head")
    patches = _cuda_behaviour_patches(notes, real_values=device != "meta")
    if device != "meta":
        notes.append(f"traced on {device} with real tensors (random weights, real routing)")
    return patches


def _label_mask_rows(shape: Shape):
    """``bool_index_rows`` for a meta trace of ``shape``: the label mask selects the completion's
    positions (its first token has no prediction when there is no prompt); any other mask is refused."""
    rows = shape.batch_size * (shape.completion_length - (0 if shape.prompt_length else 1))
    label_mask = (shape.batch_size, shape.prompt_length + shape.completion_length - 1)

    def bool_index_rows(mask_shape):
        if mask_shape == label_mask:
            return rows
        raise ConfigError(f"the traced step indexes with a boolean mask of shape {mask_shape}, "
                          f"which is data-dependent; this model cannot be traced")
    return bool_index_rows


def _trace_one_step(model, spec: ModelSpec, shape: Shape, gc_on: bool, vocab: int, logprob_head: str, patches,
                    device: str) -> tuple[TracedStep, int]:
    """One step of ``shape`` under a fresh tracker, the model's parameters and buffers resident;
    returns the traced step and how many data-dependent scalars it read without data."""
    import torch

    tracker = _make_tracker(_label_mask_rows(shape) if device == "meta" else None)
    for t in list(model.parameters()) + list(model.buffers()):
        tracker.track(t)
    resident = tracker.current_bytes
    n_resident = len(tracker.events)
    tracker.reset_peak()
    t1 = time.perf_counter()
    if device != "meta":
        torch.manual_seed(1)  # the same token ids (and so the same routing) for every setting
    try:
        with _patched(patches), torch.device(device), tracker:
            forward_peak, layers_peak, after = _one_step(model, shape, vocab, logprob_head, tracker)
    except PlannerError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"tracing {spec.model_id} at {shape} failed: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        for p in model.parameters():
            p.grad = None
    step = TracedStep(shape=shape, gradient_checkpointing=gc_on,
                      activation_peak_bytes=tracker.peak_bytes - resident,
                      resident_bytes=resident,
                      forward_peak_bytes=forward_peak - resident,
                      gradients_bytes=after - resident,
                      seconds=time.perf_counter() - t1,
                      layers_peak_bytes=max(0, layers_peak - resident),
                      replayed_reserve_bytes=_replayed_reserve(tracker.events, n_resident))
    return step, tracker.faked_scalars
