"""One GRPO step's phases as seconds: small pure functions of counts, bytes and rates.

Every function takes plain numbers (units in the names) and returns seconds; nothing here knows a
plan, a model or a GPU (planner.timing.step composes them, planner.search.timing reads a plan into
them). Two kinds of phase:

- compute-bound (prefill, the log-prob and training passes): FLOPs / (dense peak x ``mfu``), about
  ``2 N`` FLOPs per token per forward through ``N`` matmul parameters (Kaplan et al. 2020, the
  6N rule: 2N forward, 4N backward), plus attention's ``4 x layers x context x q_dim`` per token;
- bandwidth-bound (decode, the optimizer step, 4-bit dequantisation, sleep/wake, weight sync,
  collectives): bytes moved / (bandwidth x ``bandwidth_efficiency``), the roofline's other side.

The efficiencies are fitted (planner.timing.efficiency, benchmarks/step_time.py); everything else is
counting.
"""

from __future__ import annotations

import math

# bitsandbytes' 4-bit matmul for more than one token dequantises the whole weight to 16 bits and
# multiplies (bitsandbytes autograd/_functions.py matmul_4bit: the gemv_4bit fast path only when the
# input is one token): read 0.5 B/weight, write 2 B, read them again: 4.5 B per weight per matmul.
NF4_DEQUANT_BYTES_PER_WEIGHT = 4.5
# An eager (no CUDA graph) decode step launches every layer's kernels from Python: about ten kernels
# of ~5 us each per layer (stated order of magnitude, not fitted). CUDA graphs replay them at once.
EAGER_LAUNCH_SECONDS_PER_LAYER = 5e-5
# transformers' eager ``generate`` (no vLLM): the host's seconds per decode step, per decoder layer and
# per step (the generation loop, embedding, head, sampling), measured by benchmarks/generate_overhead.py
# (results/generate_overhead.txt: a tiny random Qwen2 on the CPU, torch 2.13, transformers 5.24; a lower
# bound on a GPU, where every op also pays its CUDA launch). The GPU runs behind the host, so a step takes
# the larger of the two (:func:`generate_wave_seconds`).
GENERATE_SECONDS_PER_LAYER = 2.6e-4
GENERATE_SECONDS_PER_STEP = 3.5e-4
# One small all-reduce's latency (NCCL ring on one node, stated order of magnitude, not fitted).
ALLREDUCE_LATENCY_SECONDS = 1e-5


def compute_seconds(flops: float, peak_flops_per_s: float, mfu: float) -> float:
    """Seconds for ``flops`` at ``mfu`` of the dense peak."""
    return flops / (peak_flops_per_s * mfu) if flops > 0 else 0.0


def moved_seconds(nbytes: float, bytes_per_s: float, efficiency: float) -> float:
    """Seconds to move ``nbytes`` at ``efficiency`` of a bandwidth."""
    return nbytes / (bytes_per_s * efficiency) if nbytes > 0 else 0.0


def forward_flops_per_token(matmul_params: float, num_layers: int, q_dim: int, context_tokens: float) -> float:
    """One forward's FLOPs per token: ``2 N`` through the matmuls plus attention's scores and values
    (``2 x 2 x context x q_dim`` per layer; a causal mask halves the mean context, the caller's)."""
    return 2.0 * matmul_params + 4.0 * num_layers * context_tokens * q_dim


def prefill_seconds(sequences: int, prompt_tokens: float, flops_per_token: float,
                    peak_flops_per_s: float, mfu: float) -> float:
    """The prompts' prefill: compute-bound, every prompt token once through the model."""
    return compute_seconds(sequences * prompt_tokens * flops_per_token, peak_flops_per_s, mfu)


def decode_wave_seconds(batch: int, completion_tokens: float, prompt_tokens: float, weight_read_bytes: float,
                        kv_bytes_per_token: float, flops_per_token: float, bandwidth_bytes_per_s: float,
                        peak_flops_per_s: float, bandwidth_efficiency: float, mfu: float,
                        step_overhead_seconds: float = 0.0) -> float:
    """One wave of ``batch`` sequences decoding ``completion_tokens`` tokens each: every token step
    reads the weights once and the running batch's KV cache (``batch x (prompt + t)`` tokens at step
    t), the larger of that read and the step's compute (a roofline per wave), plus a fixed overhead
    per step (eager launches, tensor-parallel all-reduces)."""
    steps = completion_tokens
    kv_tokens_read = batch * (steps * prompt_tokens + steps * steps / 2.0)
    read = moved_seconds(steps * weight_read_bytes + kv_tokens_read * kv_bytes_per_token,
                         bandwidth_bytes_per_s, bandwidth_efficiency)
    compute = compute_seconds(steps * batch * flops_per_token, peak_flops_per_s, mfu)
    return max(read, compute) + steps * step_overhead_seconds


