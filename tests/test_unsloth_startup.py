"""vLLM's start-up inside the Unsloth process: KV cache, CUDA graphs, sampler warm-up
(planner.runtimes.unsloth.startup_steps) and the ``unsloth-startup`` check."""

import json
from pathlib import Path

import pytest

from planner.memory.vllm import activation_peak_bytes
from planner.runtimes.unsloth import startup_failure, unsloth_checks, unsloth_estimate
from planner.specs.units import GIB

DATA = Path(__file__).resolve().parent.parent / "data" / "unsloth" / "unsloth-reports.jsonl"


def _t4(**kw):
    """Qwen2.5-3B 4-bit on a T4 asking 0.97, vLLM 0.10.2: vLLM's start leaves no room for the warm-up."""
    return unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "T4", gpu_memory_utilization=0.97, vllm_version="0.10.2",
                            load_in_4bit=True, max_seq_length=2048, **kw)


def _startup(e):
    return next(c for c in unsloth_checks(e) if c.id == "unsloth-startup")


def test_steps_follow_vllm_order_kv_graphs_then_sampler_warmup():
    e = _t4(unsloth_version="2025.11.3")
    s = e.startup
    assert list(s) == ["kv_cache_allocated", "cudagraph_capture", "sampler_warmup"]
    cap = e.capacity
    assert s["cudagraph_capture"] - s["kv_cache_allocated"] == cap.cudagraph_bytes + e.extra_cudagraph_bytes
    rows = min(e.max_num_seqs, e.max_num_batched_tokens)
    assert s["sampler_warmup"] - s["cudagraph_capture"] == activation_peak_bytes(e.model, rows, rows, cap.version)
    # the profile's activation headroom is freed before the KV cache: the start never needs more than the
    # load phase (what was in use, vLLM's budget and the graphs outside it)
    assert s["sampler_warmup"] <= e.phases["load_bytes"]


def test_standby_start_that_runs_out_names_the_warmup_and_the_fixes():
    """Unsloth 2025.9.7 keeps a standby request above its 0.9 floor and never retries with standby."""
    e = _t4(unsloth_version="2025.9.7", standby=True)
    step, peak = startup_failure(e)
    assert step == "sampler_warmup" and peak > e.gpu.total_bytes
    c = _startup(e)
    assert c.severity == "error"
    assert c.message.startswith("vLLM's start-up runs out of memory at the sampler warm-up (after the KV cache and "
                                "the CUDA graphs): 14.89 GiB of 14.74 GiB")
    assert "retries" not in c.message
    assert c.fix.startswith("gpu_memory_utilization <= 0.96; fewer sequences (112 would start; Unsloth 2025.9.7 sets "
                            "max_num_seqs itself; max_num_seqs 224: the warm-up samples 224 x 151,936 logits)")
    assert c.fix.endswith("standby off (UNSLOTH_VLLM_STANDBY=0: the request is kept, and a failed start is retried)")


def test_without_standby_unsloth_retries_at_085_and_075_of_the_sequences():
    c = _startup(_t4(unsloth_version="2025.11.3"))
    assert c.severity == "warning"
    assert "; Unsloth retries once at 0.8175 and 168 sequences, which starts" in c.message
    # 2025.3.8's retry keeps the utilisation (vllm_utils.py:1009-1015): it fails again
    c = _startup(_t4(unsloth_version="2025.3.8"))
    assert c.severity == "error" and "retries once at 0.9618 and 168 sequences, which fails too" in c.message


def test_from_2026_10_9_the_fix_names_from_pretrained_max_num_seqs():
    """2026.10.9 keeps an explicit from_pretrained(max_num_seqs=...) (vllm_utils.py:4819-4820); its start of
    this setup fits (its batch table keeps few sequences), so the fix line is read directly."""
    from planner.runtimes.unsloth import _startup_fixes
    e = _t4(unsloth_version="2026.10.9")
    assert _startup(e).severity == "info"
    fixes = _startup_fixes(e, 1)
    assert fixes[1].startswith(f"fewer sequences (from_pretrained(max_num_seqs={e.max_num_seqs * 3 // 4}); ")


def test_a_start_that_fits_is_an_info_line():
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "L4", standby=True, unsloth_version="2025.10.10",
                         vllm_version="0.10.2", load_in_4bit=False, max_seq_length=2048)
    assert startup_failure(e) is None
    c = _startup(e)
    assert c.severity == "info" and c.message.startswith("vLLM starts: kv cache allocated ")


@pytest.mark.parametrize("release, vllm, extra", [
    ("2025.10.13", "0.10.2", False),  # full_cuda_graph=True: FULL graphs, as many as vLLM's piecewise ones
    ("2025.11.1", "0.10.2", True),    # FULL_AND_PIECEWISE on a vLLM whose default is PIECEWISE
    ("2025.11.3", "0.11.2", False),   # vLLM 0.11's default is FULL_AND_PIECEWISE already
])
def test_unsloth_full_decode_graphs_on_vllm_0_10(release, vllm, extra):
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "L4", unsloth_version=release, vllm_version=vllm,
                         load_in_4bit=False, max_seq_length=2048)
    assert (e.extra_cudagraph_bytes > 0) is extra
    assert e.phase_parts["generation"]["vllm.cudagraph"] == e.capacity.cudagraph_bytes + e.extra_cudagraph_bytes


