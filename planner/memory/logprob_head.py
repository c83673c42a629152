"""TRL's per-token log-prob head during the training forward/backward.

- ``fused`` (TRL with ``add_fused_lm_head``, 1.15+): ``_ChunkedLogProbFunction`` projects the
  completion positions through ``lm_head`` in tiles of ``TOKEN_CHUNK_SIZE`` (4096) tokens by
  ``_CHUNKED_LOGPROB_CHUNK_SIZE`` (32768) vocabulary columns into one reused buffer in the compute
  dtype (trl/kernels/chunked_logprob.py, trl/trainer/utils.py). The full logits never exist: the
  head costs one tile buffer plus per-token fp32 statistics (in the activations' backward working
  set). When ``lm_head`` trains (full fine-tuning), backward accumulates its gradient in fp32: V*h*4.
- The full-logits heads (TRL 0.18-1.14, ``_get_per_token_logps(_and_entropies)``; the per-release
  facts are in versions.py, ``TrlFacts.logprob_temperature`` / ``logprob_entropy``). The model
  returns ``(B, C+1, V)`` logits; TRL slices ``[:, :-1]`` to ``B x C x V`` (N logits below),
  divides by the temperature and calls ``selective_log_softmax``, whose branch is the logits' dtype:

  ``plain`` (accelerate's native AMP, the default single-process/DDP setup): ``prepare_model`` wraps
  ``forward`` in ``convert_outputs_to_fp32`` (accelerate 1.15.0 accelerator.py:1824-1835,
  utils/operations.py:901-902 ``tensor.float()``), so the logits are fp32 and the fp32 branch runs
  (0.23.0 trl/trainer/utils.py:1464-1468): ``gather`` and a per-row ``logsumexp`` over the
  divided logits, which stay saved for backward (4 B). In backward, ``gather``'s gradient is a
  full fp32 scatter (4 B), each row's ``logsumexp`` gradient is a full row (4 B over all rows)
  and ``unbind``'s backward stacks those rows into one more fp32 tensor (4 B) before any is
  freed: **16 B per logit** (PLAIN_AMP_BYTES_PER_LOGIT). The forward's peak (fp32 logits and
  their divided copy, 8 B) is lower, so the temperature kind and the no-grad entropy do not move it.
  Traced on the CPU with the real code of TRL 0.18.0, 0.23.0, 0.26.0 and 1.1.0
  (benchmarks/old_trl_head.py).
  ``plain-bf16*`` (DeepSpeed: the engine casts the model to bf16 and accelerate applies no output
  conversion; or no mixed precision over bf16 weights): the logits stay bf16 and the bf16 branch
  runs a per-row ``log_softmax`` whose outputs are saved (0.23.0 utils.py:1469-1476):
  ``plain-bf16`` (out-of-place ``logits / T``: 0.20-0.29, 1.10-1.13): the forward holds the
  divided copy and every row's log-softmax: 4 B per logit, plus the no-grad entropy's chunk
  (``entropy_from_logits``, 128 rows: its log-softmax, ``exp`` and their product, 3 x 128 x V x 2 B)
  when TRL computes the entropy (0.20+).
  ``plain-bf16-inplace`` (``logits.div_(T)``: 1.0-1.9): the in-place division on a slice of the
  model's output makes backward rebuild the whole output's gradient through ``CopySlices``:
  the stacked row gradients, the slice's zero-padded gradient, its clone and the division's
  gradient, 2 B each: 8 B per logit.
  ``plain-bf16-noentropy`` (0.18-0.19: out-of-place division, no entropy): 4 B per logit.
- ``plain-legacy``: the earlier derived figure (10 B per logit; docs/trl-grpo.md §4), kept only for
  comparison.

``use_liger_kernel=True`` (``use_liger_loss`` in TRL 0.17-0.24) replaces the head, by TRL release
(versions.py, ``TrlFacts.liger_head``). TRL then runs the backbone alone and hands the completion
positions' last hidden states ``[B, C, h]`` and ``lm_head.weight`` to a chunked loss (0.25.0
grpo_trainer.py:1719-1732); no ``[B, C, V]`` logits exist. Derived from the wheels' code, not measured:

- ``liger`` (TRL 0.17-1.13): ``LigerFusedLinearGRPOLoss``, as in the newest liger-kernel the TRL pins
  accept (all are lower bounds; 0.8.5 read; TRL 1.13 ships a copy, trl/losses/fused_linear_ppo.py:21
  "Adapted from Liger-Kernel v0.8.2"). The loss runs forward and backward at once in its forward,
  one sequence per chunk (``chunk_size=1``, liger_kernel 0.8.5 chunked_loss/grpo_loss.py:426), and
  within a sequence in tiles of 2048 tokens x 4096 vocabulary columns (fused_linear_ppo.py:9-10):
  one tile's compute-dtype product and fp32 logits, ``exp``'s shifted input, the probabilities and
  their gradient (fused_linear_ppo.py:114-120), 18 B per tile element; the chunk's fp32 hidden-state
  gradient and its cast (:96, :170), and every chunk's input gradient kept in a list, then
  concatenated (:363, :446): 2 x B*C*h in the compute dtype. A trainable head adds the fp32 weight
  gradient (:98), its cast (:171) and the loss's accumulator (``zeros_like(weight)``, :255).
  These releases still score the completions outside the loss with the full-logits path (the
  no-grad ``_get_per_token_logps_and_entropies`` over ``per_device_train_batch_size`` sequences,
  1.12.0 grpo_trainer.py:2523 and :2661-2672): the old-policy log-probs whenever vLLM generates with
  ``vllm_importance_sampling_correction`` (default True from 0.23.0, 0.23.0 grpo_config.py:601 and
  grpo_trainer.py:1371-1374), the reference model's with ``beta != 0`` (default 0.04 in 0.17-0.19,
  0.18.0 grpo_config.py:391), or an accumulation that is not ``steps_per_generation``. That pass holds
  the fp32 logits and their divided copy, 8 B per logit of ``B x C x V`` (the full-logits forward's
  peak, above); it never coexists with the loss, so the head is the larger of the two (counted in
  0.20-0.22 too, where it needs beta != 0: the safe side).
- ``liger-seq`` (liger-kernel before 0.8.0, chosen with ``--logprob-head liger-seq``): one
  sequence's full ``[C, V]`` logits per chunk (liger_kernel 0.7.0 fused_linear_ppo.py:361-373:
  ``matmul`` in the compute dtype, ``log_softmax(logits.float())``) under ``torch.func.grad_and_value``
  (:126-149, ``argnums=(0, 1)``: the weight always): the logits (2 B), fp32 log-probs (4 B), their
  gradient (4 B) and the fp32 logits' gradient (4 B): 14 B per logit of one sequence; the weight gradient of every chunk and its
  accumulator are built whether or not the head trains (:102, :137, :175), 2 x V*h in the compute
  dtype, plus the input gradients as above; the scoring pass as for ``liger``.
- ``chunked`` (TRL 1.14): TRL's own ``_ChunkedLogProbFunction`` over the micro-batch's N = B*C
  completion tokens (1.14.2 trl/trainer/grpo_trainer.py:1398-1475), tiles of 2048 tokens x 8192
  columns (utils.py:1457, grpo_trainer.py:123) with the same 18 B per tile element (utils.py:1587-1640),
  the fp32 hidden-state gradient of all N tokens and its cast (6 B x N*h); a trainable head adds
  its fp32 gradient and the cast (utils.py:1580-1582, 1657).
- From TRL 1.15 ``use_liger_kernel`` only patches the layers with Liger's kernels and keeps the
  fused head (1.15.0 grpo_trainer.py:1025-1040): the head is ``fused``.
"""

