"""The trainer process's device memory during a GRPO training step, moment by moment.

``trainer_memory(spec, setup)`` returns the **device-level peak** of one training micro-step
(what nvidia-smi shows for the process; the figure data/calibration/README.md defines as
``peak_reserved_step + non-PyTorch``) and the **steady state** between steps (weights, adapters,
optimizer state, non-PyTorch memory and the allocator's retained reserve).

Two facts of a real run change that peak, and both are setup fields:
- ``gradient_accumulation_steps > 1``: every micro-batch after the first starts with all the
  gradients of the ones before it alive, instead of building them up during its own backward.
- ``completion_lengths="varied"`` (GRPO's case, the default): micro-batches of different lengths
  leave the allocator's pool cut for other sizes, and the reserve at the longest one is larger than
  in one isolated step (allocator.run_reserve_bytes, measured over whole runs).
``completion_lengths="fixed"`` with one accumulation step is one isolated step of one shape: the
protocol of the calibration data.

**The peak is the largest moment.** One step, moment by moment (``MOMENTS``), each the tensors alive
then plus what the caching allocator keeps reserved then (``MOMENT_RESERVE`` says where each
reserve comes from); between them the same resident terms (non-PyTorch memory, cuBLAS workspace,
weights, adapters, optimizer state, rollout buffers):

- ``forward``: a later micro-batch's forward under autocast (earlier gradients alive under
  accumulation, the saved activations, autocast's 16-bit weight copies, amp.autocast_weight_cache_bytes;
  at that moment the allocator also holds the backward's vocabulary-sized gradient blocks, free but
  reserved, as planner/profiler/allocator_sim.py replays them).
- ``logprob_head``: the log-prob head's own peak at the start of backward (logprob_head.logprob_head_bytes).
- ``backward``: the layers' peak (first micro-batch without accumulation; with it a later one, whose
  earlier gradients are alive: it holds the first one's terms and more).
- ``clip_grad``: ``max_grad_norm`` clipping's per-tensor norms (optimizer.clip_grad_norm_bytes) on
  every gradient; the activations and the head are freed by then.
- ``optimizer_step``: every gradient plus the step's temporaries (optimizer.optimizer_step_transient_bytes:
  foreach, for-loop, fused, bitsandbytes).

Within a step nothing empties the cache, so the reserved pool only grows: the device-level peak is
the largest moment. At the step the backward's freed blocks are cached; the temporaries take them
where they fit, else new segments, and where the card is short the allocator first releases its
wholly free cached segments and retries before it fails (c10/cuda/CUDACachingAllocator.cpp,
``malloc``: ``release_available_cached_blocks`` then ``release_cached_blocks`` after a failed
``cudaMalloc``). So the step needs max(the backward's reserved, resident + gradients + temporaries),
not their sum. Not modelled: free blocks a temporary does not fit, in segments a live gradient pins
(neither reusable nor releasable); and on a card with room to spare the measured peak reserved can
exceed this moment by the temporaries the allocator put in new segments rather than reuse.
``TrainerMemory.components`` is the binding moment's contents, so they sum to the peak.
``rollout_buffers``: the generation batch's ids, masks and fp32 per-token log-probs TRL keeps
between generation and training (rollout.rollout_buffer_bytes), with ``rollout_sequences`` set.

    peak = max over moments of (resident terms + that moment's tensors + its allocator reserve)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import InvalidSetupError
from ..specs.model import ModelSpec
from ..specs.versions import transformers_eager_attention
from . import activations as act
from .allocator import allocator_reserve_bytes, run_reserve_bytes
from .amp import autocast_weight_cache_bytes
from .gradients import gradient_bytes
from .logprob_head import LOGPROB_HEADS, logprob_head_bytes
from .lora import (
    ADAPTER_BYTES_PER_PARAM,
    adapter_bytes,
    lora_params,
    lora_tensor_numels,
)
from .optimizer import (
    OPTIMIZERS,
    clip_grad_norm_bytes,
    optimizer_state_bytes,
    optimizer_step_transient_bytes,
    step_reserve_bound_bytes,
    step_temporary_tensors,
)
from .process import cublas_workspace_bytes, non_torch_bytes
from .rollout import rollout_buffer_bytes
from .weights import DTYPE_BYTES, WEIGHT_FORMATS, weights_bytes

FINETUNE_MODES = ("lora", "full")
MIXED_PRECISION = ("bf16", "fp16", "no")
COMPLETION_LENGTHS = ("varied", "fixed")

# The moments of one training step, in the order they happen (module docstring).
MOMENTS = ("forward", "logprob_head", "backward", "clip_grad", "optimizer_step")
# Where each moment's allocator reserve comes from: ``fitted`` (allocator.py's step reserve from the
# transient bytes the step recycles: fitted on the default allocator's measured rows; with expandable
# segments, derived from the allocator's rules replayed on the calibration rows' traced streams),
# ``allocator_sim`` (the forward of a later micro-batch under autocast: the fitted reserve or, if
# larger, the backward's V x h gradient blocks that
# planner/profiler/allocator_sim.py's replay finds free but reserved then), ``bound`` (clipping and
# the step allocate into the blocks the backward left cached, or into segments of their own: the
# allocator's segment rounding bounds what they hold beyond their tensors,
# optimizer.step_reserve_bound_bytes).
MOMENT_RESERVE = {"forward": "fitted or allocator_sim", "logprob_head": "fitted", "backward": "fitted",
                  "clip_grad": "bound", "optimizer_step": "bound"}


@dataclass(frozen=True)
class TrainerSetup:
    """One trainer configuration. Defaults follow TRL's GRPOConfig where it has one."""

    weights: str = "bf16"  # bf16 | fp16 | fp32 | nf4 | int8
    finetune: str = "lora"  # lora | full
    lora_rank: int = 16  # higher: more adapter, gradient and optimizer bytes
    lora_target_modules: tuple | None = None  # None = all linear projections
    optim: str = "adamw_8bit"
    gradient_checkpointing: bool = True  # True reduces memory (TRL default since 0.22)
    batch_size: int = 1  # per_device_train_batch_size: sequences per micro-batch
    prompt_length: int = 256
    completion_length: int = 512
    logprob_head: str = "fused"  # fused (TRL >= 1.16 add_fused_lm_head) | plain (older TRL)
    expandable_segments: bool = False
    double_quant: bool = True  # NF4 double quantisation (QLoRA default)
    world_size: int = 1
    transformers_version: str | None = None  # None: the installed transformers, else the newest known
    gradient_accumulation_steps: int = 1  # > 1: earlier micro-batches' gradients are alive
    completion_lengths: str = "varied"  # varied (GRPO) | fixed (one shape, as the calibration steps)
    # autocast over the weights: bf16 (TRL's GRPOConfig default unless fp16) | fp16 | no; matters for
    # fp32 weights (autocast's weight cache, memory/amp.py)
    mixed_precision: str = "bf16"
    # sequences of the generation batch TRL holds between generation and training
    # (per_device_train_batch_size x steps_per_generation); 0 = not counted (a synthetic step)
    rollout_sequences: int = 0
    reference_logps: bool = False  # beta != 0: TRL also keeps the reference model's log-probs

    def __post_init__(self):
        validate_setup(self)

    @property
    def compute_bytes(self) -> int:
        """Bytes of one activation element: the weights' dtype, or bf16 compute for 4/8-bit."""
        return DTYPE_BYTES.get(self.weights, 2) if self.weights in ("bf16", "fp16", "fp32") else 2

    @property
    def tokens(self) -> int:
        return self.batch_size * (self.prompt_length + self.completion_length)


