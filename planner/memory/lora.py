"""LoRA adapters: which linears they wrap and how many parameters they add.

PEFT's ``LoraLayer`` adds ``lora_A`` (r x in) and ``lora_B`` (out x r) per wrapped linear, so
``r * (in + out)`` trainable parameters each. With ``autocast_adapter_dtype=True`` (PEFT's
default) adapters of a bf16/fp16 model are kept in **fp32**: 4 bytes per parameter.
Example (docs/anchors.md §5): Llama-3.1-8B, r=16, all 7 projections -> 41,943,040 parameters,
the calibration's ``n_trainable`` for that model.

Default targets are all linear projections of the decoder (q,k,v,o,gate,up,down; Phi-3's fused
qkv_proj/gate_up_proj), as TRL/PEFT's ``"all-linear"`` minus ``lm_head``. MoE experts are
fused 3-D parameters in transformers >= 5, not ``nn.Linear``: LoRA does not wrap them unless
asked (``experts`` in the targets), and neither does the router by default.
"""

from __future__ import annotations

from ..model_spec import LinearShape, ModelSpec

ADAPTER_BYTES_PER_PARAM = 4  # fp32 adapters (PEFT autocast_adapter_dtype=True)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                   "qkv_proj", "gate_up_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                   "shared_expert.gate_proj", "shared_expert.up_proj", "shared_expert.down_proj")


def lora_targets(spec: ModelSpec, targets: tuple[str, ...] | None = None) -> tuple[LinearShape, ...]:
    """The linear shapes LoRA wraps. ``targets`` are module names (``"experts"`` = all experts)."""
    wanted = set(DEFAULT_TARGETS if targets is None else targets)
    out = []
    for s in spec.linear_shapes():
        short = s.name.split(".")[-1]
        if s.name in wanted or (s.group != "experts" and s.group != "router" and short in wanted) \
                or (s.group == "experts" and "experts" in wanted) or (s.group == "router" and "router" in wanted):
            out.append(s)
    return tuple(out)


def lora_tensor_numels(spec: ModelSpec, rank: int, targets=None) -> list[tuple[int, int]]:
    """(numel, copies) of every LoRA tensor: lora_A (r x in) and lora_B (out x r) per module."""
    out = []
    for s in lora_targets(spec, targets):
        copies = s.layers * s.count
        out.append((rank * s.in_features, copies))
        out.append((s.out_features * rank, copies))
    return out


def lora_params(spec: ModelSpec, rank: int, targets=None) -> int:
    """Trainable LoRA parameters: ``sum r * (in + out)`` over wrapped linears."""
    return sum(n * c for n, c in lora_tensor_numels(spec, rank, targets))


def adapter_bytes(spec: ModelSpec, rank: int, targets=None) -> int:
    """Bytes of the LoRA adapters on the GPU (fp32)."""
    return lora_params(spec, rank, targets) * ADAPTER_BYTES_PER_PARAM