from __future__ import annotations

from ..specs.model import ModelSpec

LOGPROB_HEADS = ("fused", "plain", "plain-bf16", "plain-bf16-inplace", "plain-bf16-noentropy", "plain-legacy",
                 "liger", "liger-seq", "chunked")
LIGER_HEADS = ("liger", "liger-seq", "chunked")  # what use_liger_kernel selects before TRL 1.15
FUSED_TOKEN_TILE = 4096
FUSED_VOCAB_TILE = 32768
PLAIN_AMP_BYTES_PER_LOGIT = 16  # fp32 branch backward: saved logits + gather grad + row grads + stacked
PLAIN_BF16_BYTES_PER_LOGIT = 4  # bf16 branch forward: divided copy + saved per-row log-softmax
PLAIN_BF16_INPLACE_BYTES_PER_LOGIT = 8  # bf16 branch, div_: CopySlices backward over the model output
LEGACY_BYTES_PER_LOGIT = 10
ENTROPY_CHUNK_ROWS = 128  # entropy_from_logits(chunk_size=128) (0.23.0 trl/trainer/utils.py:1480)
ENTROPY_CHUNK_TEMPORARIES = 3  # log_softmax(chunk), exp(logps), exp(logps) * logps
LIGER_TOKEN_TILE = 2048  # _SELECTIVE_LOGPROB_SEQ_CHUNK_SIZE (liger_kernel 0.8.5 chunked_loss/fused_linear_ppo.py:10)
LIGER_VOCAB_TILE = 4096  # _SELECTIVE_LOGPROB_VOCAB_CHUNK_SIZE (fused_linear_ppo.py:9)
CHUNKED_TOKEN_TILE = 2048  # _CHUNKED_LOGPROB_TOKEN_CHUNK_SIZE (TRL 1.14.2 trl/trainer/utils.py:1457)
CHUNKED_VOCAB_TILE = 8192  # _CHUNKED_LOGPROB_CHUNK_SIZE (TRL 1.14.2 trl/trainer/grpo_trainer.py:123)
# one tile element in backward: compute-dtype product 2, fp32 logits 4, exp's shifted input 4, probs 4, grad 4
TILE_BYTES_PER_ELEMENT = 18
LIGER_SEQ_BYTES_PER_LOGIT = 14  # bf16 logits 2 + fp32 log_softmax 4 + its gradient 4 + the fp32 logits' gradient 4
SCORING_BYTES_PER_LOGIT = 8  # the no-grad full-logits pass: fp32 logits + their divided copy