def validate_setup(s: TrainerSetup) -> None:
    """One clear line for each kind of bad input (the CLI turns it into exit code 2)."""
    if s.weights not in WEIGHT_FORMATS:
        raise InvalidSetupError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got '{s.weights}'")
    if s.finetune not in FINETUNE_MODES:
        raise InvalidSetupError(f"--finetune must be one of {', '.join(FINETUNE_MODES)}, got '{s.finetune}'")
    if s.optim not in OPTIMIZERS:
        raise InvalidSetupError(f"--optim must be one of {', '.join(OPTIMIZERS)}, got '{s.optim}'")
    if s.logprob_head not in LOGPROB_HEADS:
        raise InvalidSetupError(f"--logprob-head must be one of {', '.join(LOGPROB_HEADS)}, got '{s.logprob_head}'")
    if s.mixed_precision not in MIXED_PRECISION:
        raise InvalidSetupError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, "
                                f"got '{s.mixed_precision}'")
    if not isinstance(s.rollout_sequences, int) or isinstance(s.rollout_sequences, bool) or s.rollout_sequences < 0:
        raise InvalidSetupError(f"--rollout-sequences must be a non-negative integer, got {s.rollout_sequences}")
    if s.completion_lengths not in COMPLETION_LENGTHS:
        raise InvalidSetupError(f"--completion-lengths must be one of {', '.join(COMPLETION_LENGTHS)}, "
                                f"got '{s.completion_lengths}'")
    for name in ("batch_size", "completion_length", "world_size", "gradient_accumulation_steps"):
        v = getattr(s, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise InvalidSetupError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if not isinstance(s.prompt_length, int) or s.prompt_length < 0:
        raise InvalidSetupError(f"--prompt-length must be a non-negative integer, got {s.prompt_length}")
    if s.finetune == "lora" and (not isinstance(s.lora_rank, int) or s.lora_rank <= 0):
        raise InvalidSetupError(f"--lora-rank must be a positive integer, got {s.lora_rank}")
    if s.finetune == "full" and s.weights in ("nf4", "int8"):
        raise InvalidSetupError(f"full fine-tuning of {s.weights} weights is not possible; use --finetune lora")


class StepMoments:
    """Mixin for anything holding ``moment_components`` (moment name -> its terms in bytes): each
    moment's bytes and the one that sets the peak."""

    moment_components: dict

    @property
    def moments(self) -> dict[str, int]:
        """Bytes of every moment of the step (the peak is the largest)."""
        return {name: sum(c.values()) for name, c in self.moment_components.items()}

    @property
    def binding_moment(self) -> str | None:
        """The moment that sets the peak (None without moments)."""
        return binding_moment(self.moments)


@dataclass(frozen=True)
class TrainerMemory(StepMoments):
    """The trainer process at the step's peak (its binding moment), every moment, and between steps."""

    components: dict = field(default_factory=dict)  # name -> bytes at the binding moment, sums to peak_bytes
    steady_bytes: int = 0
    resident_bytes: int = 0  # weights + adapters + optimizer state (+ non-PyTorch)
    load_bytes: int = 0  # after loading, before the first step (what vLLM sees at start-up)
    trainable_params: int = 0
    tokens: int = 0
    # the reserve a run with varied completion lengths reaches (0 for fixed lengths): the floor a
    # calibration profile's single-step reserve line is raised to
    run_reserve_bytes: int = 0
    # what gradient accumulation adds to the peak (earlier micro-batches' gradients), included in
    # ``gradients``; a calibration profile (measured without accumulation) adds it back
    accumulated_gradient_bytes: int = 0
    # the forward of a later micro-batch under autocast, above the resident state (earlier gradients,
    # saved activations, autocast's 16-bit weight copies); 0 where autocast caches nothing
    forward_bytes: int = 0
    # moment -> its components (MOMENTS); empty for a TrainerMemory built from components alone
    moment_components: dict = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return sum(self.components.values())

    def moment(self, name: str) -> dict:
        """The components of moment ``name``."""
        return dict(self.moment_components[name])

    def with_moments(self, moment_components: dict) -> TrainerMemory:
        """This memory with new moments, its components those of the new binding moment."""
        name = binding_moment({k: sum(c.values()) for k, c in moment_components.items()})
        return replace(self, moment_components=moment_components,
                       components=dict(moment_components[name]) if name else dict(self.components))

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "steady_bytes": self.steady_bytes,
                "load_bytes": self.load_bytes, "resident_bytes": self.resident_bytes,
                "trainable_params": self.trainable_params, "tokens": self.tokens,
                "components": dict(self.components), "moments": self.moments,
                "binding_moment": self.binding_moment}


