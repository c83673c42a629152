"""Weights held by the trainer, per storage format.

Facts (docs/anchors.md §5, bitsandbytes ``functional.quantize_4bit`` / ``Params4bit``):
- bf16/fp16: 2 bytes per parameter, fp32: 4.
- NF4 (bitsandbytes ``Linear4bit``, blocksize 64): 0.5 byte per weight + one fp32 absmax per 64
  weights; with double quantisation (HF ``bnb_4bit_use_double_quant``, the QLoRA default) the
  absmax is itself 8-bit with one fp32 absmax per 256 blocks. Only ``nn.Linear`` layers of the
  decoder are quantised: embeddings, norms, biases and ``lm_head`` stay in the compute dtype.
- int8 (``Linear8bitLt``): 1 byte per weight + one fp32 scale per output row.
- MXFP4 (OCP microscaling FP4, gpt-oss's experts; vLLM's ``quantization="mxfp4"``): e2m1 values
  packed two per byte + one e8m0 (uint8) scale per block of 32 weights: 4 + 8/32 = 4.25 bits per
  weight (:func:`mxfp4_bytes`; vLLM's side, planner.memory.vllm, stores it so).
Checked against the calibration: Llama-3.1-8B NF4 predicts 5,438.1 MiB, measured 5,438.6 MiB.
"""

from __future__ import annotations

from ..specs.model import ModelSpec

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1}
WEIGHT_FORMATS = ("bf16", "fp16", "fp32", "nf4", "int8")
NF4_BLOCK = 64
NF4_DQ_BLOCK = 256  # blocks of absmax quantised together under double quantisation
MXFP4_BLOCK = 32  # weights sharing one e8m0 scale (the OCP MX format's block)


def nf4_bytes(n_weights: int, double_quant: bool = True) -> float:
    """Bytes of ``n_weights`` quantised to NF4: packed 4-bit values plus block absmax."""
    blocks = n_weights / NF4_BLOCK
    if double_quant:
        return n_weights * 0.5 + blocks * 1 + (blocks / NF4_DQ_BLOCK) * 4
    return n_weights * 0.5 + blocks * 4


def mxfp4_bytes(n_weights: int) -> int:
    """Bytes of ``n_weights`` in MXFP4: 4-bit e2m1 codes packed two per uint8 (``n/2`` B) and one
    uint8 e8m0 scale per :data:`MXFP4_BLOCK` weights (``n/32`` B): 4.25 bits per weight. vLLM's
    ``Mxfp4MoEMethod.create_weights`` (0.19.0 model_executor/layers/quantization/mxfp4.py:138-226)
    allocates exactly these two tensors per expert projection."""
    return n_weights // 2 + n_weights // MXFP4_BLOCK


def int8_bytes(n_weights: int, out_rows: int) -> int:
    """Bytes of LLM.int8 weights: one int8 per weight plus an fp32 scale per output row."""
    return n_weights + 4 * out_rows


def quantisable_linear_params(spec: ModelSpec) -> tuple[int, int]:
    """(weights, output rows) of every decoder ``nn.Linear`` (not ``lm_head``, not biases)."""
    w = rows = 0
    for s in spec.linear_shapes():
        w += s.weight_params
        rows += s.out_features * s.count * s.layers
    return w, rows


def weights_bytes(spec: ModelSpec, fmt: str = "bf16", double_quant: bool = True,
                  compute_dtype: str = "bf16") -> int:
    """Bytes of the model's weights in format ``fmt`` (vision tower included, in compute dtype)."""
    counts = spec.param_counts()
    if fmt in ("bf16", "fp16", "fp32"):
        return counts.total * DTYPE_BYTES[fmt]
    linear, rows = quantisable_linear_params(spec)
    rest = counts.total - linear  # embeddings, lm_head, norms, biases, vision tower
    rest_bytes = rest * DTYPE_BYTES[compute_dtype]
    if fmt == "nf4":
        return int(round(nf4_bytes(linear, double_quant))) + rest_bytes
    if fmt == "int8":
        return int8_bytes(linear, rows) + rest_bytes
    raise ValueError(f"unknown weight format {fmt!r}")
