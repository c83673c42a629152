"""The vLLM memory model against vLLM's own arithmetic.

Every expected number below is derived by hand in the test from the formula in vLLM's source
(cited as file:line of the 0.33.0 wheel unless another release is named), never copied from the
function under test. Terms vLLM measures (activation peak, CUDA graphs) are only checked against
the published ranges they were calibrated on.
"""

import json
import math

import pytest

from planner.cli import main
from planner.errors import InvalidSetupError, VersionError
from planner.memory.vllm import (
    _matrix_bytes,
    activation_peak_bytes,
    budget_bytes,
    cudagraph_bytes,
    cudagraph_capture_sizes,
    default_batch_limits,
    estimate_max_model_len,
    kv_bytes_per_token,
    kv_cache_tokens,
    kv_layout,
    kv_page_bytes,
    max_concurrency,
    num_blocks,
    sleep_freed_bytes,
    sleep_host_bytes,
    sleep_resident_bytes,
    startup_error,
    vllm_capacity,
    vllm_gib,
    vllm_process_bytes,
    weights_bytes,
)
from planner.specs.gpu import resolve_gpu
from planner.specs.model import resolve_model, spec_from_config
from planner.specs.units import GIB, MIB

H100_TOTAL = 81_079 * 2**20  # cudaMemGetInfo total on an H100 80GB HBM3 (profiles/gpus.json)
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"

# DeepSeek-V2-Lite's config.json (the fields the planner reads), for an MLA model.
DEEPSEEK_V2_LITE = dict(
    model_type="deepseek_v2", hidden_size=2048, num_hidden_layers=27, num_attention_heads=16,
    num_key_value_heads=16, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
    q_lora_rank=None, vocab_size=102400, intermediate_size=10944, moe_intermediate_size=1408,
    n_routed_experts=64, n_shared_experts=2, first_k_dense_replace=1, moe_layer_freq=1, num_experts_per_tok=6,
    max_position_embeddings=163840, tie_word_embeddings=False, torch_dtype="bfloat16")

# A Llama-2-7B-like config: multi-head attention (as many KV heads as query heads).
MHA_7B = dict(
    model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
    intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False,
    torch_dtype="float16")


@pytest.fixture(scope="module")
def mla():
    return spec_from_config(DEEPSEEK_V2_LITE, "deepseek-ai/DeepSeek-V2-Lite")


@pytest.fixture(scope="module")
def mha():
    return spec_from_config(MHA_7B, "llama-2-7b-like")


# -- budget and start-up check --------------------------------------------------------------------

def test_budget_is_ceil_of_total_times_utilization():
    # v1/worker/utils.py:724-726: requested_memory = math.ceil(total_memory * gpu_memory_utilization)
    assert budget_bytes(H100_TOTAL, 0.5) == 81_079 * 2**19 == 42_508_746_752  # exact half
    assert budget_bytes(H100_TOTAL, 0.9) == 76_515_744_154  # 85,017,493,504 x 0.9 = 76,515,744,153.6 -> up
    assert budget_bytes(H100_TOTAL, 1.0) == H100_TOTAL


def test_startup_error_reproduces_a_real_vllm_log():
    # pytorch/pytorch#175666 (docs/vllm-memory.md §2): "Free memory on device cuda:1 (19.77/22.05 GiB) on startup
    # is less than desired GPU memory utilization (0.9, 19.84 GiB)". An L4 reports 22.0498 GiB; at 0.9 vLLM
    # requests ceil(23,675,797,504 x 0.9) = 21,308,217,754 B = 19.845 GiB -> "19.84" (round(x, 2), mem_utils.py:30).
    l4 = resolve_gpu("L4").total_bytes
    requested = budget_bytes(l4, 0.9)
    assert requested == math.ceil(23_675_797_504 * 0.9) == 21_308_217_754
    free = int(19.77 * GIB)
    text = startup_error(free, l4, 0.9, requested, device="cuda:1")
    assert text == ("Free memory on device cuda:1 (19.77/22.05 GiB) on startup is less than desired GPU memory "
                    "utilization (0.9, 19.84 GiB). Decrease GPU memory utilization or reduce GPU memory used by "
                    "other processes.")
    assert startup_error(requested, l4, 0.9, requested) is None  # equality passes (utils.py:761 uses <)


def test_capacity_reports_startup_failure_when_free_memory_is_short():
    # free 12e9 B minus the 0.5 GiB baseline (context, cuBLAS) = 11,463,129,088 B = 10.68 GiB at init;
    # requested = ceil(23,675,797,504 x 0.6) = 14,205,478,503 B = 13.23 GiB.
    cap = vllm_capacity(LLAMA, "L4", gpu_memory_utilization=0.6, max_model_len=4096, free_bytes=12_000_000_000)
    assert not cap.startup_ok
    assert cap.errors[0].startswith("Free memory on device cuda:0 (10.68/22.05 GiB) on startup is less than "
                                    "desired GPU memory utilization (0.6, 13.23 GiB).")


# -- weights --------------------------------------------------------------------------------------

def test_llama_bf16_weights_match_the_model_loading_log():
    # 8,030,261,248 params x 2 B + RoPE cos_sin_cache 131,072 positions x 128 x 2 B
    # (rotary_embedding/base.py:58-63) = 16,094,076,928 B = 14.99 GiB, vLLM's "Model loading took 14.99 GiB".
    spec = resolve_model(LLAMA)
    expected = 8_030_261_248 * 2 + 131_072 * 128 * 2
    assert weights_bytes(spec) == expected == 16_094_076_928
    assert vllm_gib(expected) == "14.99"