def binding_moment(moments: dict[str, int]) -> str | None:
    """The largest moment; of equal ones the later (a calibrated backward, which holds the head's
    peak, is named ``backward``)."""
    best = None
    for name, v in moments.items():
        if best is None or v >= moments[best]:
            best = name
    return best


def above_resident(moment: dict) -> int:
    """A forward/backward moment's tensors above the resident state (gradients, activations, the
    log-prob head; not the allocator's reserve): what a trace's activation peak measures."""
    return moment["gradients"] + moment["activations"] + moment["logprob_head"]


def trainer_memory(spec: ModelSpec, setup: TrainerSetup) -> TrainerMemory:
    """Every moment of a training step of ``setup`` on ``spec``; the peak is the largest (module docstring)."""
    spec = _spec_as_run(spec, setup)
    weights = weights_bytes(spec, setup.weights, setup.double_quant)
    trained = _trained_params(spec, setup)
    optimizer = optimizer_state_bytes(trained.tensor_numels, setup.optim, trained.param_bytes)
    backward = _backward_terms(spec, setup, trained)
    accumulating = setup.gradient_accumulation_steps > 1
    layer_moment, head_moment = backward.moments(accumulating)
    accumulated = max(layer_moment, head_moment) - max(backward.moments(False))
    activations = backward.saved_bytes + backward.transient_bytes
    head = max(0, head_moment - layer_moment)
    reserve, run_reserve = _step_reserve_bytes(setup, backward.transient_bytes, activations, head)
    rollout = rollout_buffer_bytes(setup.rollout_sequences, setup.prompt_length, setup.completion_length,
                                   reference_logps=setup.reference_logps)
    non_torch = non_torch_bytes(setup.world_size)
    resident = {"non_torch": non_torch, "cublas_workspace": cublas_workspace_bytes(), "weights": weights,
                "adapters": trained.adapter_bytes, "optimizer_state": optimizer}
    step_terms = {"gradients": 0, "activations": 0, "logprob_head": 0, "optimizer_step": 0, "autocast_cache": 0,
                  "rollout_buffers": rollout, "allocator_reserve": 0}
    forward = _forward_moment(spec, setup, trained, backward, reserve)
    moments = {
        "forward": {**resident, **step_terms, **forward},
        "logprob_head": {**resident, **step_terms, "gradients": backward.all_gradient_bytes if accumulating else 0,
                         "activations": backward.saved_bytes + backward.final_norm_bytes,
                         "logprob_head": backward.head_peak_bytes, "allocator_reserve": reserve},
        "backward": {**resident, **step_terms, "gradients": layer_moment - activations, "activations": activations,
                     "allocator_reserve": reserve},
        **_step_moments(setup, trained, {**resident, **step_terms}),
    }
    resident_bytes = weights + trained.adapter_bytes + optimizer + resident["cublas_workspace"] + rollout
    memory = TrainerMemory(steady_bytes=non_torch + resident_bytes,  # TRL empties the cache before generation
                           resident_bytes=resident_bytes,
                           load_bytes=non_torch + weights + trained.adapter_bytes,
                           trainable_params=trained.params, tokens=setup.tokens, run_reserve_bytes=run_reserve,
                           accumulated_gradient_bytes=accumulated,
                           forward_bytes=forward["gradients"] + forward["activations"] + forward["autocast_cache"]
                           if forward["autocast_cache"] else 0)
    return memory.with_moments(moments)


