"""planner.memory.sharding, planner.checks.layout and the layout search: per-rank sharding under DDP / ZeRO-1/2/3 / FSDP, vLLM TP and server
layouts, TRL's multi-GPU rules, and the layout solver.

Expected bytes are derived by hand in each test from the formulas the module cites: the ZeRO
paper (Rajbhandari et al. 2020 §5: P_os, P_os+g, P_os+g+p), DeepSpeed 0.19.8's estimators and
defaults, and the TRL 1.16 sources. The toy model below has round dimensions so that every
parameter count can be checked with pencil and paper.
"""

import argparse
import math
import re
import time

import pytest

from planner import estimate_layout
from planner import plan as plan_distributed
from planner.checks.layout import topology_checks
from planner.cli._topology import render
from planner.cli.plan import add_arguments as add_plan_arguments
from planner.cli.plan import plan_from_args
from planner.errors import InfeasibleError, InvalidSetupError
from planner.memory.optimizer import STATE_OVERHEAD_BYTES
from planner.memory.process import NCCL_BUFFER_BYTES_PER_RANK
from planner.memory.sharding import (
    ddp_bucket_bytes,
    decoder_layer_params,
    fp32_gradient_partition_bytes,
    gather_working_set_bytes,
    gradients_per_rank_bytes,
    largest_parameter_params,
    master_weights_per_rank_bytes,
    nccl_bytes_per_rank,
    optimizer_state_per_rank_bytes,
    rank_trainer_memory,
    weight_sync_transient,
    weights_per_rank_bytes,
    zero3_persistent_params,
    zero_bucket_bytes,
)
from planner.memory.trainer import TrainerSetup, trainer_memory
from planner.search.request import plan_request
from planner.search.results import Plan
from planner.search.solver import candidate_topologies as _candidate_topologies
from planner.search.solver import generation_step as _step
from planner.specs.model import resolve_model, spec_from_config
from planner.specs.topology import DEEPSPEED_DEFAULTS, Topology
from planner.specs.units import GIB, MIB

# A Llama-shaped toy: h=1024, I=4096, 4 layers, 8 heads of 128 (no GQA), V=32000, untied head.
TOY = spec_from_config({"model_type": "llama", "hidden_size": 1024, "intermediate_size": 4096,
                        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
                        "vocab_size": 32000, "tie_word_embeddings": False, "max_position_embeddings": 4096,
                        "torch_dtype": "bfloat16"}, "toy/llama-133m")
# embeddings 32000*1024 = 32,768,000, LM head the same; per layer q,k,v,o 4*1024*1024 = 4,194,304
# and gate,up,down 3*1024*4096 = 12,582,912; norms 2 per layer + final: 4*2*1024 + 1024 = 9,216
EMBED = 32_000 * 1_024
LAYER = 4 * 1_024 * 1_024 + 3 * 1_024 * 4_096 + 2 * 1_024  # 16,779,264
P = 2 * EMBED + 4 * (4 * 1_024 * 1_024) + 4 * (3 * 1_024 * 4_096) + (4 * 2 * 1_024 + 1_024)
N = 4


def test_toy_parameter_counts_by_hand():
    assert P == 132_654_080
    assert TOY.param_counts().total == P
    assert decoder_layer_params(TOY) == LAYER == 16_779_264
    assert largest_parameter_params(TOY) == EMBED  # the embedding beats every projection
    assert zero3_persistent_params(TOY) == 9_216  # only the norms are below 1e5 elements


# -- one pure function per term ------------------------------------------------------------------

def test_weights_shard_only_under_zero3_and_fsdp():
    w = 2 * P  # bf16
    for engine in ("ddp", "zero1", "zero2"):
        assert weights_per_rank_bytes(w, engine, N) == w
    # ZeRO-3 (P_os+g+p): 2P/N = 66,327,040 B, plus the persistent norms kept whole (9,216 x 2 B)
    assert weights_per_rank_bytes(w, "zero3", N, persistent_bytes=9_216 * 2) == 66_327_040 + 18_432
    assert weights_per_rank_bytes(w, "fsdp", N, persistent_bytes=9_216 * 2) == 66_327_040  # FULL_SHARD: no persistence


def test_optimizer_state_partitioned_from_zero1_on():
    adam = 8 * P + STATE_OVERHEAD_BYTES  # two fp32 states per parameter + bookkeeping
    assert optimizer_state_per_rank_bytes(adam, "ddp", N) == adam
    for engine in ("zero1", "zero2", "zero3", "fsdp"):
        # P_os: 8P/N = 2P per rank at N=4, the bookkeeping stays whole
        assert optimizer_state_per_rank_bytes(adam, engine, N) == 2 * P + STATE_OVERHEAD_BYTES
    assert optimizer_state_per_rank_bytes(adam, "zero2", 1) == adam  # one rank: nothing to split