def test_llama_weights_under_tp2_shard_like_vllm():
    # Column-parallel q/gate/up split outputs, row-parallel o/down split inputs, k/v keep 8 // 2 = 4 heads
    # (linear.py:1064-1071), embeddings and lm_head hold 128,256 / 2 rows (vocab_parallel_embedding.py:286-306),
    # norms (2 per layer + final, 4,096 each) and the RoPE cache are replicated.
    spec = resolve_model(LLAMA)
    h, inter, layers = 4096, 14336, 32
    per_layer = (h * h // 2 + 2 * h * 4 * 128 + (h // 2) * h + 2 * h * (inter // 2) + (inter // 2) * h) * 2
    embed = (128_256 // 2) * h * 2 * 2  # untied: embed_tokens + lm_head
    norms = (layers * 2 * h + h) * 2
    rope = 131_072 * 128 * 2
    assert weights_bytes(spec, tp=2) == layers * per_layer + embed + norms + rope


def test_quantized_matrix_bytes():
    n = 4096 * 4096
    # fp8: 1 B per element + one fp32 per-tensor scale
    assert _matrix_bytes(4096, 4096, "fp8") == n + 4
    # bitsandbytes NF4 with double quant, blocksize 64 (0.26.0 bitsandbytes_loader.py:433-437):
    # n/2 packed + n/64 uint8 absmax + 4 B per 256 blocks + (16 + 256) fp32 code tables
    assert _matrix_bytes(4096, 4096, "nf4") == n // 2 + n // 64 + 4 * (n // 64 // 256) + 4 * 272 == 8_655_936
    # int4 group 128: n/2 packed + fp16 scales + packed int4 zeros per (group, column); GPTQ + int32 g_idx
    groups = 4096 // 128
    assert _matrix_bytes(4096, 4096, "awq") == n // 2 + groups * 4096 * 2 + groups * 4096 // 2 == 8_716_288
    assert _matrix_bytes(4096, 4096, "gptq") == 8_716_288 + 4 * 4096


def test_bitsandbytes_keeps_embeddings_16_bit_and_is_gone_after_0_27():
    spec = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    nf4 = weights_bytes(spec, quantization="bitsandbytes", version="0.26.0")
    # untied 152,064 x 3,584 embeddings + lm_head stay bf16; everything else is ~0.516 B/param
    embed = 152_064 * 3_584 * 2 * 2
    assert embed < nf4 < embed + 0.53 * spec.param_counts().total
    with pytest.raises(InvalidSetupError, match=r"vLLM 0\.33\.0 has no 'bitsandbytes' quantization"):
        weights_bytes(spec, quantization="bitsandbytes", version="0.33.0")


# -- KV bytes per token -----------------------------------------------------------------------------

def test_kv_bytes_per_token_dense_mha(mha):
    # AttentionSpec page: num_kv_heads x (head_size + head_size_v) x dtype (kv_cache_interface.py:585-602)
    assert kv_bytes_per_token(mha) == 32 * 32 * (128 + 128) * 2 == 524_288
    assert kv_page_bytes(mha) == 16 * 32 * 256 * 2  # one layer, block_size 16


def test_kv_bytes_per_token_gqa_and_tp_and_fp8():
    spec = resolve_model(LLAMA)  # 32 layers, 8 KV heads of 128
    assert kv_bytes_per_token(spec) == 32 * 8 * 2 * 128 * 2 == 131_072
    assert kv_bytes_per_token(spec, tp=2) == 32 * (8 // 2) * 2 * 128 * 2
    # tp 16 > 8 KV heads: max(1, 8 // 16) = 1 replicated head per rank (config/model.py:1683)
    assert kv_bytes_per_token(spec, tp=16) == 32 * 1 * 2 * 128 * 2
    assert kv_bytes_per_token(spec, "fp8") == 32 * 8 * 2 * 128 * 1


def test_kv_bytes_per_token_mla_worked_check(mla):
    # docs/vllm-memory.md §3.4: DeepSeek-V2-Lite 27 layers x (512 + 64) latent x 2 B = 31,104 B/token,
    # one latent head (no V) replicated on every TP rank (MLAAttentionSpec, get_num_kv_heads -> 1)
    assert kv_bytes_per_token(mla) == 27 * 576 * 2 == 31_104
    assert kv_bytes_per_token(mla, tp=2) == 31_104
    assert kv_bytes_per_token(mla, "fp8") == 27 * 576


def test_mla_blocks_and_tokens_match_the_published_log(mla):
    # "1,505,552 tokens in 43.61 GiB": one group of 27 layers, bytes_per_block = 27 x 16 x 576 x 2 = 497,664;
    # 1,505,552 / 16 = 94,097 blocks; 94,097 x 497,664 B = 43.61 GiB.
    lay = kv_layout(mla, max_model_len=4096, max_num_batched_tokens=8192)
    assert lay.bytes_per_block == 27 * 16 * 576 * 2 == 497_664
    available = 94_097 * 497_664 + 12_345
    assert vllm_gib(94_097 * 497_664) == "43.61"
    n = num_blocks(available, lay.bytes_per_block)
    assert n == 94_097
    # 0.19-0.20: num_blocks // 1 group x 16 (0.20.0 kv_cache_utils.py:1693-1697)
    assert kv_cache_tokens(n, 1, 16, max_concurrency(n, 256), 4096, version="0.19.0") == 1_505_552
    # 0.33: int(94,097 / cdiv(4096, 16) x 4096) (kv_cache_utils.py:1087, 1128)
    assert kv_cache_tokens(n, 1, 16, max_concurrency(n, 256), 4096, version="0.33.0") == int(94_097 / 256 * 4096)


# -- dense end to end --------------------------------------------------------------------------------

def test_llama_on_h100_end_to_end_arithmetic():
    cap = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.5, max_model_len=4096,
                        vllm_version="0.33.0")
    assert cap.budget_bytes == 42_508_746_752
    # defaults for vllm.LLM on a >= 70 GiB non-A100 card: 1024 seqs, min(1024 x 4096, 16384) tokens
    # (engine/arg_utils.py:2983-2993, 3221-3224)
    assert (cap.max_num_seqs, cap.max_num_batched_tokens) == (1024, 16_384)
    # available = requested - non-KV - graph estimate (gpu_worker.py:753-757)
    assert cap.available_kv_bytes == (cap.budget_bytes - cap.weights_bytes - cap.activation_peak_bytes
                                      - cap.non_torch_bytes - cap.cudagraph_bytes)
    # one group of 32 layers; page 16 x 8 x 256 x 2 = 65,536; block = 32 pages = 2 MiB
    assert cap.layout.bytes_per_block == 32 * 16 * 8 * (128 + 128) * 2 == 2 * MIB
    assert cap.num_blocks == cap.available_kv_bytes // (2 * MIB)
    assert cap.layout.blocks_per_request == 4096 // 16 == 256
    assert cap.max_concurrency == cap.num_blocks / 256
    assert cap.kv_cache_tokens == int(cap.num_blocks / 256 * 4096) == cap.num_blocks * 16
    assert cap.kv_cache_bytes == cap.num_blocks * 2 * MIB
    assert cap.startup_ok and cap.errors == ()
    lines = cap.log_lines()
    assert lines[-1] == (f"GPU KV cache size: {cap.num_blocks * 16:,} tokens, Maximum concurrency for 4,096 tokens "
                         f"per request: {cap.num_blocks / 256:.2f}x")


def test_v019_leaves_cuda_graphs_outside_the_budget():
    new = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.5, max_model_len=4096, vllm_version="0.33.0")
    old = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.5, max_model_len=4096, vllm_version="0.19.0",
                        max_num_batched_tokens=16_384)
    assert not old.cudagraph_subtracted and new.cudagraph_subtracted
    assert old.available_kv_bytes == new.available_kv_bytes + new.cudagraph_bytes
    # the process then holds baseline + budget + the graph pool captured after the KV cache
    assert vllm_process_bytes(old) == old.baseline_bytes + old.budget_bytes + old.cudagraph_bytes
    assert vllm_process_bytes(new) == new.baseline_bytes + new.budget_bytes
    assert len(old.log_lines()) == 4  # two capacity lines before 0.28