def generate_wave_seconds(batch: int, completion_tokens: float, prompt_tokens: float, weight_read_bytes: float,
                          kv_bytes_per_token: float, flops_per_token: float, bandwidth_bytes_per_s: float,
                          peak_flops_per_s: float, bandwidth_efficiency: float, mfu: float,
                          num_layers: int) -> float:
    """transformers' eager ``generate`` of ``batch`` sequences at once (TRL without vLLM: no waves, no
    CUDA graphs): per token step the GPU reads the weights and the batch's cache as in
    :func:`decode_wave_seconds` (no fixed engine cost), while the host launches every layer's ops
    one after the other (:data:`GENERATE_SECONDS_PER_LAYER`, :data:`GENERATE_SECONDS_PER_STEP`); the
    GPU runs behind the host, so the wave takes the larger of the two."""
    gpu = decode_wave_seconds(batch, completion_tokens, prompt_tokens, weight_read_bytes, kv_bytes_per_token,
                              flops_per_token, bandwidth_bytes_per_s, peak_flops_per_s, bandwidth_efficiency, mfu)
    host = completion_tokens * (num_layers * GENERATE_SECONDS_PER_LAYER + GENERATE_SECONDS_PER_STEP)
    return max(gpu, host) if batch > 0 else 0.0


def wave_sizes(sequences: int, concurrency: int) -> list[int]:
    """The batches vLLM decodes one after the other: ``concurrency`` at a time, the rest last."""
    if sequences <= 0:
        return []
    per = max(1, min(sequences, concurrency)) if concurrency > 0 else sequences
    full, rest = divmod(sequences, per)
    return [per] * full + ([rest] if rest else [])


def eager_step_seconds(num_layers: int, cuda_graphs: bool) -> float:
    """The launch overhead of one decode step: none under CUDA graphs, else per layer."""
    return 0.0 if cuda_graphs else num_layers * EAGER_LAUNCH_SECONDS_PER_LAYER


def tp_step_seconds(num_layers: int, tensor_parallel_size: int) -> float:
    """Tensor parallelism's two all-reduces per layer per decode step (latency-bound at decode sizes)."""
    return 0.0 if tensor_parallel_size <= 1 else 2 * num_layers * ALLREDUCE_LATENCY_SECONDS


def training_flops(tokens: float, flops_per_token: float, full_finetune: bool, recompute: bool,
                   extra_forwards: int) -> float:
    """One optimizer step's forward and backward over ``tokens``: a forward (2N), a backward of 4N for
    full fine-tuning (activation and weight gradients) or 2N for LoRA (activation gradients only: the
    frozen weights get none; the adapters' are negligible), one more forward when checkpointing
    recomputes, and ``extra_forwards`` log-prob passes (the reference model's, the old policy's)."""
    backward = 2.0 if full_finetune else 1.0
    forwards = 1 + (1 if recompute else 0) + extra_forwards
    return tokens * flops_per_token * (forwards + backward)


LIGER_HEADS = ("liger", "chunked", "liger-seq")  # planner.memory.logprob_head.LIGER_HEADS (the layers below)


def head_flops(head: str, tokens: float, head_params: float, trainable: bool) -> tuple[float, float]:
    """The LM head's forward and backward over ``tokens`` completion tokens when a chunked loss takes
    it over (``use_liger_kernel``; planner.memory.logprob_head), as ``(FLOPs in the compute dtype, FLOPs
    in fp32)``; ``2 x tokens x head_params`` per matmul. Read from the code, not measured:

    - ``liger-seq`` (liger-kernel < 0.8): ``torch.func.grad_and_value`` per sequence (0.7.0
      chunked_loss/fused_linear_ppo.py:126-149, ``argnums=(0, 1)``): the forward, the input gradient and
      the weight gradient, trainable or not, in the compute dtype: ``6 x tokens x h x V``, no more;
    - ``liger`` (liger-kernel >= 0.8, TRL 0.17-1.13) and ``chunked`` (TRL 1.14): the forward keeps only
      the log-normaliser and the backward recomputes each tile's logits (liger_kernel 0.8.5
      fused_linear_ppo.py:49 and :114; TRL 1.14.0 utils.py:1610), both in the compute dtype; then the
      input gradient, and the weight gradient when the head trains, as fp32 matmuls of fp32 tiles
      (``grad_logits @ weight.float()``: 0.8.5 :127 and :129; 1.14.0 utils.py:1649 and :1651): ``4 x
      tokens x h x V`` at the compute dtype's peak and ``2`` or ``4 x tokens x h x V`` at fp32's;
    - any other head (``fused``, ``plain``): none here; the 6N rule over every token counts it (TRL 1.16's
      fused head also recomputes its tiles and accumulates the gradients in fp32 on tensor cores,
      trl/kernels/chunked_logprob.py:52-62 and :425: the 6N rule's passes with checkpointing)."""
    per = 2.0 * tokens * head_params
    if head == "liger-seq":
        return 3 * per, 0.0
    if head in ("liger", "chunked"):
        return 2 * per, (2 if trainable else 1) * per
    return 0.0, 0.0


