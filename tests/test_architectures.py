"""New architectures: MLA, MoE with biases (gpt-oss), gated delta-net hybrids (Qwen3-Next) and
multimodal towers (Qwen2.5-VL, Gemma 3): parameter counts equal the real transformers model's."""

from __future__ import annotations

import pytest

from planner.specs.model import resolve_model

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


# -- vLLM side (0.19.0 code: see the docstrings in planner/memory/vllm.py) ----------------------------------

def test_vllm_plans_the_issue_models_at_095_on_h100():
    from planner.memory.vllm import vllm_capacity

    for model_id in ("openai/gpt-oss-20b", "deepseek-ai/DeepSeek-V2-Lite-Chat", "Qwen/Qwen3-30B-A3B"):
        cap = vllm_capacity(model_id, "H100-80GB", 0.95, vllm_version="0.19.0")
        assert cap.startup_ok and cap.kv_cache_tokens > 0, model_id


def test_moe_workspace_is_persistent_and_sized_like_triton_experts():
    from planner.memory.vllm import moe_workspace_bytes, vllm_capacity

    moe = resolve_model("Qwen/Qwen3-30B-A3B")
    # M x top_k x max(N/2, K) + M x top_k x max(N, K), N = 2 x 768, K = 2048, 2 B each
    assert moe_workspace_bytes(moe, 16_384, version="0.19.0") == 2 * 16_384 * 8 * 2048 * 2
    assert moe_workspace_bytes(moe, 16_384, version="0.18.0") == 0  # not read before 0.19
    assert moe_workspace_bytes(resolve_model("meta-llama/Llama-3.1-8B-Instruct"), 16_384, version="0.19.0") == 0
    cap = vllm_capacity(moe, "H100-80GB", 0.95, vllm_version="0.19.0")
    assert cap.moe_workspace_bytes == 2**30
    assert (cap.budget_bytes - cap.weights_bytes - cap.moe_workspace_bytes - cap.activation_peak_bytes
            - cap.non_torch_bytes) == cap.available_kv_bytes


def test_mxfp4_experts_are_4_25_bits():
    from planner.memory.vllm import weights_bytes

    oss = resolve_model("openai/gpt-oss-20b")
    experts = sum(s.weight_params for s in oss.linear_shapes() if s.group == "experts")
    dense = oss.n_params - experts
    w = weights_bytes(oss, version="0.19.0")
    # experts n/2 + n/32; everything else 16-bit (plus the padded vocab and the RoPE cache)
    assert experts * 17 // 32 + 2 * dense < w < experts * 17 // 32 + 2 * dense + 200 * 2**20


def test_gated_delta_net_state_is_per_sequence_and_enlarges_the_block():
    from planner.memory.vllm import hybrid_block_size, kv_bytes_per_token, kv_layout, linear_attention_state_bytes

    nxt = resolve_model("Qwen/Qwen3-Next-80B-A3B-Instruct")
    # conv (4 - 1) x 8192 + temporal 32 x 128 x 128, bf16
    assert linear_attention_state_bytes(nxt) == (3 * 8192 + 32 * 128 * 128) * 2 == 1_097_728
    assert kv_bytes_per_token(nxt) == 12 * 2 * 2 * 256 * 2  # only the 12 attention layers
    assert hybrid_block_size(nxt) == 16 * -(-1_097_728 // (16 * 2048)) == 544
    lay = kv_layout(nxt, 8192, 8192, block_size=544, version="0.19.0")
    kinds = [g.kind for g in lay.groups]
    assert kinds.count("linear_attention") == 3 and kinds.count("full_attention") == 1
    assert lay.blocks_per_request == -(-8192 // 544) + 3  # one state page per linear group
    assert lay.page_bytes == 544 * 2048 >= linear_attention_state_bytes(nxt)


def test_plan_returns_a_plan_for_each_new_architecture():
    from planner.api import plan

    for model_id, gpu in (("openai/gpt-oss-20b", "H200"), ("deepseek-ai/DeepSeek-V2-Lite-Chat", "H100-80GB"),
                          ("Qwen/Qwen2.5-VL-7B-Instruct", "H100-80GB"), ("google/gemma-3-4b-it", "H100-80GB")):
        p = plan(model_id, gpu, finetune="lora")
        assert p.to_dict()["config"], model_id