@pytest.mark.xfail(strict=True, reason="known miss: the CUDA-graph pool of an Unsloth engine (LoRA slots, "
                   "FULL_AND_PIECEWISE, 288 sequences) is under-predicted: record 7 printed 'Graph capturing "
                   "finished in 14 secs, took 1.15 GiB' (vLLM 0.11.2, L4); the planner has 0.48 GiB. So the start-up "
                   "OOMs Unsloth's comments report (an L4 at 0.9 with standby, unsloth_zoo 2025.11.3 "
                   "vllm_utils.py:1537) are not predicted. Not the capture sizes (Unsloth keeps vLLM's, "
                   "vllm_utils.py:1770-1772 commented out: 67 sizes, 39 FULL) nor the mode (FULL_AND_PIECEWISE is "
                   "0.11's default). A candidate, not quantified: Unsloth's inductor_compile_config asks Inductor "
                   "for its own CUDA graphs and memory planning (vllm_utils.py:1775-1790 -> temporary_patches/"
                   "common.py:90,93 'triton.cudagraphs', 'memory_planning'), which vLLM 0.11.0 hands to compile_fx "
                   "for every piecewise submodule (compilation/backends.py:337, compiler_interface.py:291-299)")
def test_record_7_cuda_graph_pool_within_25_percent():
    rec = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][6]
    assert rec["model"] == "unsloth/Llama-3.2-1B-Instruct-FP8-Block" and rec["extra"]["cudagraph_gib"] == 1.15
    e = unsloth_estimate("meta-llama/Llama-3.2-1B-Instruct", "L4", standby=True, unsloth_version="2025.11.3",
                         vllm_version="0.11.2", load_in_4bit=False, max_seq_length=2048, weights_fp8=True)
    graphs = (e.capacity.cudagraph_bytes + e.extra_cudagraph_bytes) / GIB
    assert graphs == pytest.approx(1.15, rel=0.25)


def _v0_records():
    import unsloth_reports as ur

    recs = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [(rec, ur.predict(rec)[0]) for rec in recs[3:6]]  # records 4-6: vLLM 0.8.5 inside Unsloth


def test_vllm_085_records_run_the_v0_engine_with_its_activation_peak_and_no_sampler_warmup():
    for rec, e in _v0_records():
        assert e.capacity.engine == "v0"
        assert round(e.capacity.activation_peak_bytes / GIB, 2) == rec["extra"]["vllm_activation_peak_gib"]
        assert e.startup["sampler_warmup"] == e.startup["cudagraph_capture"]
        # V0 captures up to the first size >= max_num_seqs (0.8.5 config.py:4000-4030)
        assert e.capacity.cudagraph_sizes[-1] == -(-e.max_num_seqs // 8) * 8


@pytest.mark.xfail(strict=True, reason="known miss: V0's graph pools (whole-model graphs, its own capture sizes) are "
                   "under-predicted with the v0.19 per-graph-layer cost: record 4 (bitsandbytes, RTX 4090) 0.29 GiB "
                   "against 0.70 printed, record 5 0.23 against 0.34, record 6 0.18 against 0.21; the bitsandbytes "
                   "runs (records 1-4) print ~0.6-0.7 GiB whatever the model size, a per-kernel cost (bnb's dequantize "
                   "+ matmul per shard, 0.8.5 quantization/bitsandbytes.py:356-375) the model does not count")
def test_v0_graph_pools_within_25_percent():
    for rec, e in _v0_records():
        graphs = (e.capacity.cudagraph_bytes + e.extra_cudagraph_bytes) / GIB
        assert graphs == pytest.approx(rec["extra"]["cudagraph_gib"], rel=0.25), rec["model"]


def test_the_graph_pool_miss_ratio_is_the_worst_printed_over_predicted_rounded_up():
    # planner.runtimes.unsloth.GRAPH_POOL_MISS_RATIO: derived from the runs that print their graph pool, not chosen
    import math

    import unsloth_reports as ur
    from planner.runtimes.unsloth import GRAPH_POOL_MISS_RATIO

    ratios = []
    for line in DATA.read_text().splitlines():
        rec = json.loads(line) if line.strip() else None
        printed = ((rec or {}).get("extra") or {}).get("cudagraph_gib")
        e = ur.predict(rec)[0] if printed else None
        if e is not None and e.capacity is not None:
            ratios.append(printed * GIB / (e.capacity.cudagraph_bytes + e.extra_cudagraph_bytes))
    assert len(ratios) == 4
    assert GRAPH_POOL_MISS_RATIO == math.ceil(max(ratios) * 10) / 10


@pytest.mark.parametrize("util,severity", [(0.9, "info"), (0.93, "warning")])
def test_a_start_that_fits_only_if_the_graph_pool_is_right_is_a_warning(util, severity):
    from planner.runtimes.unsloth import GRAPH_POOL_MISS_RATIO

    e = unsloth_estimate("Qwen/Qwen2.5-7B-Instruct", "L4", unsloth_version="2025.11.3", vllm_version="0.11.2",
                         gpu_memory_utilization=util)
    assert startup_failure(e) is None  # it starts, as the model predicts
    graphs = e.capacity.cudagraph_bytes + e.extra_cudagraph_bytes
    spare = e.gpu.total_bytes - max(e.startup.values())
    assert (spare < graphs * (GRAPH_POOL_MISS_RATIO - 1)) is (severity == "warning")
    (check,) = [c for c in unsloth_checks(e) if c.id == "unsloth-startup"]
    assert check.severity == severity
    if severity == "warning":
        assert "CUDA-graph pool has printed up to 2.5x" in check.message and "gpu_memory_utilization <=" in check.fix