def test_default_utilization_follows_the_release():
    assert vllm_capacity(LLAMA, "H100-80GB", max_model_len=4096, vllm_version="0.19.0").gpu_memory_utilization == 0.9
    assert vllm_capacity(LLAMA, "H100-80GB", max_model_len=4096, vllm_version="0.20.0").gpu_memory_utilization == 0.92


# -- sliding window and hybrid grouping ------------------------------------------------------------

def test_gemma2_alternating_layers_make_two_groups_of_13():
    spec = resolve_model("google/gemma-2-2b-it")  # 26 layers: 13 sliding (4096), 13 full; 4 KV heads of 256
    lay = kv_layout(spec, max_model_len=8192, max_num_batched_tokens=4096, version="0.33.0")
    # group_size = max(13, 13) since 13 < 1.5 x 13 (kv_cache_planning.py:520-533); no padding
    assert lay.group_size == 13 and len(lay.groups) == 2 and lay.padding_layers == 0
    assert lay.bytes_per_block == 13 * 16 * 4 * (256 + 256) * 2 == 851_968
    # full: cdiv(8192, 16) = 512; sliding: cdiv(min(4095 + 2 x 4096, 8192), 16) + 1 = 513
    assert [g.blocks_per_request for g in lay.groups] == [512, 513]


def test_gemma3_sliding_window_blocks_tokens_and_concurrency():
    spec = resolve_model("google/gemma-3-1b-it")  # 26 layers: full at 5, 11, 17, 23; 22 sliding (512); 1 KV head
    L, mnbt = 32_768, 4096
    new = kv_layout(spec, L, mnbt, version="0.33.0")
    # group_size = 4 (22 >= 1.5 x 4), cdiv(22, 4) = 6 sliding groups, 6 x 4 - 22 = 2 padding layers
    assert new.group_size == 4 and len(new.groups) == 7 and new.padding_layers == 2
    assert new.bytes_per_block == 4 * 16 * 1 * (256 + 256) * 2 == 65_536
    # SlidingWindowSpec (kv_cache_interface.py:918-944): cdiv(min(512 - 1 + 2 x 4096, L), 16) + 1 = 545
    # (2 in-flight batches with async scheduling, config/vllm.py:588-609)
    full, sliding = math.ceil(L / 16), math.ceil((511 + 2 * 4096) / 16) + 1
    assert (full, sliding) == (2048, 545)
    assert new.blocks_per_request == full + 6 * sliding == 5318
    # 0.20: window - 1 + max_num_batched_tokens (0.20.0 kv_cache_interface.py:436): cdiv(4607, 16) + 1 = 289
    old = kv_layout(spec, L, mnbt, version="0.20.0")
    assert old.blocks_per_request == 2048 + 6 * (math.ceil((511 + 4096) / 16) + 1) == 3782

    n = num_blocks(10 * GIB, new.bytes_per_block)
    assert n == 10 * GIB // 65_536 == 163_840
    conc_new = max_concurrency(n, new.blocks_per_request)
    assert conc_new == 163_840 / 5318
    assert kv_cache_tokens(n, 7, 16, conc_new, L, version="0.33.0") == int(163_840 / 5318 * 32_768)
    # 0.20: num_blocks // len(groups) x block_size = 163,840 // 7 x 16 (not the true capacity for hybrids)
    assert kv_cache_tokens(n, 7, 16, max_concurrency(n, 3782), L, version="0.20.0") == 163_840 // 7 * 16 == 374_480