def fused_head_bytes(spec: ModelSpec, completion_tokens: int, compute_bytes: int = 2,
                     lm_head_trainable: bool = False) -> int:
    """Bytes alive during the fused head's backward: the tile buffer, the fp32 gradient of the
    completion hidden states (``grad_hidden``, 4*h per token) and their compacted bf16 copy
    (``hidden_states[mask]``), plus the fp32 head-weight gradient when ``lm_head`` trains."""
    # the buffer is TOKEN_CHUNK_SIZE x chunk_size whatever the vocabulary (trl/kernels/chunked_logprob.py:347
    # and :413, TRL 1.16.0): a model with fewer than 32768 tokens still gets 32768 columns
    tile = min(completion_tokens, FUSED_TOKEN_TILE) * FUSED_VOCAB_TILE * compute_bytes
    per_token = (4 + compute_bytes) * spec.hidden_size
    # fp32 accumulator, then the bf16 .grad of the head (or tied embedding) weight
    head_grad = spec.vocab_size * spec.hidden_size * (4 + compute_bytes) if lm_head_trainable else 0
    return tile + completion_tokens * per_token + head_grad


def completion_logits(spec: ModelSpec, batch_size: int, completion_length: int) -> int:
    """Logits TRL scores per micro-batch: ``B x C x V`` (the model's ``C+1`` positions sliced ``[:, :-1]``)."""
    return batch_size * completion_length * spec.vocab_size