def _step_moments(setup: TrainerSetup, trained: _TrainedParams, base: dict) -> dict[str, dict]:
    """The ``clip_grad`` and ``optimizer_step`` moments after the last micro-batch's backward: every
    gradient alive (the activations and the head freed), clipping's 0-d norms, then the optimizer's
    temporaries; beyond their tensors the allocator holds at most its segments' rounding (a bound from
    its rules, optimizer.step_reserve_bound_bytes), the backward's larger cached pool being free to
    serve or to release."""
    grads = {**base, "gradients": trained.all_gradient_bytes}
    step = optimizer_step_transient_bytes(trained.params, setup.optim, trained.param_bytes,
                                          trained.largest_tensor_numel)
    large = step_temporary_tensors(trained.tensor_numels, setup.optim, trained.param_bytes)
    return {"clip_grad": {**grads, "clip_grad": clip_grad_norm_bytes(trained.num_tensors),
                          "allocator_reserve": step_reserve_bound_bytes(0)},
            "optimizer_step": {**grads, "optimizer_step": step, "allocator_reserve": step_reserve_bound_bytes(large)}}


def _spec_as_run(spec: ModelSpec, setup: TrainerSetup) -> ModelSpec:
    """``spec`` with the attention ``setup``'s transformers runs (eager or SDPA); refuses a LoRA rank
    above the hidden size."""
    if setup.finetune == "lora" and setup.lora_rank > spec.hidden_size:
        raise InvalidSetupError(f"--lora-rank {setup.lora_rank} is larger than the hidden size "
                                f"({spec.hidden_size}) of {spec.model_id}")
    eager = transformers_eager_attention(spec.model_type, setup.transformers_version)
    if eager != spec.eager_attention:
        spec = replace(spec, eager_attention=eager)
    return spec


