"""One GRPO optimizer step's time, phase by phase: :func:`step_time` composes planner.timing.phases.

:class:`StepShape` is everything the model reads, as plain numbers (planner.search.timing reads a
plan into one; benchmarks/step_time.py builds one per real run). The phases, in the order a step
runs them:

- ``generation``: per generation round, the prompts' prefill (compute-bound) and the decode waves
  (bandwidth-bound: each token step reads the weights and the running batch's KV cache; more
  sequences than the engine's concurrency decode in several waves; eager mode adds launch overhead);
  without vLLM (``generator="transformers"``) the whole generation batch at once in transformers'
  eager ``generate``, bounded by the host's per-layer launches (planner.timing.phases.generate_wave_seconds);
- ``reward``: the reward functions' seconds per completion;
- ``sleep_wake``, ``weight_sync``: vLLM's sleep mode and the weights loaded into it;
- ``logprob``: the reference / old-policy forward passes (when GRPO computes them);
- ``training``: forward and backward (and the recompute of checkpointing) of every trained token,
  plus 4-bit dequantisation per matmul pass;
- ``optimizer``: bandwidth over the trainable parameters and their states;
- ``communication``: DDP/ZeRO gradient reduction and ZeRO-3 parameter gathers over the links.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import phases as ph
from .efficiency import FITTED, Efficiency


@dataclass(frozen=True)
class StepShape:
    """One optimizer step of one training GPU, as numbers (per device unless said otherwise)."""

    # the model
    matmul_params: float  # parameters a token passes through (active experts only; not embeddings)
    num_layers: int
    q_dim: int
    quantised_weights: float  # weights stored in 4 bits (dequantised per matmul); 0 when none
    decode_weight_read_bytes: float  # what one decode step reads of vLLM's weights
    kv_bytes_per_token: float
    # the GPU
    peak_flops_per_s: float  # the trainer's compute dtype
    bandwidth_bytes_per_s: float
    host_link_bytes_per_s: float  # PCIe, one direction
    # generation
    prompt_tokens: float
    completion_tokens: float  # the expected completion length (a wave lasts as long as its longest)
    generation_rounds: int  # generate calls per optimizer step
    sequences_per_round: int
    concurrency: int  # sequences the engine decodes at once
    cuda_graphs: bool = True
    tensor_parallel_size: int = 1
    decode_peak_flops_per_s: float = 0.0  # 0: the trainer's
    generator: str = "vllm"  # vllm | transformers (use_vllm=False: eager generate of the whole batch at once)
    # training
    trained_sequences: int = 0  # sequences per optimizer step (all micro-batches)
    micro_batch: int = 1
    full_finetune: bool = False
    recompute: bool = True
    logprob_forwards: int = 0  # reference and old-policy passes
    trainable_params: float = 0.0
    param_bytes: float = 2.0
    grad_bytes: float = 2.0
    state_bytes: float = 8.0
    logprob_head: str = "fused"  # a Liger head (liger, chunked, liger-seq) replaces the head's 6N share
    head_params: float = 0.0  # the LM head's vocab x hidden (counted in matmul_params)
    fp32_peak_flops_per_s: float = 0.0  # the fp32 gradient matmuls of the liger / chunked heads (0: the compute dtype's)
    # vLLM hand-over
    sleep: bool = False
    vllm_weight_bytes: float = 0.0  # moved out and back by sleep mode
    weight_sync_bytes: float = 0.0  # loaded into vLLM per generation (0: shared, Unsloth)
    weight_sync_bytes_per_s: float = 0.0  # 0: the memory bandwidth (a device copy)
    # data parallelism
    engine: str = "ddp"
    ranks: int = 1
    link_bytes_per_s: float = 0.0  # one direction between training GPUs
    grad_comm_bytes: float = 0.0
    param_comm_bytes: float = 0.0
    # the rest
    reward_seconds_per_completion: float = 0.0
    completions_per_step: int = 0  # all GPUs, for the rate
    generations_per_step: float = 1.0  # generation batches per optimizer step (TRL: GA / steps_per_generation)


@dataclass(frozen=True)
class StepTime:
    """The predicted seconds of one optimizer step and of each phase (the phases sum to the step)."""

    phases: dict[str, float]
    completions_per_step: int
    efficiency: Efficiency
    assumptions: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def step_seconds(self) -> float:
        return sum(self.phases.values())

    @property
    def completions_per_hour(self) -> float:
        return ph.per_hour(self.completions_per_step, self.step_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"step_seconds": round(self.step_seconds, 3),
                "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "completions_per_step": self.completions_per_step,
                "completions_per_hour": round(self.completions_per_hour, 1),
                "efficiency": {"mfu": self.efficiency.mfu,
                               "bandwidth_efficiency": self.efficiency.bandwidth_efficiency,
                               "decode_step_seconds": self.efficiency.decode_step_seconds,
                               "source": self.efficiency.source},
                "assumptions": list(self.assumptions), **self.detail}


def flops_per_token(s: StepShape, context_tokens: float) -> float:
    return ph.forward_flops_per_token(s.matmul_params, s.num_layers, s.q_dim, context_tokens)


def generation_seconds(s: StepShape, eff: Efficiency) -> float:
    """Every generation round's prefill and decode waves (vLLM), or its prefill and one eager
    ``generate`` of the whole batch (transformers)."""
    decode_peak = s.decode_peak_flops_per_s or s.peak_flops_per_s
    prefill_fpt = flops_per_token(s, s.prompt_tokens / 2)
    decode_fpt = flops_per_token(s, s.prompt_tokens + s.completion_tokens / 2)
    overhead = (eff.decode_step_seconds + ph.eager_step_seconds(s.num_layers, s.cuda_graphs)
                + ph.tp_step_seconds(s.num_layers, s.tensor_parallel_size))
    per_round = ph.prefill_seconds(s.sequences_per_round, s.prompt_tokens, prefill_fpt, decode_peak, eff.mfu)
    if s.generator == "transformers":
        return s.generation_rounds * (per_round + ph.generate_wave_seconds(
            s.sequences_per_round, s.completion_tokens, s.prompt_tokens, s.decode_weight_read_bytes,
            s.kv_bytes_per_token, decode_fpt, s.bandwidth_bytes_per_s, decode_peak, eff.bandwidth_efficiency,
            eff.mfu, s.num_layers))
    for batch in ph.wave_sizes(s.sequences_per_round, s.concurrency):
        per_round += ph.decode_wave_seconds(batch, s.completion_tokens, s.prompt_tokens, s.decode_weight_read_bytes,
                                            s.kv_bytes_per_token, decode_fpt, s.bandwidth_bytes_per_s, decode_peak,
                                            eff.bandwidth_efficiency, eff.mfu, overhead)
    return s.generation_rounds * per_round


def head_seconds(s: StepShape, eff: Efficiency, tokens: float) -> float:
    """A Liger head's time less the head's share the 6N rule counted over all ``tokens`` (0 for the
    other heads): the chunked loss over the completion tokens (planner.timing.phases.head_flops)."""
    if s.logprob_head not in ph.LIGER_HEADS or s.head_params <= 0:
        return 0.0
    counted = ph.training_flops(tokens, 2.0 * s.head_params, s.full_finetune, s.recompute, 0)
    low, fp32 = ph.head_flops(s.logprob_head, s.trained_sequences * s.completion_tokens, s.head_params,
                              s.full_finetune)
    return ((low - counted) / (s.peak_flops_per_s * eff.mfu)  # may be negative: the rule counted more
            + ph.compute_seconds(fp32, s.fp32_peak_flops_per_s or s.peak_flops_per_s, eff.mfu))


def training_phases(s: StepShape, eff: Efficiency) -> dict[str, float]:
    """The log-prob passes, the forward and backward (with recompute and 4-bit dequantisation), the
    optimizer step and the data-parallel communication."""
    tokens = s.trained_sequences * (s.prompt_tokens + s.completion_tokens)
    fpt = flops_per_token(s, (s.prompt_tokens + s.completion_tokens) / 2)
    micro_batches = max(1, -(-s.trained_sequences // max(1, s.micro_batch)))
    logprob = ph.compute_seconds(tokens * fpt * s.logprob_forwards, s.peak_flops_per_s, eff.mfu)
    train = ph.compute_seconds(ph.training_flops(tokens, fpt, s.full_finetune, s.recompute, 0),
                               s.peak_flops_per_s, eff.mfu)
    train += head_seconds(s, eff, tokens)
    train_passes = 1 + (1 if s.recompute else 0) + 1  # forward, recompute, backward (activation grads)
    logprob += ph.dequant_seconds(micro_batches * s.logprob_forwards, s.quantised_weights,
                                  s.bandwidth_bytes_per_s, eff.bandwidth_efficiency)
    train += ph.dequant_seconds(micro_batches * train_passes, s.quantised_weights,
                                s.bandwidth_bytes_per_s, eff.bandwidth_efficiency)
    link = s.link_bytes_per_s or s.host_link_bytes_per_s
    return {"logprob": logprob, "training": train,
            "optimizer": ph.optimizer_seconds(s.trainable_params, s.param_bytes, s.grad_bytes, s.state_bytes,
                                              s.bandwidth_bytes_per_s, eff.bandwidth_efficiency),
            "communication": ph.engine_comm_seconds(s.engine, s.ranks, s.grad_comm_bytes, s.param_comm_bytes,
                                                    micro_batches, link)}


def step_time(s: StepShape, eff: Efficiency = FITTED, assumptions: tuple[str, ...] = ()) -> StepTime:
    """The seconds of one optimizer step, by phase (module docstring). Generation-side phases run
    ``generations_per_step`` times per optimizer step (a generation batch may feed several steps)."""
    g = s.generations_per_step
    sync_rate = s.weight_sync_bytes_per_s or s.bandwidth_bytes_per_s * eff.bandwidth_efficiency
    phases = {"generation": g * generation_seconds(s, eff),
              "reward": g * ph.reward_seconds(s.generation_rounds * s.sequences_per_round,
                                              s.reward_seconds_per_completion),
              "sleep_wake": g * (ph.sleep_wake_seconds(s.vllm_weight_bytes, s.host_link_bytes_per_s)
                                 if s.sleep else 0.0),
              "weight_sync": g * ph.weight_sync_seconds(s.weight_sync_bytes, sync_rate)}
    phases.update(training_phases(s, eff))
    return StepTime(phases=phases, completions_per_step=s.completions_per_step, efficiency=eff,
                    assumptions=assumptions)
