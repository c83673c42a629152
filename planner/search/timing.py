"""A plan's or an estimate's step time: what planner.timing.step needs, read off the Plan (or the
Estimate) and the user's two time inputs, then :func:`planner.timing.step.step_time`.

The time inputs (planner.search.request.Targets): ``expected_completion_length`` (default: the
planned cap, ``max_completion_length``: the slowest case, since a generation wave lasts as long as its
longest completion and TRL pads the training batch to its longest) and
``reward_seconds_per_completion`` (default 0: the reward functions cost nothing).

What is read (each a stated assumption in the JSON's ``time.assumptions``):

- generation: per optimizer step, one generation batch of ``completions_per_device`` sequences per
  training GPU (TRL's ``steps_per_generation = gradient_accumulation_steps``), decoded in the plan's
  waves; a colocated engine serves its tensor-parallel group's requests, a server all ranks';
- log-prob passes: TRL computes the old policy's log-probs when vLLM generates with its
  importance-sampling correction (on by default from TRL 0.23.0) or when a generation batch outlives
  one step's accumulation (planner.specs.versions.trl_old_logprob_pass: a plan's never does), and the
  reference model's when ``beta != 0``; Unsloth's run the reference pass only;
- the LM head: the 6N rule over every token, except under a Liger loss (``use_liger_kernel`` before
  TRL 1.15: the ``liger``, ``chunked`` and ``liger-seq`` heads), whose chunked forward and backward over
  the completion tokens replace the head's share (planner.timing.phases.head_flops: no FLOPs beyond
  ``6 x tokens x h x V`` for ``liger-seq``; the others recompute the logits and run the gradient
  matmuls in fp32, at the card's fp32 peak);
- weight sync: TRL loads the trainer's weights into vLLM once per generation (a device copy when
  colocated, NCCL over the link to a server); Unsloth shares them (none);
- sleep mode: vLLM's weights out to host memory and back over PCIe once per generation (TRL);
  Unsloth's standby frees the KV cache only (no copy timed);
- 4-bit weights dequantise per matmul in training, and in vLLM's decode when vLLM holds them in 4
  bits (Unsloth); links: NVLink within a node where the card has it, else PCIe, one direction;
- no vLLM (``use_vllm=False``, the layout ``generate``): transformers' eager ``generate`` of the whole
  generation batch at once (planner.memory.generate: ``per_device_train_batch_size x
  steps_per_generation`` sequences, one call), reading the trainer's own weights (4-bit ones
  dequantised per step: a batch of more than one token takes bitsandbytes' dequantise-and-multiply
  path) and transformers' 16-bit cache per token step, bounded below by the host's launches
  (planner.timing.phases.generate_wave_seconds, measured on a CPU, a lower bound); no weight sync, no
  sleep; the old policy's log-probs are not computed (TRL computes them for vLLM's importance sampling
  or an accumulation that is not a multiple of ``steps_per_generation``, neither of which a plan has).
  The roofline's efficiencies are the ones fitted on vLLM runs: no run without vLLM was fitted or scored.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..memory.generate import kv_bytes_per_cached_token
from ..memory.lora import lora_params
from ..memory.vllm import VllmCapacity, kv_bytes_per_token
from ..memory.weights import DTYPE_BYTES, quantisable_linear_params
from ..specs.gpu import GpuSpec
from ..specs.model import ModelSpec
from ..specs.topology import Topology
from ..specs.versions import trl_old_logprob_pass
from ..timing.phases import NF4_DEQUANT_BYTES_PER_WEIGHT
from ..timing.step import StepShape, StepTime, step_time

if TYPE_CHECKING:
    from ..memory.trainer import TrainerSetup

GB = 1e9


@lru_cache(maxsize=64)
def kv_bytes(spec: ModelSpec, kv_cache_dtype: str, tp: int) -> int:
    return kv_bytes_per_token(spec, kv_cache_dtype, tp)


@lru_cache(maxsize=64)
def matmul_params(spec: ModelSpec) -> tuple[float, float]:
    """(parameters a token passes through, decoder linear weights): the decoder's projections with
    only the routed experts of a mixture-of-experts counted, and the LM head (embeddings cost no FLOPs)."""
    linear, _ = quantisable_linear_params(spec)
    counts = spec.param_counts()
    idle = counts.experts * (1 - spec.num_experts_per_tok / spec.num_experts) if spec.num_experts else 0.0
    return linear - idle + spec.vocab_size * spec.hidden_size, float(linear)


def compute_dtype(gpu: GpuSpec, setup: TrainerSetup) -> str:
    """The dtype the trainer's matmuls run in: fp16 where the card has no bf16 or the weights are fp16."""
    return "fp16" if not gpu.bf16 or setup.weights == "fp16" or setup.mixed_precision == "fp16" else "bf16"