def test_gradients_partitioned_from_zero2_on():
    g = 2 * P
    assert gradients_per_rank_bytes(g, "ddp", N) == g
    assert gradients_per_rank_bytes(g, "zero1", N) == g  # ZeRO-1 reduces at the boundary, keeps them whole
    for engine in ("zero2", "zero3", "fsdp"):
        assert gradients_per_rank_bytes(g, engine, N) == g // N


def test_master_weights_and_fp32_grads_are_deepspeeds():
    # DeepSpeed's estimators: "4_params_32bit" and "4_grads_32bit", partitioned 1/N
    for engine in ("zero1", "zero2", "zero3"):
        assert master_weights_per_rank_bytes(P, engine, N) == 4 * P // N == P
        assert fp32_gradient_partition_bytes(P, engine, N) == P
    for engine in ("ddp", "fsdp"):  # train the loaded dtype: no master copy
        assert master_weights_per_rank_bytes(P, engine, N) == 0
        assert fp32_gradient_partition_bytes(P, engine, N) == 0
    assert master_weights_per_rank_bytes(P, "zero2", N, weights="fp32") == 0  # fp32 model: no bf16 mode


def test_deepspeed_buffers_at_documented_defaults():
    assert DEEPSPEED_DEFAULTS["reduce_bucket_size"] == 500_000_000  # DeepSpeedZeroConfig default
    # the reduce (IPG) buffer: 5e8 elements x 2 B (bf16) = 1e9 B, ~0.93 GiB, whatever the model size
    assert zero_bucket_bytes("zero2") == 1_000_000_000
    assert zero_bucket_bytes("zero1") == zero_bucket_bytes("zero3") == 1_000_000_000
    assert zero_bucket_bytes("zero2", overlap_comm=True) == 2_000_000_000  # double buffer
    assert zero_bucket_bytes("ddp") == zero_bucket_bytes("fsdp") == 0
    # DDP keeps its buckets beside the gradients (gradient_as_bucket_view=False): one more copy
    assert ddp_bucket_bytes(2 * P, "ddp", N) == 2 * P
    assert ddp_bucket_bytes(2 * P, "ddp", 1) == 0  # one process: no DDP wrapper
    assert ddp_bucket_bytes(2 * P, "zero2", N) == 0


def test_gather_working_set_by_hand():
    # ZeRO-3: the largest gather unit (here the 32,768,000-element embedding, larger than a
    # 16,779,264-parameter layer) in bf16, x2 for the unit prefetched next
    assert gather_working_set_bytes(TOY, "zero3") == 2 * EMBED * 2 == 131_072_000
    # FSDP2: root unit (embeddings + LM head + final norm) unsharded, plus current + prefetched layer
    root = 2 * EMBED + 1_024
    assert gather_working_set_bytes(TOY, "fsdp") == (root + 2 * LAYER) * 2
    # full fine-tuning adds one layer's unsharded gradient before its reduce-scatter
    assert gather_working_set_bytes(TOY, "fsdp", finetune="full") == (root + 2 * LAYER) * 2 + LAYER * 2
    assert gather_working_set_bytes(TOY, "zero2") == gather_working_set_bytes(TOY, "ddp") == 0


def test_nccl_buffers_per_rank():
    assert nccl_bytes_per_rank(1) == 0
    assert nccl_bytes_per_rank(4) == NCCL_BUFFER_BYTES_PER_RANK == 512 * MIB
    # server mode: rank 0 also joins the weight-transfer group with the server
    assert nccl_bytes_per_rank(4, "server") == 2 * 512 * MIB
    assert nccl_bytes_per_rank(1, "server") == 512 * MIB


# -- the whole training rank, per engine ---------------------------------------------------------

def _full(engine: str, world: int = N):
    setup = TrainerSetup(weights="bf16", finetune="full", optim="adamw_torch", batch_size=1, prompt_length=64,
                         completion_length=64, logprob_head="fused")
    tm = trainer_memory(TOY, setup)
    topo = Topology(num_gpus=world, engine=engine)
    return tm, rank_trainer_memory(TOY, setup, topo, trainer=tm)