@dataclass(frozen=True)
class _TrainedParams:
    """What the step trains: the LoRA adapters, or every active parameter (full fine-tuning)."""

    params: int
    adapter_bytes: int  # the adapters' own weights (0 for full fine-tuning)
    tensor_numels: list  # (numel, count) per tensor kind: the optimizer's 8-bit buckets
    all_gradient_bytes: int  # every trainable parameter's gradient
    # bytes of one trainable parameter: torch's AdamW keeps its states, and its step's temporaries,
    # in that dtype (memory/optimizer.py)
    param_bytes: int
    largest_tensor_numel: int = 0  # the largest trainable tensor (the for-loop AdamW's temporaries)
    num_tensors: int = 0  # trainable tensors (clipping's per-gradient norms)


def _trained_params(spec: ModelSpec, setup: TrainerSetup) -> _TrainedParams:
    """The trainable parameters of ``setup`` on ``spec``, their tensors and their gradients' bytes."""
    if setup.finetune == "lora":
        trainable = lora_params(spec, setup.lora_rank, setup.lora_target_modules)
        numels = lora_tensor_numels(spec, setup.lora_rank, setup.lora_target_modules)
        return _TrainedParams(params=trainable,
                              adapter_bytes=adapter_bytes(spec, setup.lora_rank, setup.lora_target_modules),
                              tensor_numels=numels,
                              all_gradient_bytes=gradient_bytes(trainable, ADAPTER_BYTES_PER_PARAM),
                              param_bytes=ADAPTER_BYTES_PER_PARAM,
                              largest_tensor_numel=max((n for n, _ in numels), default=0),
                              num_tensors=sum(c for _, c in numels))
    trainable = spec.param_counts().active
    tensors = [(s_.in_features * s_.out_features, s_.layers * s_.count) for s_ in spec.linear_shapes()]
    rest = trainable - sum(n * c for n, c in tensors)
    tensors.append((rest, 1))  # embeddings/norms: one big tensor is the right 8-bit bucket
    return _TrainedParams(params=trainable, adapter_bytes=0, tensor_numels=tensors,
                          all_gradient_bytes=gradient_bytes(trainable, setup.compute_bytes),
                          param_bytes=DTYPE_BYTES[setup.weights],
                          largest_tensor_numel=max([n for n, _ in tensors[:-1]] + [spec.vocab_size * spec.hidden_size]),
                          # the linear weights, their biases, every RMSNorm (per layer, q/k norms, the final
                          # one) and the embedding
                          num_tensors=sum(c * (2 if s_.bias else 1) for s_, (_, c) in zip(spec.linear_shapes(), tensors))
                          + spec.num_layers * (spec.norms_per_layer + (2 if spec.qk_norm else 0)) + 2)


