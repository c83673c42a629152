"""Shrunken configs of the new architectures, for tracing their real transformers code on the CPU
with real tensors (``trace_steps(..., device="cpu")``): the same ``model_type`` and layer structure,
small widths.

Kept from the shipped profile: the model type, the per-layer pattern (gpt-oss's alternating sliding
and full attention with sinks, Qwen3-Next's three gated delta-net layers to one full-attention layer,
DeepSeek-V2's dense first layer then MoE layers with shared experts), top-k, the head widths that are
constants of the kernels (Qwen3-Next's 128-wide delta-net heads, Qwen2.5-VL's 128-wide heads for its
M-RoPE sections) and the ratios between widths where they matter (MLA's qk_nope : qk_rope : v_head =
2 : 1 : 2 and kv_lora_rank = hidden / 4; q/k/v head counts). Shrunk: layers, hidden size (256),
experts (8-16), intermediate sizes, vocabulary (2048: the fused head's tile is 32768 columns anyway),
sliding window (32) and Qwen2.5-VL's vision tower (2 blocks of 128).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..specs.model import ModelSpec, resolve_model, spec_from_config

SHRINKABLE = ("openai/gpt-oss-20b", "deepseek-ai/DeepSeek-V2-Lite-Chat", "Qwen/Qwen3-Next-80B-A3B-Instruct",
              "Qwen/Qwen3-30B-A3B", "Qwen/Qwen2.5-VL-7B-Instruct")

_SMALL: dict[str, dict] = {
    "gpt_oss": dict(num_hidden_layers=4, hidden_size=256, intermediate_size=256, num_attention_heads=8,
                    num_key_value_heads=1, head_dim=32, num_local_experts=8, vocab_size=2048, sliding_window=32,
                    layer_types=["sliding_attention", "full_attention"] * 2, pad_token_id=0, eos_token_id=1),
    "deepseek_v2": dict(num_hidden_layers=3, hidden_size=256, intermediate_size=1344, num_attention_heads=4,
                        num_key_value_heads=4, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
                        v_head_dim=32, moe_intermediate_size=176, n_routed_experts=16, vocab_size=2048,
                        bos_token_id=0, eos_token_id=1),
    "qwen3_next": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, num_key_value_heads=1,
                       head_dim=128, linear_num_key_heads=2, linear_num_value_heads=4, num_experts=16,
                       moe_intermediate_size=64, shared_expert_intermediate_size=64, intermediate_size=640,
                       vocab_size=2048, bos_token_id=0, eos_token_id=1),
    "qwen3_moe": dict(num_hidden_layers=2, hidden_size=256, num_attention_heads=8, num_key_value_heads=1,
                      head_dim=64, num_experts=16, moe_intermediate_size=96, intermediate_size=768,
                      vocab_size=2048, bos_token_id=0, eos_token_id=1),
    "qwen2_5_vl": dict(num_hidden_layers=2, hidden_size=256, intermediate_size=1344, num_attention_heads=2,
                       num_key_value_heads=1, max_window_layers=2, vocab_size=2048, bos_token_id=0, eos_token_id=1),
}
_SMALL_VISION = dict(depth=2, hidden_size=128, intermediate_size=342, num_heads=2, out_hidden_size=256,
                     fullatt_block_indexes=[1])


def shrunken_spec(model: str | ModelSpec) -> ModelSpec:
    """A small ModelSpec of ``model``'s architecture (module docstring); its raw config builds the model."""
    spec = resolve_model(model)
    small = _SMALL.get(spec.model_type)
    if small is None:
        raise ConfigError(f"no shrunken config for model type '{spec.model_type}' ({', '.join(sorted(_SMALL))})")
    cfg = {k: v for k, v in dict(spec.raw_config).items() if k != "quantization_config"}  # traced in bf16
    cfg.update(small)
    if isinstance(cfg.get("vision_config"), dict):
        cfg["vision_config"] = dict(cfg["vision_config"], **_SMALL_VISION)
    return spec_from_config(cfg, f"{spec.model_id} (shrunk)", source=f"shrunken config of {spec.model_id}")
