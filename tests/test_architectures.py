"""New architectures: MLA, MoE with biases (gpt-oss), gated delta-net hybrids (Qwen3-Next) and
multimodal towers (Qwen2.5-VL, Gemma 3): parameter counts equal the real transformers model's."""

from __future__ import annotations

import pytest

from planner.model_spec import resolve_model

NEW = ["openai/gpt-oss-20b", "deepseek-ai/DeepSeek-V2-Lite-Chat", "Qwen/Qwen3-Next-80B-A3B-Instruct",
       "Qwen/Qwen2.5-VL-7B-Instruct", "google/gemma-3-4b-it"]


@pytest.mark.parametrize("model_id", NEW)
def test_param_count_equals_the_transformers_model(model_id):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    spec = resolve_model(model_id)
    cfg = dict(spec.raw_config)
    cfg.pop("quantization_config", None)  # counted as the trainer loads it: dequantized
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        try:
            model = transformers.AutoModelForCausalLM.from_config(config)
        except ValueError:
            model = transformers.AutoModelForImageTextToText.from_config(config)
    assert spec.n_params == sum(p.numel() for p in model.parameters())


def test_mla_query_width_is_not_the_latent():
    spec = resolve_model("deepseek-ai/DeepSeek-V2-Lite-Chat")
    assert spec.is_mla and spec.head_dim == 128 + 64
    assert spec.q_dim == 16 * 192 == 3072  # was 9216 when head_dim held the 576-wide latent
    assert spec.v_dim == spec.attn_out_dim == 16 * 128
    assert spec.mla_latent_dim == 512 + 64


def test_gpt_oss_layers_sinks_and_mxfp4_experts():
    spec = resolve_model("openai/gpt-oss-20b")
    assert spec.num_sliding_layers == 12 and spec.num_full_attention_layers == 12 and spec.sliding_window == 128
    assert spec.attention_sinks and spec.o_bias and spec.router_bias and spec.expert_bias
    assert spec.expert_quantization == "mxfp4" and spec.quantization is None


def test_qwen3_next_hybrid_layers():
    spec = resolve_model("Qwen/Qwen3-Next-80B-A3B-Instruct")
    assert spec.num_linear_attention_layers == 36 and spec.num_full_attention_layers == 12
    assert spec.layer_types[3] == "full_attention" and spec.layer_types[0] == "linear_attention"
    assert spec.linear_conv_dim == 2 * 16 * 128 + 32 * 128


def test_qwen2_5_vl_reads_the_top_level_text_fields_and_its_vision_tower():
    spec = resolve_model("Qwen/Qwen2.5-VL-7B-Instruct")
    assert (spec.num_layers, spec.hidden_size, spec.num_kv_heads) == (28, 3584, 4)
    assert spec.vision_params == 676_550_144 and spec.layer_types == ("full_attention",) * 28