def test_gemma3_27b_pads_eight_layers():
    # docs/vllm-memory.md §3.3: "Add 8 padding layers, may waste at most 15.38% KV cache memory" (8 / 52)
    lay = kv_layout(resolve_model("google/gemma-3-27b-it"), 8192, 8192)
    assert (lay.group_size, lay.padding_layers, len(lay.groups)) == (10, 8, 7)
    assert round(8 / 52 * 100, 2) == 15.38


# -- start-up KV errors -----------------------------------------------------------------------------

def test_max_seq_len_error_and_estimated_length():
    cap = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.3, max_model_len=131_072,
                        vllm_version="0.33.0")
    # one request needs cdiv(131072, 16) = 8192 blocks x 2 MiB = 16 GiB; 0.33 checks against available - one
    # block (the null block, kv_cache_planning.py:1533-1545)
    check = cap.available_kv_bytes - 2 * MIB
    assert 0 < check < 16 * GIB and not cap.startup_ok
    # binary search of the largest L with cdiv(L, 16) x 2 MiB <= check (kv_cache_planning.py:1288-1334)
    est = (check // (2 * MIB)) * 16
    assert cap.estimated_max_model_len == est
    assert cap.errors[-1] == (
        f"To serve at least one request with the model's max seq len (131072), (16.0 GiB KV cache is needed, which "
        f"is larger than the available KV cache memory ({round(check / GIB, 2)} GiB). Based on the available "
        f"memory, the estimated maximum model length is {est}. Try increasing `gpu_memory_utilization` (which "
        f"also controls CPU memory on the CPU backend) or decreasing `max_model_len` when initializing the engine. "
        f"See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.")
    # 0.19 wording keeps its "models's" typo and checks the whole available memory
    old = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.3, max_model_len=131_072, vllm_version="0.19.0")
    assert "with the models's max seq len (131072)" in old.errors[-1]
    assert old.estimated_max_model_len == (old.available_kv_bytes // (2 * MIB)) * 16


def test_estimate_max_model_len_helper(mla):
    # 10 blocks of 497,664 B fit lengths up to 10 x 16 = 160 tokens
    assert estimate_max_model_len(mla, 10 * 497_664, 4096, 8192) == 160
    assert estimate_max_model_len(mla, 497_663, 4096, 8192) == 0


def test_no_available_memory_error():
    cap = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.15, max_model_len=4096)
    assert cap.available_kv_bytes < 0 and cap.num_blocks == 0 and not cap.startup_ok
    assert cap.errors == ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
                          "initializing the engine (this flag also controls CPU memory reservation on the CPU "
                          "backend, despite its name). See https://docs.vllm.ai/en/latest/configuration/"
                          "conserving_memory/ for more details.",)


# -- bad input: one clear line ----------------------------------------------------------------------

@pytest.mark.parametrize("util", [0, 1.5, -0.1])
def test_utilization_out_of_range(util):
    with pytest.raises(InvalidSetupError, match=rf"^gpu_memory_utilization must be in \(0, 1\], got {util}$"):
        vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=util)


def test_max_model_len_above_the_model_context():
    with pytest.raises(InvalidSetupError, match=r"max_model_len \(200000\) is larger than .*max_position_embeddings "
                                                r"\(131072\)"):
        vllm_capacity(LLAMA, "H100-80GB", max_model_len=200_000)


def test_tensor_parallel_must_divide_heads():
    with pytest.raises(InvalidSetupError, match=r"tensor_parallel_size \(3\) must divide .*num_attention_heads \(32\)"):
        vllm_capacity(LLAMA, "H100-80GB", tensor_parallel_size=3)
    # Qwen2.5-7B: 28 heads divide by 7, but 7 and its 4 KV heads do not divide one another
    with pytest.raises(InvalidSetupError, match=r"tensor_parallel_size \(7\) and .*num_key_value_heads \(4\) must "
                                                r"divide one another"):
        vllm_capacity("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", tensor_parallel_size=7)


def test_max_num_batched_tokens_below_max_num_seqs():
    # config/scheduler.py:331-336
    with pytest.raises(InvalidSetupError, match=r"^max_num_batched_tokens \(64\) must be greater than or equal to "
                                                r"max_num_seqs \(128\)$"):
        vllm_capacity(LLAMA, "H100-80GB", max_model_len=4096, max_num_seqs=128, max_num_batched_tokens=64)


def test_unknown_version_and_kv_dtype():
    with pytest.raises(VersionError, match="unknown vLLM version 'abc'"):
        vllm_capacity(LLAMA, "H100-80GB", vllm_version="abc")
    with pytest.raises(VersionError, match="vLLM 0.1 is not covered"):
        vllm_capacity(LLAMA, "H100-80GB", vllm_version="0.1")
    with pytest.raises(InvalidSetupError, match="kv_cache_dtype must be one of"):
        vllm_capacity(LLAMA, "H100-80GB", kv_cache_dtype="int3")


# -- defaults, graphs, activation -------------------------------------------------------------------