def test_rank_memory_ddp():
    tm, r = _full("ddp")
    c = r.components
    assert c["weights"] == 2 * P
    # torch's AdamW on the bf16 parameters DDP trains: bf16 states, 4 B per parameter (DeepSpeed's
    # ZeRO below steps an fp32 master partition: 8 B, sharded)
    assert c["optimizer_state"] == 4 * P + STATE_OVERHEAD_BYTES
    assert c["gradients"] == tm.components["gradients"]
    assert c["ddp_buckets"] == tm.components["gradients"]
    assert c["master_weights"] == c["zero_buckets"] == c["gather_working_set"] == 0
    assert c["nccl"] == 512 * MIB


def test_rank_memory_zero1():
    tm, r = _full("zero1")
    c = r.components
    assert c["weights"] == 2 * P  # replicated
    assert c["optimizer_state"] == 2 * P + STATE_OVERHEAD_BYTES  # 8P / 4
    assert c["master_weights"] == P  # 4P / 4
    assert c["gradients"] == tm.components["gradients"]  # whole
    assert c["zero_buckets"] == 1_000_000_000
    # the fp32 gradient partition (4P/4 = P) only counts beyond the activations it replaces
    act = tm.components["activations"] + tm.components["logprob_head"]
    assert c["fp32_gradient_partition"] == max(0, P - act)
    assert c["ddp_buckets"] == 0


def test_rank_memory_zero2():
    tm, r = _full("zero2")
    c = r.components
    assert c["weights"] == 2 * P
    # the same moment, sharded: FSDP's reduce-scatter leaves each rank a quarter of the gradients
    assert r.moment_components["backward"]["gradients"] == math.ceil(tm.moment("backward")["gradients"] / 4)
    assert c["optimizer_state"] == 2 * P + STATE_OVERHEAD_BYTES
    assert c["master_weights"] == P


def test_rank_memory_zero3():
    _, r = _full("zero3")
    c = r.components
    assert c["weights"] == 66_327_040 + 9_216 * 2  # 2P/4 + persistent norms
    assert c["gradients"] == 0
    assert c["gradient_partition"] == 2 * P // 4  # DeepSpeed's resident 16-bit grad partition
    assert c["optimizer_state"] == 2 * P + STATE_OVERHEAD_BYTES
    assert c["master_weights"] == P
    assert c["gather_working_set"] == 131_072_000
    # full fine-tuning syncs parameter by parameter: the largest one (the embedding) in bf16
    assert r.sync_components == {"zero3_param_gather": EMBED * 2}


def test_rank_memory_fsdp():
    tm, r = _full("fsdp")
    c = r.components
    assert c["weights"] == 66_327_040
    # the same moment, sharded: FSDP's reduce-scatter leaves each rank a quarter of the gradients
    assert r.moment_components["backward"]["gradients"] == math.ceil(tm.moment("backward")["gradients"] / 4)
    assert c["master_weights"] == c["zero_buckets"] == 0


def test_stage_ladder_lowers_model_states():
    states = {}
    for engine in ("ddp", "zero1", "zero2", "zero3"):
        _, r = _full(engine)
        c = r.components
        states[engine] = (c["weights"] + c["optimizer_state"] + c["master_weights"] + c["gradients"]
                          + c.get("gradient_partition", 0))
    assert states["ddp"] > states["zero1"] > states["zero2"] > states["zero3"]


def test_one_process_shards_nothing():
    _, r = _full("zero3", world=1)
    assert r.engine == "ddp"
    assert r.components["weights"] == 2 * P and "nccl" not in r.components
    assert set(r.components) == set(trainer_memory(TOY, TrainerSetup(finetune="full")).components)


def test_zero2_model_states_match_deepspeed_estimator():
    ds = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    # DeepSpeed 0.19.8: GPU = 2P + 18P/N ("2 = params_16bit, 18 = 2_grads_16bit + 4_grads_32bit +
    # 4_params_32bit + 8_optimizer_states_32bit")
    _, gpu = ds.estimate_zero2_model_states_mem_needs(P, num_gpus_per_node=N, num_nodes=1, cpu_offload=False)
    ours = (weights_per_rank_bytes(2 * P, "zero2", N) + gradients_per_rank_bytes(2 * P, "zero2", N)
            + master_weights_per_rank_bytes(P, "zero2", N) + fp32_gradient_partition_bytes(P, "zero2", N)
            + optimizer_state_per_rank_bytes(8 * P + STATE_OVERHEAD_BYTES, "zero2", N) - STATE_OVERHEAD_BYTES)
    assert ours == gpu == 2 * P + 18 * P // N