def link_bytes_per_s(gpu: GpuSpec, num_nodes: int = 1) -> float:
    """One direction of the link between GPUs: NVLink within a node where the card has it, else PCIe
    (across nodes too: the network is not modelled, stated)."""
    total = gpu.nvlink_gbs if gpu.nvlink_gbs > 0 and num_nodes == 1 else gpu.pcie_gbs
    return total / 2 * GB


def decode_read_bytes(spec: ModelSpec, cap: VllmCapacity | None, four_bit_vllm: bool) -> float:
    """What one decode step reads of vLLM's weights: its weights, or for 4-bit weights the dequantised
    projections (planner.timing.phases.NF4_DEQUANT_BYTES_PER_WEIGHT) and the 16-bit rest."""
    _, linear = matmul_params(spec)
    if four_bit_vllm:
        return linear * NF4_DEQUANT_BYTES_PER_WEIGHT + (spec.param_counts().active - linear) * 2
    return float(cap.weights_bytes) if cap is not None else spec.param_counts().active * 2.0


def generate_terms(spec: ModelSpec, setup: TrainerSetup) -> dict:
    """The generation side of a StepShape without vLLM: transformers' ``generate`` on the trainer's own
    weights (module docstring) and its cache in the compute dtype (planner.memory.generate)."""
    if setup.weights == "nf4":
        read = decode_read_bytes(spec, None, True)
    else:
        read = spec.param_counts().active * float(DTYPE_BYTES.get(setup.weights, 2))
    return dict(generator="transformers", cuda_graphs=False, decode_weight_read_bytes=read,
                kv_bytes_per_token=float(kv_bytes_per_cached_token(spec, setup.compute_bytes)))


@lru_cache(maxsize=64)
def _lora_params(spec: ModelSpec, rank: int, targets: tuple[str, ...] | None) -> int:
    return lora_params(spec, rank, targets)


def trainer_terms(spec: ModelSpec, setup: TrainerSetup) -> dict:
    """The training side of a StepShape: passes, trainable parameters and their bytes."""
    full = setup.finetune == "full"
    trainable = float(spec.param_counts().active if full else _lora_params(spec, setup.lora_rank,
                                                                            setup.lora_target_modules))
    state = 2.0 if "8bit" in setup.optim else 8.0
    param = 4.0 if not full or setup.weights == "fp32" else float(DTYPE_BYTES.get(setup.weights, 2))
    _, linear = matmul_params(spec)
    return dict(trained_sequences=setup.batch_size * setup.gradient_accumulation_steps, micro_batch=setup.batch_size,
                full_finetune=full, recompute=setup.gradient_checkpointing, trainable_params=trainable,
                param_bytes=param, grad_bytes=param, state_bytes=state,
                quantised_weights=float(linear) if setup.weights == "nf4" else 0.0,
                grad_comm_bytes=trainable * 2, param_comm_bytes=trainable * 2, logprob_head=setup.logprob_head,
                head_params=float(spec.vocab_size * spec.hidden_size))


def time_assumptions(expected: int, cap: int, reward: float) -> tuple[str, ...]:
    where = "the cap (max_completion_length)" if expected >= cap else "given (expected_completion_length)"
    return (f"completions {min(expected, cap)} tokens: {where}; a wave lasts as long as its longest completion",
            f"reward functions {reward:g} s per completion",
            "efficiencies fitted on 8 Unsloth runs (T4, L4, RTX 4090, A100): other cards are extrapolated",
            "see planner/search/timing.py for what each phase reads")


