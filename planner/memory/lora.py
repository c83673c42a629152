"""LoRA adapters: which linears they wrap and how many parameters they add.

PEFT's ``LoraLayer`` adds ``lora_A`` (r x in) and ``lora_B`` (out x r) per wrapped linear, so
``r * (in + out)`` trainable parameters each. With ``autocast_adapter_dtype=True`` (PEFT's
default) adapters of a bf16/fp16 model are kept in **fp32**: 4 bytes per parameter.
Example (docs/anchors.md §5): Llama-3.1-8B, r=16, all 7 projections -> 41,943,040 parameters,
the calibration's ``n_trainable`` for that model.

Default targets (``None``) are what the plan hands to PEFT, ``target_modules="all-linear"``, as PEFT
0.21.2 resolves it on transformers 5 (checked against the real wrapped models by the CPU trace,
benchmarks/trace_new_architectures.py):
- every ``nn.Linear`` but ``lm_head``: attention (MLA's q/kv projections, the gated delta-net's
  in_proj_qkvz / in_proj_ba / out_proj), the MLP, shared experts and Qwen's ``shared_expert_gate``,
  and a vision tower's linears (Qwen2.5-VL: each block's qkv, proj, gate/up/down and the merger's
  two linears: ``vision_lora_shapes``);
- mixture-of-experts models whose checkpoints transformers converts from the v4 layout
  (``MOE_CONVERTED_MODEL_TYPES``): PEFT maps the v4 names ``gate_proj``/``up_proj``/``down_proj``/``gate``
  to parameters of the fused v5 modules (peft/utils/transformers_weight_conversion.py:331-352 and
  440-484). The routed experts' ``gate_up_proj`` (E x 2I x h) and ``down_proj`` get a ``ParamWrapper``
  each, ``gate_up_proj`` at rank 2r (its ``rank_pattern``: gate and up fused), and the router weight one
  at rank r; the names leave ``target_modules``, so the dense MLP and the shared experts' gate/up/down
  ``nn.Linear`` are **not** wrapped. A ParamWrapper over E experts holds lora_A (rank*E x in) and
  lora_B (out x rank*E) (peft/tuners/lora/layer.py ``ParamWrapper``).
  gpt-oss is not converted: its experts and router are parameters PEFT's "all-linear" never reaches.
"""

from __future__ import annotations

from ..specs.model import LinearShape, ModelSpec

ADAPTER_BYTES_PER_PARAM = 4  # fp32 adapters (PEFT autocast_adapter_dtype=True)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                   "qkv_proj", "gate_up_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                   "shared_expert.gate_proj", "shared_expert.up_proj", "shared_expert.down_proj",
                   "shared_expert_gate", "in_proj_qkvz", "in_proj_ba", "out_proj")
# model types transformers 5.24 converts from the v4 expert layout (conversion_mapping.py
# _MODEL_TO_CONVERSION_PATTERN -> "qwen2_moe"), which PEFT 0.21.2 follows for LoRA targets
MOE_CONVERTED_MODEL_TYPES = frozenset({"qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3"})
_MLP_NAMES = frozenset({"gate_proj", "up_proj", "down_proj"})
FUSED_GATE_UP = "experts.gate_up_proj"  # PEFT's ParamWrapper over gate and up: rank 2r


def vision_lora_shapes(spec: ModelSpec) -> tuple[LinearShape, ...]:
    """The vision tower's ``nn.Linear`` layers PEFT's "all-linear" wraps (Qwen2.5-VL:
    models/qwen2_5_vl/modeling_qwen2_5_vl.py, blocks' ``attn.qkv``/``attn.proj``/``mlp.*`` and the
    merger's ``mlp.0``/``mlp.2``); empty for other models (not modelled)."""
    vc = spec.raw_config.get("vision_config") if spec.vision_params else None
    if not isinstance(vc, dict) or not str(vc.get("model_type") or spec.model_type).startswith("qwen2_5_vl"):
        return ()
    d, ff, depth = int(vc.get("hidden_size", 1280)), int(vc.get("intermediate_size", 3420)), int(vc.get("depth", 32))
    merged = int(vc.get("spatial_merge_size", 2)) ** 2 * d
    out = int(vc.get("out_hidden_size", 3584))
    return (LinearShape("visual.qkv", d, 3 * d, "vision", depth), LinearShape("visual.proj", d, d, "vision", depth),
            LinearShape("visual.gate_proj", d, ff, "vision", depth), LinearShape("visual.up_proj", d, ff, "vision", depth),
            LinearShape("visual.down_proj", ff, d, "vision", depth),
            LinearShape("visual.merger.0", merged, merged, "vision", 1),
            LinearShape("visual.merger.2", merged, out, "vision", 1))