def test_zero3_model_states_against_deepspeed_estimator():
    ds = pytest.importorskip("deepspeed.runtime.zero.stage3")
    # DeepSpeed 0.19.8: GPU = 4 x largest_layer + 18P/N. Its 18 leaves out the 16-bit gradient
    # partition stage3.py allocates (grad_partitions_flat_buffer, 2P/N): ours is 20P/N.
    _, gpu, largest = ds.estimate_zero3_model_states_mem_needs(P, LAYER, num_gpus_per_node=N, num_nodes=1,
                                                               cpu_offload=False, cpu_offload_params=False)
    _, r = _full("zero3")
    c = r.components
    ours = (c["weights"] - 9_216 * 2 + c["gradient_partition"] + c["master_weights"]
            + c["optimizer_state"] - STATE_OVERHEAD_BYTES + fp32_gradient_partition_bytes(P, "zero3", N))
    assert ours == 20 * P // N
    assert ours - 2 * P // N == gpu - largest


def test_lora_under_deepspeed_runs_in_bf16():
    setup = TrainerSetup(weights="bf16", finetune="lora", lora_rank=16, optim="adamw_8bit", batch_size=1,
                         prompt_length=64, completion_length=64)
    tm = trainer_memory(TOY, setup)
    trainable = tm.trainable_params
    # r=16 on q,k,v,o (1024->1024) and gate,up (1024->4096), down (4096->1024): 16*(in+out) each, 4 layers
    assert trainable == 4 * 16 * (4 * 2_048 + 2 * 5_120 + 5_120)
    r2 = rank_trainer_memory(TOY, setup, Topology(N, engine="zero2"), trainer=tm)
    assert r2.components["adapters"] == trainable * 2  # bf16 module, fp32 copy is the master partition
    assert r2.components["master_weights"] == math.ceil(4 * trainable / N)
    rd = rank_trainer_memory(TOY, setup, Topology(N, engine="ddp"), trainer=tm)
    assert rd.components["adapters"] == trainable * 4  # DDP keeps PEFT's fp32 adapters


def test_zero3_peft_sync_gathers_the_whole_model():
    setup = TrainerSetup(weights="bf16", finetune="lora", lora_rank=16, batch_size=1, prompt_length=64,
                         completion_length=64)
    trainable = trainer_memory(TOY, setup).trainable_params
    sync = weight_sync_transient(TOY, setup, "zero3")
    # TRL 1.16 vllm_generation.py: gather_params(list(model.parameters())) before merge_adapter()
    assert sync["zero3_full_gather"] == 2 * P + 2 * trainable
    assert "zero3_full_gather" not in weight_sync_transient(TOY, setup, "zero2")
    assert "merge_transient" in weight_sync_transient(TOY, setup, "ddp")


# -- topology and TRL's rules --------------------------------------------------------------------

def test_topology_world_sizes():
    assert Topology(8).world_size == 8
    t = Topology(8, vllm_mode="server", server_gpus=2, server_tensor_parallel_size=2)
    assert (t.world_size, t.training_devices, t.server_devices) == (6, "2,3,4,5,6,7", "0,1")
    t = Topology(8, num_nodes=3, vllm_mode="server", server_gpus=8, server_tensor_parallel_size=8)
    assert (t.world_size, t.training_nodes, t.idle_gpus) == (16, 2, 0)
    assert Topology(8, vllm_tensor_parallel_size=2).num_engines == 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_gpus=4, vllm_mode="server", server_gpus=4, server_tensor_parallel_size=4), "no training GPU|none train"),
    (dict(num_gpus=4, vllm_mode="server", server_gpus=2, server_tensor_parallel_size=1), r"must equal server TP x DP"),
    (dict(num_gpus=4, engine="zero4"), "--engine must be one of"),
    (dict(num_gpus=0), "--num-gpus must be a positive integer"),
    (dict(num_gpus=4, server_gpus=1), "server_gpus is for vllm_mode='server'"),
])
def test_topology_rejects_impossible_layouts(kwargs, match):
    with pytest.raises(InvalidSetupError, match=match):
        Topology(**kwargs)


def _ids(checks, severity=None):
    return {c.id for c in checks if severity is None or c.severity == severity}