def option_time(spec: ModelSpec, gpu: GpuSpec, setup: TrainerSetup, topo: Topology, completions_per_device: int,
                concurrency: int, sleep: bool, vllm: VllmCapacity | None, runtime: str = "trl",
                expected_completion_length: int | None = None,
                reward_seconds_per_completion: float = 0.0, trl_version: str | None = None) -> StepTime:
    """The predicted seconds of one optimizer step of one configuration (module docstring): the
    solver's candidates and a finished plan alike. ``concurrency``: sequences decoded at once by all
    engines together; ``completions_per_device``: the generation batch per training GPU (one
    optimizer step's worth: TRL's ``steps_per_generation = gradient_accumulation_steps``)."""
    t, s = topo, setup
    cap = s.completion_length
    expected = min(cap, expected_completion_length or cap)
    unsloth = runtime == "unsloth"
    generate = t.vllm_mode == "generate"
    # a plan's accumulation is its steps_per_generation: only vLLM's importance sampling runs the pass
    old_pass = int(trl_old_logprob_pass(trl_version, not generate, 1, 1))
    server = t.vllm_mode == "server"
    tp = (t.server_tensor_parallel_size if server else t.vllm_tensor_parallel_size) or 1
    engines = max(1, t.server_data_parallel_size if server else t.num_engines)
    sequences = completions_per_device * (t.world_size // engines if server else tp)
    peak = gpu.peak_tflops(compute_dtype(gpu, s)) * 1e12
    weights = float(vllm.weights_bytes) if vllm is not None else 0.0
    terms = trainer_terms(spec, s)
    terms["trained_sequences"] = completions_per_device
    shape = StepShape(
        matmul_params=matmul_params(spec)[0], num_layers=spec.num_layers, q_dim=spec.q_dim,
        decode_weight_read_bytes=decode_read_bytes(spec, vllm, unsloth and s.weights == "nf4"),
        kv_bytes_per_token=kv_bytes(spec, vllm.kv_cache_dtype if vllm else "auto", tp),
        peak_flops_per_s=peak, decode_peak_flops_per_s=peak * tp,
        bandwidth_bytes_per_s=gpu.memory_bandwidth_gbs * GB, host_link_bytes_per_s=gpu.pcie_gbs / 2 * GB,
        prompt_tokens=s.prompt_length, completion_tokens=expected, generation_rounds=1, sequences_per_round=sequences,
        concurrency=max(1, concurrency // engines), cuda_graphs=not (vllm is not None and vllm.enforce_eager),
        tensor_parallel_size=tp, fp32_peak_flops_per_s=gpu.peak_tflops("fp32") * 1e12,
        logprob_forwards=(1 if s.reference_logps else 0) + (0 if unsloth else old_pass),
        sleep=sleep and not unsloth, vllm_weight_bytes=weights, weight_sync_bytes=0.0 if unsloth else weights,
        weight_sync_bytes_per_s=link_bytes_per_s(gpu, t.num_nodes) if server else 0.0,
        engine=t.engine, ranks=t.world_size, link_bytes_per_s=link_bytes_per_s(gpu, t.num_nodes),
        reward_seconds_per_completion=reward_seconds_per_completion,
        completions_per_step=completions_per_device * t.world_size, **terms)
    if generate:
        shape = replace(shape, concurrency=sequences, **generate_terms(spec, s))
    return step_time(shape, assumptions=time_assumptions(expected, cap, reward_seconds_per_completion))


def plan_time(p: Any, expected_completion_length: int | None = None,
              reward_seconds_per_completion: float = 0.0, trl_version: str | None = None) -> StepTime:
    """The predicted seconds of one optimizer step of plan ``p`` (a planner.search.results.Plan, not
    imported: results imports this module), by phase (:func:`option_time`)."""
    o = p.option
    return option_time(p.model, p.gpu, p.setup, p.topology, o.completions_per_device, o.concurrency, o.sleep, p.vllm,
                       p.runtime, expected_completion_length, reward_seconds_per_completion, trl_version)


def estimate_time(e: Any, expected_completion_length: int | None = None,
                  reward_seconds_per_completion: float = 0.0, trl_version: str | None = None,
                  steps_per_generation: int | None = None) -> StepTime | None:
    """One GPU's fixed setup (``plan estimate``, a planner.search.results.Estimate): one generation
    batch of B x ``steps_per_generation`` sequences (the estimate's, TRL's rule from a ``--config``: what
    its memory models; not given, ``rollout_sequences`` or one optimizer step's B x accumulation) every
    ``steps_per_generation`` micro-steps, so accumulation / steps_per_generation generations per
    optimizer step, by colocated vLLM or, without vLLM (``use_vllm=False``), by transformers'
    ``generate``; None when the estimate models no generation (no vLLM named, ``use_vllm`` not set)."""
    s, spec, gpu, vllm = e.setup, e.model, e.gpu, e.vllm
    generate = vllm is None and e.phases is not None  # GeneratePhases: use_vllm=False
    if vllm is None and not generate:
        return None
    cap = s.completion_length
    expected = min(cap, expected_completion_length or cap)
    trained = s.batch_size * s.gradient_accumulation_steps
    if steps_per_generation:
        sequences = s.batch_size * steps_per_generation
    else:
        sequences = max(s.rollout_sequences, trained)  # one generation batch (B x steps per generation)
    # TRL's old-policy pass: vLLM's importance sampling (default on from TRL 0.23), or a generation batch
    # that outlives one step's accumulation (planner.specs.versions.trl_old_logprob_pass)
    old_pass = trl_old_logprob_pass(trl_version, not generate, s.gradient_accumulation_steps,
                                    sequences // max(1, s.batch_size))
    shape = StepShape(
        matmul_params=matmul_params(spec)[0], num_layers=spec.num_layers, q_dim=spec.q_dim,
        decode_weight_read_bytes=0.0, kv_bytes_per_token=0.0,
        peak_flops_per_s=gpu.peak_tflops(compute_dtype(gpu, s)) * 1e12, fp32_peak_flops_per_s=gpu.peak_tflops("fp32") * 1e12,
        bandwidth_bytes_per_s=gpu.memory_bandwidth_gbs * GB, host_link_bytes_per_s=gpu.pcie_gbs / 2 * GB,
        prompt_tokens=s.prompt_length, completion_tokens=expected, generation_rounds=1, sequences_per_round=sequences,
        concurrency=sequences, logprob_forwards=(1 if old_pass else 0) + (1 if s.reference_logps else 0),
        reward_seconds_per_completion=reward_seconds_per_completion, completions_per_step=trained,
        generations_per_step=trained / sequences, **trainer_terms(spec, s))
    if generate:
        shape = replace(shape, **generate_terms(spec, s))
    else:
        assert vllm is not None
        shape = replace(shape, decode_weight_read_bytes=decode_read_bytes(spec, vllm, False),
                        kv_bytes_per_token=kv_bytes(spec, vllm.kv_cache_dtype, 1),
                        concurrency=max(1, min(vllm.max_num_seqs, int(vllm.max_concurrency))),
                        cuda_graphs=not vllm.enforce_eager, sleep=bool(getattr(e.phases, "sleep_mode", False)),
                        vllm_weight_bytes=float(vllm.weights_bytes), weight_sync_bytes=float(vllm.weights_bytes))
    return step_time(shape, assumptions=time_assumptions(expected, cap, reward_seconds_per_completion))


def unsloth_estimate_time(e: Any, expected_completion_length: int | None = None,
                          reward_seconds_per_completion: float = 0.0) -> StepTime:
    """One fixed Unsloth setup (``plan estimate --runtime unsloth``, a planner.runtimes.unsloth
    UnslothEstimate): one GPU, the generation batch of batch x accumulation completions, vLLM's
    concurrency from its KV tokens (as planner.search.unsloth_solver ranks it)."""
    from ..memory.trainer import TrainerSetup

    setup = TrainerSetup(weights="nf4" if e.load_in_4bit else ("bf16" if e.gpu.bf16 else "fp16"), finetune="lora",
                         lora_rank=e.lora_rank, optim="adamw_8bit", batch_size=e.per_device_train_batch_size,
                         prompt_length=e.max_prompt_length, completion_length=e.max_completion_length,
                         gradient_accumulation_steps=e.gradient_accumulation_steps)
    seq = e.max_prompt_length + e.max_completion_length
    conc = int(min(e.max_num_seqs, e.kv_cache_tokens / seq)) if e.kv_cache_tokens else 0
    topo = Topology(1, 1, "ddp", "colocate", vllm_tensor_parallel_size=1)
    return option_time(e.model, e.gpu, setup, topo, e.per_device_train_batch_size * e.gradient_accumulation_steps,
                       conc, e.standby, e.capacity, "unsloth", expected_completion_length,
                       reward_seconds_per_completion)