def test_default_batch_limits_by_card_and_release():
    h100, a100, b200, l4 = (resolve_gpu(n) for n in ("H100-80GB", "A100-80GB", "B200", "L4"))
    assert default_batch_limits(h100, 4096) == (1024, 16_384)
    assert default_batch_limits(h100, 4096, "OPENAI_API_SERVER") == (1024, 8192)
    assert default_batch_limits(a100, 4096) == (256, 8192)  # "a100" excluded from the big tier
    assert default_batch_limits(b200, 4096, "OPENAI_API_SERVER", version="0.33.0") == (1024, 16_384)
    assert default_batch_limits(b200, 4096, "OPENAI_API_SERVER", version="0.27.0") == (1024, 8192)
    # mnbt capped at max_num_seqs x max_model_len = 256 x 8; max_num_seqs capped at that (arg_utils.py:3221-3234)
    assert default_batch_limits(l4, 8) == (256, 2048)
    assert default_batch_limits(l4, 4096, max_num_seqs=16, max_num_batched_tokens=4096) == (16, 4096)


def test_cudagraph_capture_sizes():
    # max_num_seqs >= 256: 1, 2, 4 + 8..248 step 8 (31) + 256..512 step 16 (17) = 51 (config/vllm.py:2579-2590)
    assert len(cudagraph_capture_sizes(1024, 8192, "0.19.0")) == 3 + 31 + 17 == 51
    # TRL-like: 16 seqs -> min(16 x 2, 512) = 32 -> 1, 2, 4, 8, 16, 24, 32
    assert cudagraph_capture_sizes(16, 4096, "0.33.0") == (1, 2, 4, 8, 16, 24, 32)
    # 0.31+: max_num_seqs appended as the uniform-decode size (L2549-2550)
    assert cudagraph_capture_sizes(5, 4096, "0.33.0") == (1, 2, 4, 5, 8)
    assert cudagraph_capture_sizes(5, 4096, "0.29.0") == (1, 2, 4, 8)
    # 0.21+: max_num_batched_tokens appended when it fits (0.21.0 config/vllm.py:1580)
    assert cudagraph_capture_sizes(1024, 300, "0.21.0")[-1] == 300
    assert cudagraph_capture_sizes(1024, 300, "0.20.0")[-1] == 288
    assert cudagraph_capture_sizes(1024, 8192, "0.33.0", blackwell=True)[-1] == 1024


def test_cudagraph_pool_estimate_range():
    spec = resolve_model(LLAMA)
    assert cudagraph_bytes(spec, 1024, 8192, enforce_eager=True) == 0
    # calibrated on 0.91 GiB for 51 + 51 graphs (Llama-3.1-8B, H100, v0.19)
    assert 0.85 * GIB < cudagraph_bytes(spec, 1024, 8192, version="0.19.0") < 0.97 * GIB
    assert cudagraph_bytes(spec, 8, 4096) < 0.2 * GIB


@pytest.mark.parametrize("model,lo,hi", [
    (LLAMA, 1.9, 2.2),                       # docs/vllm-memory.md §1.3: Llama/Qwen ~1.9-2.2 GiB
    ("Qwen/Qwen2.5-7B-Instruct", 1.9, 2.3),
    ("google/gemma-2-9b-it", 3.55, 4.0),     # 256k vocab: 3.65-3.99 GiB
    ("google/gemma-3-27b-it", 3.65, 4.0),
])
def test_activation_peak_against_v019_profiles(model, lo, hi):
    # v0.19 H100 at max_num_batched_tokens 8192 and max_num_seqs 1024
    peak = activation_peak_bytes(resolve_model(model), 8192, 1024, version="0.19.0")
    assert lo * GIB <= peak <= hi * GIB


def test_activation_sampler_rows_are_min_of_tokens_and_seqs():
    spec = resolve_model("google/gemma-2-9b-it")
    # rows = min(mnbt, max_num_seqs) (gpu/model_runner.py:993-1016): 512 seqs at 256 tokens samples 256 rows
    assert activation_peak_bytes(spec, 256, 512) == activation_peak_bytes(spec, 256, 256)
    assert activation_peak_bytes(spec, 8192, 1024) > activation_peak_bytes(spec, 8192, 64)


# -- sleep ----------------------------------------------------------------------------------------------

def test_sleep_terms():
    cap = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.3, max_model_len=4096,
                        max_num_seqs=16, max_num_batched_tokens=4096)
    # docs/vllm-memory.md §5: weights and KV cache are unmapped; context, NCCL, graph pool and untagged runtime stay
    assert sleep_freed_bytes(cap, 2) == sleep_freed_bytes(cap, 1) == cap.weights_bytes + cap.kv_cache_bytes
    assert sleep_resident_bytes(cap, 1) == sleep_resident_bytes(cap, 2) == (
        cap.baseline_bytes + cap.cudagraph_bytes + cap.non_torch_bytes)
    assert sleep_resident_bytes(cap, 2, include_baseline=False) == cap.cudagraph_bytes + cap.non_torch_bytes
    assert sleep_host_bytes(cap, 1) == cap.weights_bytes and sleep_host_bytes(cap, 2) == 0
    with pytest.raises(InvalidSetupError, match="sleep level must be 1 or 2, got 3"):
        sleep_resident_bytes(cap, 3)


# -- CLI ------------------------------------------------------------------------------------------------

CLI = ["vllm", "--model", LLAMA, "--gpu", "H100-80GB", "--gpu-memory-utilization", "0.5", "--max-model-len", "4096"]