def test_checks_tp_must_divide_world_heads_and_stay_on_a_node():
    spec = resolve_model("meta-llama/Llama-3.1-8B-Instruct")  # 32 heads, 8 KV heads
    bad = Topology(6, vllm_tensor_parallel_size=4)
    errors = _ids(topology_checks(spec, bad), "error")
    assert {"vllm-tensor-parallel", "vllm-tp-nodes"} <= errors
    assert "vllm-tp-heads" in _ids(topology_checks(spec, Topology(6, vllm_tensor_parallel_size=3)), "error")
    assert not _ids(topology_checks(spec, Topology(8, vllm_tensor_parallel_size=2)), "error")
    # TP 16 divides the 32 heads, and 8 KV heads divide 16: allowed, but vLLM replicates KV heads
    warn = [c for c in topology_checks(spec, Topology(16, vllm_tensor_parallel_size=16)) if c.id == "vllm-tp-heads"]
    assert [c.severity for c in warn] == ["warning"]
    # TP 5 and 8 KV heads do not divide one another (QKVParallelLinear)
    qwen32 = resolve_model("Qwen/Qwen2.5-32B-Instruct")
    assert "vllm-tp-heads" in _ids(topology_checks(qwen32, Topology(5, vllm_tensor_parallel_size=5)), "error")


def test_checks_server_rules():
    dense = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    t = Topology(8, vllm_mode="server", server_gpus=2, server_tensor_parallel_size=1, server_data_parallel_size=2)
    assert "server-data-parallel" in _ids(topology_checks(dense, t), "error")  # trl vllm-serve: DP>1 dense errors
    moe = resolve_model("Qwen/Qwen3-30B-A3B")
    assert "server-data-parallel" not in _ids(topology_checks(moe, t))
    ok = topology_checks(dense, Topology(8, vllm_mode="server", server_gpus=2, server_tensor_parallel_size=2))
    assert [c.severity for c in ok if c.id == "server-gpu-overlap"] == ["info"]
    assert "nccl-memory" in _ids(ok, "info")


def test_checks_mixed_gpu_sizes():
    spec = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    checks = topology_checks(spec, Topology(2), gpus=["H100-80GB", "A100-40GB"])
    c = [c for c in checks if c.id == "gpu-mixed-sizes"][0]
    assert c.severity == "warning" and "A100-40GB" in c.message


def test_checks_generation_batch_at_the_real_world_size():
    spec = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    # B=3, world 4, S=2: 24 completions, not a multiple of G=16
    bad = {"per_device_train_batch_size": 3, "num_generations": 16, "generation_batch_size": 24}
    assert "trl-generation-batch" in _ids(topology_checks(spec, Topology(4), config=bad), "error")
    good = {"per_device_train_batch_size": 3, "num_generations": 8, "generation_batch_size": 24}
    assert "trl-generation-batch" in _ids(topology_checks(spec, Topology(4), config=good), "info")


def test_step_granularity_follows_trl_divisibility():
    # completions per device must be a multiple of B, and B x S x world a multiple of G:
    # B=3, G=8, world 4: per device a multiple of lcm(3, 8/gcd(8,4)=2) = 6
    assert _step(3, 8, 4) == 6
    assert _step(4, 8, 8) == 4  # 8 ranks already make any per-device count a multiple of 8
    assert _step(1, 8, 1) == 8  # one GPU: the single-GPU solver's lcm(B, G)


def candidate_topologies(spec, num_gpus, **topology):
    return _candidate_topologies(spec, plan_request(spec, "H100-80GB", num_gpus=num_gpus, **topology))


def test_candidate_layouts_follow_the_rules():
    spec = resolve_model("Qwen/Qwen2.5-32B-Instruct")  # 40 heads, 8 KV heads
    topos, rejected = candidate_topologies(spec, 8)
    colocate_tps = {t.vllm_tensor_parallel_size for t in topos if t.vllm_mode == "colocate"}
    assert colocate_tps == {1, 2, 4, 8}  # divisors of 8 that vLLM accepts
    server = {(t.server_gpus, t.server_tensor_parallel_size, t.server_data_parallel_size)
              for t in topos if t.vllm_mode == "server"}
    assert server == {(1, 1, 1), (2, 2, 1), (4, 4, 1)}  # dense: TP = server GPUs, DP 1
    assert {t.server_gpus for t, _ in rejected} >= {3, 5, 6, 7}  # TP 5: 8 KV heads vs 5
    # several nodes: node 0 serves, whole
    multi, _ = candidate_topologies(spec, 8, num_nodes=2, layout="server", engine="zero2")
    assert [(t.server_gpus, t.world_size, t.engine) for t in multi] == [(8, 8, "zero2")]
    # MoE: the server may split TP x DP
    moe, _ = candidate_topologies(resolve_model("Qwen/Qwen3-30B-A3B"), 8, layout="server", engine="ddp")
    assert (4, 2, 2) in {(t.server_gpus, t.server_tensor_parallel_size, t.server_data_parallel_size) for t in moe}