def plain_amp_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int) -> int:
    """Full-logits head under accelerate's native AMP (fp32 logits, ``selective_log_softmax``'s fp32
    branch): the backward's 16 B per logit (module docstring)."""
    return completion_logits(spec, batch_size, completion_length) * PLAIN_AMP_BYTES_PER_LOGIT


def entropy_chunk_bytes(spec: ModelSpec, batch_size: int, completion_length: int, logit_bytes: int = 2) -> int:
    """``entropy_from_logits`` under no_grad: one chunk of up to 128 rows, three full-vocabulary temporaries."""
    rows = min(ENTROPY_CHUNK_ROWS, batch_size * completion_length)
    return ENTROPY_CHUNK_TEMPORARIES * rows * spec.vocab_size * logit_bytes


def plain_bf16_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int, entropy: bool = True) -> int:
    """Full-logits head with bf16 logits (DeepSpeed, no output conversion), ``logits / T`` out of place:
    the forward's divided copy and saved per-row log-softmax (4 B per logit), plus the entropy chunk."""
    n = completion_logits(spec, batch_size, completion_length)
    chunk = entropy_chunk_bytes(spec, batch_size, completion_length) if entropy else 0
    return n * PLAIN_BF16_BYTES_PER_LOGIT + chunk


def plain_bf16_inplace_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int) -> int:
    """Full-logits head with bf16 logits and ``logits.div_(T)`` (TRL 1.0-1.9): the ``CopySlices``
    backward over the model's output, 8 B per logit."""
    return completion_logits(spec, batch_size, completion_length) * PLAIN_BF16_INPLACE_BYTES_PER_LOGIT


def plain_legacy_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int) -> int:
    """The earlier derived figure: ``batch x (C+1) x vocab`` logits at ~10 B each (not measured)."""
    return batch_size * (completion_length + 1) * spec.vocab_size * LEGACY_BYTES_PER_LOGIT


def plain_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int, head: str = "plain") -> int:
    """Peak bytes of one full-logits head kind for one micro-batch (the lm_head weight gradient excluded)."""
    if head == "plain":
        return plain_amp_head_bytes(spec, batch_size, completion_length)
    if head == "plain-bf16":
        return plain_bf16_head_bytes(spec, batch_size, completion_length, entropy=True)
    if head == "plain-bf16-noentropy":
        return plain_bf16_head_bytes(spec, batch_size, completion_length, entropy=False)
    if head == "plain-bf16-inplace":
        return plain_bf16_inplace_head_bytes(spec, batch_size, completion_length)
    if head == "plain-legacy":
        return plain_legacy_head_bytes(spec, batch_size, completion_length)
    raise ValueError(f"unknown full-logits head {head!r}")


def scoring_pass_bytes(spec: ModelSpec, batch_size: int, completion_length: int) -> int:
    """The no-grad full-logits scoring pass TRL 0.17-1.13 runs beside the Liger loss: 8 B per logit."""
    return completion_logits(spec, batch_size, completion_length) * SCORING_BYTES_PER_LOGIT


def liger_loss_bytes(spec: ModelSpec, batch_size: int, completion_length: int, compute_bytes: int = 2,
                     lm_head_trainable: bool = False) -> int:
    """``LigerFusedLinearGRPOLoss`` (liger-kernel >= 0.8.0): one tile, one sequence's hidden-state
    gradient (fp32 and its cast), every sequence's input gradient twice (the list and its
    concatenation), and a trainable head's fp32 gradient, cast and accumulator (module docstring)."""
    h, C = spec.hidden_size, completion_length
    tile = min(C, LIGER_TOKEN_TILE) * LIGER_VOCAB_TILE * TILE_BYTES_PER_ELEMENT
    chunk = C * h * (4 + compute_bytes)
    inputs = 2 * batch_size * C * h * compute_bytes
    head = spec.vocab_size * h * (4 + 2 * compute_bytes) if lm_head_trainable else 0
    return tile + chunk + inputs + head