def dequant_seconds(matmul_passes: int, quantised_weights: float, bandwidth_bytes_per_s: float,
                    bandwidth_efficiency: float) -> float:
    """4-bit weights dequantised once per matmul pass (:data:`NF4_DEQUANT_BYTES_PER_WEIGHT`)."""
    return moved_seconds(matmul_passes * quantised_weights * NF4_DEQUANT_BYTES_PER_WEIGHT,
                         bandwidth_bytes_per_s, bandwidth_efficiency)


def optimizer_seconds(trainable_params: float, param_bytes: float, grad_bytes: float, state_bytes: float,
                      bandwidth_bytes_per_s: float, bandwidth_efficiency: float) -> float:
    """The optimizer step: bandwidth over the trainable parameters, their gradients and states (read
    the parameter, gradient and states, write the parameter and states)."""
    per_param = 2 * param_bytes + grad_bytes + 2 * state_bytes
    return moved_seconds(trainable_params * per_param, bandwidth_bytes_per_s, bandwidth_efficiency)


def sleep_wake_seconds(vllm_weight_bytes: float, host_link_bytes_per_s: float) -> float:
    """vLLM's sleep and wake-up once per generation: its weights out to host memory and back over
    the host link (sleep level 1; the KV cache is freed and re-mapped, not copied)."""
    return 2 * vllm_weight_bytes / host_link_bytes_per_s if vllm_weight_bytes > 0 else 0.0


def weight_sync_seconds(weight_bytes: float, bytes_per_s: float, efficiency: float = 1.0) -> float:
    """The trainer's weights loaded into vLLM once per generation (a device copy when colocated,
    NCCL to a server)."""
    return moved_seconds(weight_bytes, bytes_per_s, efficiency)


def ring_allreduce_seconds(nbytes: float, ranks: int, link_bytes_per_s: float) -> float:
    """A ring all-reduce (or reduce-scatter + all-gather): ``2 (n-1)/n x bytes`` over one direction."""
    return 0.0 if ranks <= 1 else 2 * (ranks - 1) / ranks * nbytes / link_bytes_per_s


def ring_allgather_seconds(nbytes: float, ranks: int, link_bytes_per_s: float) -> float:
    """A ring all-gather or reduce-scatter: ``(n-1)/n x bytes`` over one direction."""
    return 0.0 if ranks <= 1 else (ranks - 1) / ranks * nbytes / link_bytes_per_s


def engine_comm_seconds(engine: str, ranks: int, grad_bytes: float, param_bytes: float,
                        micro_batches: int, link_bytes_per_s: float) -> float:
    """Data-parallel communication per optimizer step: DDP, ZeRO-1 and ZeRO-2 reduce the gradients
    once (a ring all-reduce's volume); ZeRO-3 / FSDP (full sharding) also gather the parameters for every micro-batch's
    forward and backward (two all-gathers each)."""
    if ranks <= 1:
        return 0.0
    t = ring_allreduce_seconds(grad_bytes, ranks, link_bytes_per_s)
    if engine in ("zero3", "fsdp"):
        t += 2 * micro_batches * ring_allgather_seconds(param_bytes, ranks, link_bytes_per_s)
    return t


def reward_seconds(completions: int, seconds_per_completion: float) -> float:
    """The reward functions, one completion after the other."""
    return completions * max(0.0, seconds_per_completion)


def per_hour(items: float, seconds: float) -> float:
    """``items`` per ``seconds`` as a rate per hour (0 when no time is known)."""
    return items * 3600.0 / seconds if seconds > 0 and math.isfinite(seconds) else 0.0