# -- colocated vLLM with tensor parallelism ------------------------------------------------------

def test_colocated_tp_splits_weights_and_kv():
    from planner.memory import vllm

    spec = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    one = plan_distributed(spec, "H100-80GB", 2, layout="colocate", vllm_tensor_parallel_size=1, engine="ddp")
    two = plan_distributed(spec, "H100-80GB", 2, layout="colocate", vllm_tensor_parallel_size=2, engine="ddp")
    c1, c2 = one.roles["training_rank"].vllm, two.roles["training_rank"].vllm
    assert c2.tensor_parallel_size == 2
    # KV per token per GPU: 32 layers x (8 KV heads / TP) x 128 x 2 (K, V) x 2 B
    assert c1.kv_bytes_per_token == 32 * 8 * 128 * 2 * 2 == 131_072
    assert c2.kv_bytes_per_token == 32 * 4 * 128 * 2 * 2 == 65_536
    assert c2.weights_bytes == vllm.weights_bytes(spec, tp=2) < 0.55 * c1.weights_bytes
    # TP > 1 costs ~1.5 GiB more outside the weights per GPU (NCCL / custom all-reduce buffers,
    # docs/vllm-memory.md §8): baseline + non-torch growth
    extra = (c2.baseline_bytes + c2.non_torch_bytes) - (c1.baseline_bytes + c1.non_torch_bytes)
    assert extra > 1.5 * GIB
    # TRL passes max_num_seqs = B x TP x S to each engine
    cfg = two.config
    S = cfg["gradient_accumulation_steps"]
    assert c2.max_num_seqs == cfg["per_device_train_batch_size"] * 2 * S
    assert cfg["vllm_tensor_parallel_size"] == 2 and two.topology.world_size % 2 == 0


# -- the solver ----------------------------------------------------------------------------------

def _trl_rules_hold(dp: Plan):
    cfg, world = dp.config, dp.topology.world_size
    B, G = cfg["per_device_train_batch_size"], cfg["num_generations"]
    gbs = cfg["generation_batch_size"]
    assert gbs % (B * world) == 0  # grpo_config.py: divisible by the global batch
    assert gbs % G == 0  # ... and by num_generations
    assert gbs // (B * world) == cfg["gradient_accumulation_steps"]
    if cfg["vllm_mode"] == "colocate":
        assert world % cfg["vllm_tensor_parallel_size"] == 0


def test_eight_gpus_8b_colocates_with_ddp():
    t0 = time.perf_counter()
    dp = plan_distributed("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", num_gpus=8)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0  # a few hundred ms here; generous for slow CI machines
    assert dp.topology.vllm_mode == "colocate" and dp.topology.engine == "ddp"
    assert dp.fits
    _trl_rules_hold(dp)
    chosen = [r for r in dp.layouts if r.chosen]
    assert len(chosen) == 1 and chosen[0].option.key() == max(r.option.key() for r in dp.layouts if r.fits)
    for row in dp.layouts:
        if row.fits:
            assert row.option.peak_bytes <= dp.budget_bytes


def test_32b_on_8_gpus_serves_and_zero3_peft_sync_does_not_fit():
    dp = plan_distributed("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", num_gpus=8, layout="auto")
    t = dp.topology
    assert t.vllm_mode == "server" and dp.fits
    _trl_rules_hold(dp)
    # training ranks hold no vLLM memory; the server GPUs do
    train = dp.roles["training_rank"]
    assert not any(k.startswith("vllm.") for p in train.phases for k in p.components)
    server = dp.roles["server_gpu"]
    assert server.count == t.server_gpus and server.vllm.tensor_parallel_size == t.server_tensor_parallel_size
    assert server.peak_bytes <= server.budget_bytes
    assert dp.config["vllm_server_port"] == 8000 and "vllm_gpu_memory_utilization" not in dp.config
    assert set(t.server_devices.split(",")).isdisjoint(t.training_devices.split(","))
    # ZeRO-3 + LoRA: the full-model gather at weight sync (61 GiB of bf16 weights) rules it out
    z3 = [r for r in dp.layouts if r.topology.engine == "zero3" and r.topology.vllm_mode == "server"]
    assert z3 and not any(r.fits for r in z3)
    assert any("weight sync" in r.why for r in z3)