def _converted_targets(spec: ModelSpec, wanted: set) -> tuple[list[LinearShape], set[str]]:
    """PEFT's v4->v5 MoE conversion: the expert/router ParamWrappers ``wanted`` names, and the names it
    takes out of the module targets."""
    moved = set(_MLP_NAMES | {"gate"}) & wanted
    out: list[LinearShape] = []
    moe, E = len(spec.moe_layers), spec.num_experts
    h, Im = spec.hidden_size, spec.moe_intermediate_size
    if moe and {"gate_proj", "up_proj"} <= wanted:
        out.append(LinearShape(FUSED_GATE_UP, h, 2 * Im, "experts", moe, count=E))
    if moe and "down_proj" in wanted:
        out.append(LinearShape("experts.down_proj", Im, h, "experts", moe, count=E))
    if moe and "gate" in wanted:
        out.append(LinearShape("router", h, E, "router", moe))
    return out, moved


def lora_targets(spec: ModelSpec, targets: tuple[str, ...] | None = None) -> tuple[LinearShape, ...]:
    """The linear shapes LoRA wraps. ``targets`` are module names (``"experts"`` = all experts,
    ``"router"`` the router); ``None`` is PEFT's "all-linear" (module docstring)."""
    all_linear = targets is None
    wanted = set(DEFAULT_TARGETS if targets is None else targets)
    converted: list[LinearShape] = []
    if spec.model_type in MOE_CONVERTED_MODEL_TYPES and spec.is_moe:
        if all_linear:
            wanted |= {"gate"}  # the router's v4 name, which "all-linear" resolution adds
        converted, moved = _converted_targets(spec, wanted)
        wanted -= moved
        wanted -= {f"shared_expert.{n}" for n in _MLP_NAMES}
    out = []
    for s in spec.linear_shapes():
        short = s.name.split(".")[-1]
        if s.group == "experts":
            if "experts" in wanted and not converted:
                out.append(s)
        elif s.group == "router":
            if s.name in wanted or (s.name == "router" and "router" in wanted and not converted):
                out.append(s)
        elif s.name in wanted or short in wanted:
            out.append(s)
    out += converted
    if all_linear:
        out += vision_lora_shapes(spec)
    return tuple(out)


def lora_rank_of(shape: LinearShape, rank: int) -> int:
    """The rank PEFT gives ``shape``: 2r for the fused gate/up ParamWrapper of converted MoE models."""
    return 2 * rank if shape.name == FUSED_GATE_UP else rank


def lora_tensor_numels(spec: ModelSpec, rank: int, targets=None) -> list[tuple[int, int]]:
    """(numel, copies) of every LoRA tensor: lora_A (r x in) and lora_B (out x r) per module (per expert
    for a ParamWrapper over E experts: rank*E x in and out x rank*E in all)."""
    out = []
    for s in lora_targets(spec, targets):
        copies = s.layers * s.count
        r = lora_rank_of(s, rank)
        out.append((r * s.in_features, copies))
        out.append((s.out_features * r, copies))
    return out


def lora_params(spec: ModelSpec, rank: int, targets=None) -> int:
    """Trainable LoRA parameters: ``sum r * (in + out)`` over wrapped linears."""
    return sum(n * c for n, c in lora_tensor_numels(spec, rank, targets))


def adapter_bytes(spec: ModelSpec, rank: int, targets=None) -> int:
    """Bytes of the LoRA adapters on the GPU (fp32)."""
    return lora_params(spec, rank, targets) * ADAPTER_BYTES_PER_PARAM