@dataclass(frozen=True)
class _BackwardTerms:
    """What one micro-batch's forward saves and its backward builds, in bytes above the resident state.

    Backward runs the LM head first, then the layers from the last to the first. Each layer
    frees its saved activations (its checkpoint, with checkpointing) and adds its weights'
    gradients, so the bytes alive change linearly with the layers done and peak at one end:
    the first layer back (all saved + one layer's gradients) or the last (all gradients + one
    layer's saved), plus the recomputed layer's transient either way. The head's own peak
    (its tile, fp32 gradient buffers) comes before any layer's transient exists.
    """

    saved_bytes: int  # activations saved for backward (the layers' checkpoints, with checkpointing)
    transient_bytes: int  # one layer's forward/backward temporaries
    all_gradient_bytes: int  # every trainable parameter's gradient
    head_gradient_bytes: int  # the LM head weight's gradient (full fine-tuning), V x h
    layer_gradient_bytes: int  # one decoder layer's gradients
    pending_head_gradient_bytes: int  # tied embedding: the head's gradient waiting for the lookup's
    head_peak_bytes: int  # the log-prob head's own peak (logprob_head.logprob_head_bytes)
    final_norm_bytes: int
    num_layers: int

    def moments(self, accumulating: bool) -> tuple[int, int]:
        """(layers' peak, head's peak) in bytes above the resident state; ``accumulating``: a later
        micro-batch, earlier micro-batches' gradients alive from the start."""
        grads, saved = self.all_gradient_bytes, self.saved_bytes
        head_grad, pending = self.head_gradient_bytes, self.pending_head_gradient_bytes
        if accumulating:
            layer = self.transient_bytes + saved + grads + pending
        else:
            layer = self.transient_bytes + max(saved + head_grad + self.layer_gradient_bytes,
                                               grads + saved // self.num_layers)
        # head_peak already holds the head weight's new .grad (the fused head returns it as a bf16
        # copy of its fp32 accumulator, trl/kernels/chunked_logprob.py); it is not added twice.
        head = saved + self.head_peak_bytes + self.final_norm_bytes + (grads if accumulating else 0)
        # The end of backward with a tied embedding: the lookup's dense V x h gradient on top of every
        # gradient and the pending head gradient (which is the new .grad on the first micro-batch, so
        # already in ``grads``; one more V x h on a later one).
        if pending:
            layer = max(layer, grads + head_grad + (pending if accumulating else 0))
        return layer, head


def _backward_terms(spec: ModelSpec, setup: TrainerSetup, trained: _TrainedParams) -> _BackwardTerms:
    """The activations, head and gradient terms of one micro-batch of ``setup`` on ``spec``."""
    s = setup.compute_bytes
    saved, transient = act.activation_bytes(spec, setup.batch_size, setup.prompt_length,
                                            setup.completion_length, setup.finetune, setup.lora_rank,
                                            setup.gradient_checkpointing, s, setup.lora_target_modules)
    head_peak = logprob_head_bytes(spec, setup.logprob_head, setup.batch_size, setup.completion_length, s,
                                   lm_head_trainable=setup.finetune == "full")
    head_grad = spec.vocab_size * spec.hidden_size * s if setup.finetune == "full" else 0
    # A tied embedding (full fine-tuning) has two gradient edges into one parameter: the LM head's and
    # the embedding lookup's (embedding_dense_backward, at the very end of backward). Autograd keeps
    # the head's V x h gradient in the engine's input buffer until the lookup's arrives, sums the two
    # and only then accumulates into .grad. On a later micro-batch, whose .grad already exists, that
    # pending gradient is alive on top of every gradient through the layers' backward. Seen in a real
    # TRL 0.26 GRPOTrainer run (benchmarks/results/real_grpo_trace.txt: at the peak, three fp32 V x h
    # tensors besides Adam's two: the accumulated .grad, the pending head gradient, the lookup's).
    return _BackwardTerms(saved_bytes=saved, transient_bytes=transient,
                          all_gradient_bytes=trained.all_gradient_bytes, head_gradient_bytes=head_grad,
                          layer_gradient_bytes=(trained.all_gradient_bytes - head_grad) // spec.num_layers,
                          pending_head_gradient_bytes=head_grad if spec.tie_word_embeddings else 0,
                          head_peak_bytes=head_peak, final_norm_bytes=act.final_norm_bytes(spec, setup.tokens, s),
                          num_layers=spec.num_layers)


def _step_reserve_bytes(setup: TrainerSetup, transient_bytes: int, activations_bytes: int,
                        head_bytes: int) -> tuple[int, int]:
    """(the allocator's reserve at the step's peak, the reserve a run of varied completion lengths
    reaches: 0 for fixed lengths); the first is never below the second."""
    # What the allocator recycles within the step: one layer's tensors with checkpointing,
    # every activation without it.
    recycled = (transient_bytes + head_bytes if setup.gradient_checkpointing
                else activations_bytes + head_bytes)
    reserve = allocator_reserve_bytes(recycled, setup.gradient_checkpointing, setup.expandable_segments,
                                      setup.finetune)
    if setup.completion_lengths != "varied":
        return reserve, 0
    run_reserve = run_reserve_bytes(recycled, setup.gradient_checkpointing, setup.expandable_segments)
    return max(reserve, run_reserve), run_reserve


def _forward_moment(spec: ModelSpec, setup: TrainerSetup, trained: _TrainedParams, backward: _BackwardTerms,
                    reserve_bytes: int) -> dict[str, int]:
    """The step terms of a later micro-batch's forward (the first one's without accumulation): earlier
    gradients alive under accumulation, the saved activations built up, autocast's 16-bit weight
    copies until the forward returns (0 where autocast caches nothing), and the allocator's reserve."""
    cache = autocast_weight_cache_bytes(spec, setup.weights, setup.finetune, trained.params, setup.mixed_precision)
    accumulating = setup.gradient_accumulation_steps > 1
    # What the caching allocator keeps reserved at that forward moment: the backward's V x h gradient
    # buffers (the head's new gradient before it is added into .grad, and with a tied embedding the
    # lookup's dense gradient too) are the largest blocks and are free during the forward, which is
    # served by the blocks the previous forward freed (autocast's copies, the checkpoints). Replayed
    # through the allocator's rules (planner/profiler/allocator_sim.py, checked against the H100 rows'
    # measured reserve: benchmarks/results/allocator_replay.txt) on the full fine-tuning notebook's loop
    # (benchmarks/results/allocator_notebook.txt): Qwen3-1.7B fp32, 2 x 1.16 GiB of them free at the
    # forward, 2.15 GiB reserved above the allocated peak where the fitted reserve says 0.46.
    stranded = (backward.head_gradient_bytes + backward.pending_head_gradient_bytes
                if accumulating and cache else 0)
    return {"gradients": trained.all_gradient_bytes if accumulating else 0, "activations": backward.saved_bytes,
            "autocast_cache": cache, "allocator_reserve": max(reserve_bytes, stranded)}