def test_higher_stage_only_when_lower_ones_do_not_reach_the_objective():
    dp = plan_distributed("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", num_gpus=4, finetune="full",
                          optim="adamw_torch", layout="colocate")
    assert dp.topology.engine in ("zero1", "zero2", "zero3")
    ddp = [r for r in dp.layouts if r.topology.engine == "ddp"]
    assert ddp and not any(r.fits for r in ddp)  # 8 B/param of Adam state does not fit whole
    assert any("DDP does not fit" in r for r in dp.reasons)


def test_mixed_gpus_plan_for_the_smallest():
    dp = plan_distributed("Qwen/Qwen2.5-1.5B-Instruct", ["H100-80GB", "A100-40GB"], num_gpus=2)
    assert dp.gpu.name == "A100-40GB"
    assert "gpu-mixed-sizes" in _ids(dp.checks, "warning")
    with pytest.raises(InvalidSetupError, match="GPU names for 4 GPUs"):
        plan_distributed("Qwen/Qwen2.5-1.5B-Instruct", ["H100-80GB"] * 3, num_gpus=4)


def test_multi_node_server_uses_node_0():
    dp = plan_distributed("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", num_gpus=8, num_nodes=2,
                          layout="server", engine="zero2", server_host="10.0.0.1")
    t = dp.topology
    assert (t.server_gpus, t.world_size, t.training_nodes) == (8, 8, 1)
    assert dp.config["vllm_server_host"] == "10.0.0.1"
    assert dp.accelerate["num_processes"] == 8 and dp.accelerate["num_machines"] == 1


def test_nothing_fits_names_the_layouts():
    with pytest.raises(InfeasibleError, match="no layout fits meta-llama/Llama-3.3-70B-Instruct on 2 x L4"):
        plan_distributed("meta-llama/Llama-3.3-70B-Instruct", "L4", num_gpus=2)


def test_bad_layout_arguments():
    with pytest.raises(InvalidSetupError, match="^layout must be one of"):
        plan_distributed("Qwen/Qwen2.5-0.5B-Instruct", "L4", 2, layout="pipeline")
    with pytest.raises(InvalidSetupError, match="server_gpus=2 leaves no training GPU"):
        plan_distributed("Qwen/Qwen2.5-0.5B-Instruct", "L4", 2, layout="server", server_gpus=2)


def test_to_dict_and_render():
    dp = plan_distributed("Qwen/Qwen2.5-1.5B-Instruct", "L4", num_gpus=2)
    d = dp.to_dict()
    assert d["topology"]["world_size"] == dp.topology.world_size
    assert d["roles"]["training_rank"]["peak_bytes"] == dp.roles["training_rank"].peak_bytes
    assert any(row["chosen"] for row in d["layouts"])
    assert d["deepspeed_defaults"]["reduce_bucket_size"] == 500_000_000
    text = render(dp)
    assert "layouts considered:" in text and "chosen" in text and "training rank" in text
    assert "|" not in text.split("layouts considered:")[1].split("why:")[0]  # a plain aligned table


def test_cli_flags_reach_the_layout_search():
    p = argparse.ArgumentParser()
    add_plan_arguments(p)
    args = p.parse_args(["--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "L4,L4", "--num-gpus", "2",
                         "--layout", "colocate", "--engine", "ddp"])
    assert args.vllm_tensor_parallel_size is None  # the solver chooses unless given
    dp = plan_from_args(args)
    assert dp.topology.vllm_mode == "colocate" and dp.topology.engine == "ddp"
    assert [g.name for g in dp.gpus] == ["L4", "L4"]
    fixed = p.parse_args(["--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "L4", "--num-gpus", "2",
                          "--layout", "colocate", "--vllm-tensor-parallel-size", "2"])
    assert plan_from_args(fixed).topology.vllm_tensor_parallel_size == 2


def test_estimate_fixed_setup_without_search():
    e = estimate_layout("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", 4, engine="zero2", batch_size=8,
                        steps_per_generation=4, vllm_gpu_memory_utilization=0.5, completion_length=1024)
    assert e.config["generation_batch_size"] == 8 * 4 * 4 and e.config["vllm_gpu_memory_utilization"] == 0.5
    assert e.fits and e.reasons[0].startswith("evaluated as given")
    # the ZeRO-3 + LoRA sync spike makes a 32B server layout fail, and the estimate says where
    bad = estimate_layout("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", 8, layout="server", server_gpus=2,
                          engine="zero3", batch_size=4, steps_per_generation=4)
    tr = bad.roles["training_rank"]
    assert not bad.fits and tr.binding_phase == "weight_sync"
    assert tr.phase("weight_sync").components["trainer.zero3_full_gather"] > 60 * GIB