def test_cli_json_has_every_key(capsys):
    assert main(CLI + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    v = d["vllm"]
    for key in ("budget_bytes", "weights_bytes", "activation_peak_bytes", "non_torch_bytes", "cudagraph_bytes",
                "kv_cache_bytes", "kv_cache_tokens", "kv_bytes_per_token", "num_blocks", "max_concurrency",
                "max_model_len", "max_num_seqs", "max_num_batched_tokens", "startup_ok", "errors", "version"):
        assert key in v, key
    assert v["budget_bytes"] == 42_508_746_752 and v["kv_bytes_per_token"] == 131_072
    assert v["max_model_len"] == 4096 and v["startup_ok"] is True and v["errors"] == []
    assert d["model"]["id"] == LLAMA and d["gpu"]["name"] == "H100-80GB"


def test_cli_table_prints_terms_and_log_lines(capsys):
    assert main(CLI) == 0
    out = capsys.readouterr().out
    for text in ("budget", "weights", "activation peak", "CUDA graphs", "available KV cache",
                 "GPU KV cache size:", "Maximum concurrency for 4,096 tokens per request:", "start-up: OK"):
        assert text in out, text


def test_cli_bad_utilization_is_one_line_exit_2(capsys):
    assert main(CLI[:-4] + ["--gpu-memory-utilization", "1.5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "plan: error: gpu_memory_utilization must be in (0, 1], got 1.5\n"


def test_cli_unknown_version_exit_2(capsys):
    assert main(CLI + ["--vllm-version", "0.1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# -- vLLM 0.8.5-0.18 (the V1 engine before 0.19) ----------------------------------------------------
# Each expected number is derived from the older wheels' code, cited as release file:line.

def test_v0_10_budget_is_not_rounded_up():
    # 0.10.2 gpu_worker.py:176-177: requested = total x util (a float); the KV budget is int()-ed at the end
    # (gpu_worker.py:301), so 85,017,493,504 x 0.9 = 76,515,744,153.6 counts as ...153, not ...154 (0.14+ ceil)
    assert budget_bytes(H100_TOTAL, 0.9, "0.10.2") == 76_515_744_153
    assert budget_bytes(H100_TOTAL, 0.9, "0.13.0") == 76_515_744_153
    assert budget_bytes(H100_TOTAL, 0.9, "0.14.0") == 76_515_744_154


def test_v0_9_to_v0_13_startup_error_has_no_device_name():
    # 0.10.2 gpu_worker.py:178-188 (no device name); 0.14.0 v1/worker/utils.py:264 adds it; 0.8.5 has no check
    l4 = resolve_gpu("L4").total_bytes
    free = int(19.77 * GIB)
    old = startup_error(free, l4, 0.9, l4 * 0.9, version="0.10.2")
    assert old == ("Free memory on device (19.77/22.05 GiB) on startup is less than desired GPU memory "
                   "utilization (0.9, 19.84 GiB). Decrease GPU memory utilization or reduce GPU memory used by "
                   "other processes.")
    assert startup_error(free, l4, 0.9, math.ceil(l4 * 0.9), version="0.14.0").startswith(
        "Free memory on device cuda:0 (19.77/22.05 GiB)")
    assert startup_error(free, l4, 0.9, l4 * 0.9, version="0.8.5") is None


def test_v0_8_5_whole_device_budget_worked_example():
    # 0.8.5 gpu_worker.py:180-212: available = total x util - (torch peak + all non-torch memory on the device).
    # A trainer holding 20 GiB before vLLM starts and vLLM's 0.5 GiB context both come out of the KV cache.
    held = 20 * GIB
    cap = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.5, max_model_len=4096,
                        vllm_version="0.8.5", free_bytes=H100_TOTAL - held)
    assert cap.budget_bytes == H100_TOTAL // 2 == 42_508_746_752
    weights = 8_030_261_248 * 2 + 131_072 * 128 * 2  # "Model loading took 14.99 GiB"
    assert cap.weights_bytes == weights
    expected = (42_508_746_752 - held - 512 * MIB - weights - cap.activation_peak_bytes - 96 * MIB)
    assert cap.available_kv_bytes == expected
    # defaults on a >= 70 GiB card (0.8.5 engine/arg_utils.py:1596-1621): 1024 seqs, 16384 tokens
    assert (cap.max_num_seqs, cap.max_num_batched_tokens) == (1024, 16_384)
    blocks = expected // (2 * MIB)
    assert cap.num_blocks == blocks
    # 0.8.5 kv_cache_utils.py:632-639: tokens = num_blocks x 16, concurrency = tokens / max_model_len
    assert cap.kv_cache_tokens == blocks * 16
    assert cap.max_concurrency == blocks * 16 / 4096
    # the same start on 0.10.2: memory held before the snapshot is outside the budget
    new = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.5, max_model_len=4096,
                        vllm_version="0.10.2", free_bytes=H100_TOTAL - held)
    assert new.available_kv_bytes - cap.available_kv_bytes == held + 512 * MIB
    # vLLM's own footprint is the same either way: baseline + weights + activation + non-torch + KV + graphs
    assert vllm_process_bytes(cap) == H100_TOTAL // 2 - held + cap.cudagraph_bytes
    assert vllm_process_bytes(new) == 512 * MIB + H100_TOTAL // 2 + new.cudagraph_bytes


def test_v0_8_5_has_no_startup_check_but_runs_out_of_kv_memory():
    # free 30 GiB at 0.5 of an H100: 0.10.2 refuses at start-up (free 29.5 GiB at the snapshot < 39.59 GiB);
    # 0.8.5 starts, then finds 39.59 - 49.18 (held) - 0.5 - ... < 0 and raises kv_cache_utils.py:526-529.
    free = 30 * GIB
    old = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.5, max_model_len=4096,
                        vllm_version="0.8.5", free_bytes=free)
    assert old.available_kv_bytes < 0 and old.num_blocks == 0
    assert old.errors == ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                          "when initializing the engine.",)
    new = vllm_capacity(LLAMA, "H100-80GB", gpu_memory_utilization=0.5, max_model_len=4096,
                        vllm_version="0.10.2", free_bytes=free)
    assert new.errors[0].startswith("Free memory on device (29.5/79.18 GiB) on startup is less than desired GPU "
                                    "memory utilization (0.5, 39.59 GiB).")


def test_old_max_seq_len_error_wordings():
    from planner.memory.vllm import max_seq_len_error

    need, avail = 16 * GIB, int(3.456 * GIB)
    # 0.8.5 kv_cache_utils.py:541-551: the estimated length is lost (its f-string stands on its own line)
    assert max_seq_len_error(131072, need, avail, 27_000, "0.8.5") == (
        "To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is needed, "
        "which is larger than the available KV cache memory (3.46 GiB). Based on the available memory,  Try "
        "increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.")
    # 0.9.2 kv_cache_utils.py:565-579
    assert max_seq_len_error(131072, need, avail, 27_000, "0.10.2") == (
        "To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is needed, "
        "which is larger than the available KV cache memory (3.46 GiB). Based on the available memory, the "
        "estimated maximum model length is 27000. Try increasing `gpu_memory_utilization` or decreasing "
        "`max_model_len` when initializing the engine.")
    assert max_seq_len_error(131072, need, avail, 0, "0.10.2").endswith("(3.46 GiB).  Try increasing "
                                                                       "`gpu_memory_utilization` or decreasing "
                                                                       "`max_model_len` when initializing the engine.")
    # 0.13.0 kv_cache_utils.py:705-719 adds the docs link; 0.14.0 prints GiB with format_gib ("16.0")
    assert max_seq_len_error(131072, need, avail, 27_000, "0.13.0").endswith(
        "when initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ "
        "for more details.")
    assert "(16.0 GiB KV cache is needed" in max_seq_len_error(131072, need, avail, 27_000, "0.14.0")


def test_old_batch_defaults():
    h100, a100, l4 = (resolve_gpu(n) for n in ("H100-80GB", "A100-80GB", "L4"))
    # 0.8.5 engine/arg_utils.py:1596: any >= 70 GiB card is on the big tier; 0.9.0 :1495 excludes A100s
    assert default_batch_limits(a100, 4096, version="0.8.5") == (1024, 16_384)
    assert default_batch_limits(a100, 4096, version="0.9.0") == (256, 8192)
    assert default_batch_limits(h100, 4096, "OPENAI_API_SERVER", version="0.8.5") == (1024, 8192)
    # no cap of the defaulted tokens at max_num_seqs x max_model_len before 0.12.0 (arg_utils.py:2004)
    assert default_batch_limits(l4, 8, version="0.11.0") == (256, 8192)
    assert default_batch_limits(l4, 8, version="0.12.0") == (256, 2048)
    # a defaulted max_num_seqs is capped at max_num_batched_tokens from 0.10.1 (0.10.2 arg_utils.py:1742)
    assert default_batch_limits(l4, 4096, max_num_batched_tokens=128, version="0.10.2") == (128, 128)
    assert default_batch_limits(l4, 4096, max_num_batched_tokens=128, version="0.10.0") == (256, 128)
    with pytest.raises(InvalidSetupError, match=r"max_num_batched_tokens \(128\) must be greater than or equal"):
        vllm_capacity(LLAMA, "L4", max_model_len=4096, max_num_batched_tokens=128, vllm_version="0.10.0")


def test_old_cudagraph_capture_sizes_and_graph_modes():
    from planner.memory.vllm import forward_bytes_per_token

    # 0.8.5 config.py:4031-4045: [1, 2, 4] + 8..512 step 8 (67 sizes) whatever max_num_seqs is
    assert cudagraph_capture_sizes(16, 4096, "0.8.5") == (1, 2, 4) + tuple(range(8, 513, 8))
    assert len(cudagraph_capture_sizes(16, 4096, "0.9.2")) == 67
    # ... filtered to <= max_num_batched_tokens only
    assert cudagraph_capture_sizes(16, 100, "0.8.5") == (1, 2, 4) + tuple(range(8, 97, 8))
    # 0.10.2 config/scheduler.py:244: 8..min(2 x seqs, 512) step 8; 1, 2, 4 kept even above it
    assert cudagraph_capture_sizes(16, 4096, "0.10.2") == (1, 2, 4, 8, 16, 24, 32)
    assert cudagraph_capture_sizes(1, 4096, "0.10.2") == (1, 2, 4)
    assert len(cudagraph_capture_sizes(200, 8192, "0.11.0")) == 3 + 400 // 8 == 53
    # 0.12.0 config/vllm.py:1069-1074: every 8 below 256, every 16 up to 400 -> 3 + 31 + 10
    assert len(cudagraph_capture_sizes(200, 8192, "0.12.0")) == 3 + 31 + 10 == 44
    # PIECEWISE graphs only before 0.11.0 (0.10.2 config/__init__.py:3389-3393); FULL decode graphs added after
    spec = resolve_model(LLAMA)
    tail = 32 * forward_bytes_per_token(spec)
    assert cudagraph_bytes(spec, 16, 4096, version="0.10.2") == 7 * 32 * 280 * 1024 + tail
    assert cudagraph_bytes(spec, 16, 4096, version="0.11.0") == (7 + 5) * 32 * 280 * 1024 + tail


def _twelve_sliding_thirteen_full():
    cfg = dict(MHA_7B, num_hidden_layers=25, num_key_value_heads=8, sliding_window=1024, max_position_embeddings=8192,
               layer_types=["sliding_attention"] * 12 + ["full_attention"] * 13)
    return spec_from_config(cfg, "12-sliding-13-full")


def test_old_hybrid_grouping():
    # 0.8.5 kv_cache_utils.py:699-708: no hybrid groups; sliding layers are sized as full attention
    gemma2 = resolve_model("google/gemma-2-2b-it")
    old = kv_layout(gemma2, 8192, 4096, version="0.8.5")
    assert len(old.groups) == 1 and old.group_size == 26 and old.blocks_per_request == 8192 // 16
    # 12 sliding + 13 full: 0.9.2-0.11 take the smaller bucket (kv_cache_utils.py:826), so 13 full -> 2 groups
    # of 12 with 11 padding layers; 0.12-0.17 take 13 since 13 < 1.25 x 12 (0.12.0 :1015-1023): 1 padding layer
    spec = _twelve_sliding_thirteen_full()
    v011 = kv_layout(spec, 8192, 4096, version="0.11.0")
    assert (v011.group_size, len(v011.groups), v011.padding_layers) == (12, 3, 11)
    v012 = kv_layout(spec, 8192, 4096, version="0.12.0")
    assert (v012.group_size, len(v012.groups), v012.padding_layers) == (13, 2, 1)
    # sliding blocks per request: cdiv(min(1023 + 4096, 8192), 16) + 1 = 321 (0.9.2 kv_interface.py:148-155)
    assert sorted(g.blocks_per_request for g in v012.groups) == [math.ceil(5119 / 16) + 1, 512]


@pytest.mark.parametrize("version", ["0.8.5", "0.10.2"])
def test_cli_plans_old_releases(version, capsys):
    assert main(CLI + ["--vllm-version", version, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["vllm"]
    assert d["version"] == version and d["startup_ok"]
    assert d["gpu_memory_utilization"] == 0.5
    assert d["log_lines"][-2].startswith("GPU KV cache size: ")
    assert d["held_outside_budget_bytes"] == (512 * MIB if version == "0.8.5" else 0)


def test_cli_refuses_v0_engine_releases_in_one_line(capsys):
    assert main(CLI + ["--vllm-version", "0.8.4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("plan: error: vLLM 0.8.4 is not covered: releases before 0.8.5 size the KV cache "
                          "with the V0 engine")


def test_vllm_capacity_takes_old_versions():
    cap = vllm_capacity(LLAMA, "L4", gpu_memory_utilization=0.9, max_model_len=2048, vllm_version="0.10.2")
    # 0.10.2: L4 on the small tier, 256 seqs and 8192 tokens; float budget
    assert (cap.max_num_seqs, cap.max_num_batched_tokens) == (256, 8192)
    assert cap.budget_bytes == math.floor(23_675_797_504 * 0.9)
    assert cap.version == "0.10.2" and not cap.cudagraph_subtracted
    with pytest.raises(VersionError, match="V0 engine"):
        vllm_capacity(LLAMA, "L4", vllm_version="0.7.3")


# -- quantization names: vLLM's own ---------------------------------------------------------------

def test_mxfp4_is_4_25_bits_per_weight_and_vllms_name_for_gpt_oss(capsys):
    from planner.memory.vllm import MODELLED_QUANTIZATION
    from planner.memory.weights import mxfp4_bytes

    assert mxfp4_bytes(3200) == 3200 * 4.25 / 8 == 1700  # e2m1 pairs + one e8m0 scale per 32
    assert _matrix_bytes(2880, 5760, "mxfp4") == mxfp4_bytes(2880 * 5760)
    oss = resolve_model("openai/gpt-oss-20b")
    own = weights_bytes(oss)  # the checkpoint's own MXFP4 experts
    assert weights_bytes(oss, quantization="mxfp4") == weights_bytes(oss, quantization="MXFP4") == own
    dense = own - sum(mxfp4_bytes(s.in_features * s.out_features) * s.count * s.layers
                      for s in oss.linear_shapes() if s.group == "experts")
    assert 0 < dense < own / 2  # the rest (attention, router, embeddings) 16-bit
    assert main(["vllm", "--model", "openai/gpt-oss-20b", "--gpu", "H100-80GB", "--quantization", "mxfp4",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["vllm"]
    assert d["weight_scheme"] == "mxfp4" and d["weights_bytes"] == own
    assert "mxfp4" in MODELLED_QUANTIZATION
    with pytest.raises(InvalidSetupError, match=r"^quantization 'mxfp4' loads an MXFP4 checkpoint .*Qwen2.5-7B"):
        weights_bytes(resolve_model("Qwen/Qwen2.5-7B-Instruct"), quantization="mxfp4")


@pytest.mark.parametrize("name, says", [
    ("gguf", "is one of vLLM's methods the planner does not model"),
    ("compressed-tensors", "is one of vLLM's methods the planner does not model"),
    ("mxfp44", "is not a vLLM quantization method"),
])
def test_a_quantization_not_modelled_is_one_line_naming_the_modelled(name, says, capsys):
    modelled = "modelled: awq, awq_marlin, bitsandbytes, fp8, gptq, gptq_marlin, mxfp4"
    for argv in (["vllm", "--model", "openai/gpt-oss-20b", "--gpu", "H100-80GB", "--quantization", name],
                 ["estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4",
                  "--vllm-gpu-memory-utilization", "0.5", "--vllm-quantization", name]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"plan: error: quantization '{name}' {says}; {modelled}"]