def liger_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int, compute_bytes: int = 2,
                     lm_head_trainable: bool = False) -> int:
    """The ``liger`` head: the larger of the loss (:func:`liger_loss_bytes`) and the scoring pass."""
    return max(liger_loss_bytes(spec, batch_size, completion_length, compute_bytes, lm_head_trainable),
               scoring_pass_bytes(spec, batch_size, completion_length))


def liger_seq_loss_bytes(spec: ModelSpec, batch_size: int, completion_length: int, compute_bytes: int = 2) -> int:
    """liger-kernel before 0.8.0: one sequence's ``[C, V]`` logits at 14 B each, the weight gradient of
    the chunk and its accumulator (built even for a frozen head) and the input gradients twice."""
    h, C = spec.hidden_size, completion_length
    logits = C * spec.vocab_size * LIGER_SEQ_BYTES_PER_LOGIT
    head = 2 * spec.vocab_size * h * compute_bytes
    return logits + head + 2 * batch_size * C * h * compute_bytes


def chunked_head_bytes(spec: ModelSpec, batch_size: int, completion_length: int, compute_bytes: int = 2,
                       lm_head_trainable: bool = False) -> int:
    """TRL 1.14's ``_ChunkedLogProbFunction`` over the micro-batch's ``B x C`` tokens: one tile, the
    fp32 hidden-state gradient of every token and its cast, a trainable head's fp32 gradient and cast."""
    n = batch_size * completion_length
    tile = min(n, CHUNKED_TOKEN_TILE) * CHUNKED_VOCAB_TILE * TILE_BYTES_PER_ELEMENT
    head = spec.vocab_size * spec.hidden_size * (4 + compute_bytes) if lm_head_trainable else 0
    return tile + n * spec.hidden_size * (4 + compute_bytes) + head


def trl_logprob_head(fused_lm_head: bool, temperature: str, entropy: bool, engine: str = "amp",
                     liger: str | None = None) -> str:
    """The head a TRL release's facts give: its Liger head (``liger``: ``TrlFacts.liger_head``) when
    ``use_liger_kernel`` is on and the release has one; else ``fused``; else ``plain`` under
    accelerate's native AMP (``engine="amp"``), or the bf16 variant under DeepSpeed (``engine="deepspeed"``)."""
    if liger:
        return liger
    if fused_lm_head:
        return "fused"
    if engine == "amp":
        return "plain"
    if engine != "deepspeed":
        raise ValueError(f"unknown engine {engine!r}")
    if temperature == "inplace":
        return "plain-bf16-inplace"
    return "plain-bf16" if entropy else "plain-bf16-noentropy"


def logprob_head_bytes(spec: ModelSpec, head: str, batch_size: int, completion_length: int,
                       compute_bytes: int = 2, lm_head_trainable: bool = False) -> int:
    """Peak bytes of the log-prob head for one micro-batch, by head kind."""
    if head == "fused":
        return fused_head_bytes(spec, batch_size * completion_length, compute_bytes, lm_head_trainable)
    if head == "liger":
        return liger_head_bytes(spec, batch_size, completion_length, compute_bytes, lm_head_trainable)
    if head == "liger-seq":
        return max(liger_seq_loss_bytes(spec, batch_size, completion_length, compute_bytes),
                   scoring_pass_bytes(spec, batch_size, completion_length))
    if head == "chunked":
        return chunked_head_bytes(spec, batch_size, completion_length, compute_bytes, lm_head_trainable)
    if head in LOGPROB_HEADS:
        # nn.Linear's backward writes the weight gradient in the compute dtype (the new .grad)
        grad = spec.vocab_size * spec.hidden_size * compute_bytes if lm_head_trainable else 0
        return plain_head_bytes(spec, batch_size, completion_length, head) + grad
    raise ValueError(f"unknown log-prob head {head!r}")