def test_estimate_from_cli_arguments(capsys):
    from planner.cli import main

    rc = main(["estimate", "--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "L4", "--num-gpus", "2",
               "--batch-size", "4", "--steps-per-generation", "2", "--prompt-length", "128",
               "--completion-length", "256", "--vllm-gpu-memory-utilization", "0.4", "--json"])
    assert rc == 0
    import json

    e = json.loads(capsys.readouterr().out)
    assert (e["topology"]["vllm_mode"], e["topology"]["engine"], e["topology"]["world_size"]) == ("colocate", "ddp", 2)
    assert e["config"]["per_device_train_batch_size"] == 4 and e["config"]["max_completion_length"] == 256


@pytest.mark.parametrize("engine", ["ddp", "zero1", "zero2", "zero3", "fsdp"])
def test_the_optimizer_steps_temporary_is_the_ranks_partition(engine):
    # adamw_torch's foreach sqrt buffer: parameter-sized on one process (bf16 here); DeepSpeed steps the
    # client optimizer on the rank's fp32 master partition (ZeRO-3: at most a 1e9-element sub-group),
    # FSDP on the rank's shards, DDP on every parameter
    tm, rank = _full(engine)
    single = tm.moment("optimizer_step")["optimizer_step"]
    trainable = tm.trainable_params
    assert single == trainable * 2
    expected = {"ddp": single, "fsdp": -(-single // N)}.get(engine, -(-trainable // N) * 4)
    assert rank.moment_components["optimizer_step"]["optimizer_step"] == expected
    # the rank's peak is its largest moment, and its components are that moment's
    assert rank.peak_bytes == max(rank.moments.values()) == rank.moments[rank.binding_moment]


def test_zero3_steps_one_sub_group_at_a_time():
    from planner.memory.sharding import optimizer_step_per_rank_bytes
    from planner.specs.topology import ZERO3_SUB_GROUP_SIZE

    trainable = 32_000_000_000
    assert optimizer_step_per_rank_bytes(trainable * 2, trainable, "zero3", 8) == ZERO3_SUB_GROUP_SIZE * 4
    assert optimizer_step_per_rank_bytes(trainable * 2, trainable, "zero2", 8) == trainable // 8 * 4
    assert optimizer_step_per_rank_bytes(0, trainable, "zero3", 8) == 0  # fused / 8-bit: nothing to shard
    assert DEEPSPEED_DEFAULTS["sub_group_size"] == ZERO3_SUB_GROUP_SIZE


def test_issue23_zero3_on_8_ranks_steps_an_eighth_and_names_its_moment():
    # the issue's example: Qwen2.5-32B full fine-tuning, ZeRO-3 on 8 H100s, adamw_torch (foreach)
    from planner.specs.topology import ZERO3_SUB_GROUP_SIZE

    spec = resolve_model("Qwen/Qwen2.5-32B-Instruct")
    setup = TrainerSetup(weights="bf16", finetune="full", optim="adamw_torch", prompt_length=256,
                         completion_length=512)
    tm = trainer_memory(spec, setup)
    rank = rank_trainer_memory(spec, setup, Topology(num_gpus=8, engine="zero3"), trainer=tm)
    single = tm.moment("optimizer_step")["optimizer_step"]
    on_rank = rank.moment_components["optimizer_step"]["optimizer_step"]
    assert single == tm.trainable_params * 2  # one bf16 temporary per parameter on one process: 61 GiB
    # the rank's fp32 master partition, one 1e9-element sub-group at a time: 3.7 GiB, 1/16 of it
    assert on_rank == ZERO3_SUB_GROUP_SIZE * 4 <= single / 8
    assert rank.peak_bytes == max(rank.moments.values()) == rank.moments[rank.binding_moment]
    # its JSON has every moment and names the binding one
    d = rank.to_dict()
    assert set(d["moments"]) == set(tm.moments) and d["binding_moment"] == rank.binding_moment


def test_the_plan_text_lists_the_ranks_moments():
    p = plan_distributed("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", num_gpus=2, finetune="full", optim="adamw_torch")
    rank = p.roles["training_rank"].rank
    line = next(x for x in render(p).splitlines() if x.startswith("  trainer step moments: "))
    assert [part.split()[0] for part in line.split(": ", 1)[1].split(", ")] == list(rank.moments)
    assert re.search(rf"{rank.binding_moment} +[\d.]+ GiB \(binding\)", line) and line.count("(binding)") == 1
    assert p.to_dict()["roles"]["training_rank"]["trainer"]["binding_moment"] == rank.binding_moment
