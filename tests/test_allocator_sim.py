"""planner.profiler.allocator_sim: the caching allocator's rules, and the replay against measured reserve."""

import json

import pytest

from planner.profiler.allocator_sim import CachingAllocator, allocation_size, replay, round_size

MIB = 1 << 20


def test_request_rounding_and_segment_sizes():
    # c10/cuda/CUDACachingAllocator.cpp: round_size (512 B blocks), get_allocation_size
    assert [round_size(n) for n in (1, 512, 513, 4096)] == [512, 512, 1024, 4096]
    assert allocation_size(1 * MIB) == 2 * MIB  # small pool: a 2 MiB segment
    assert allocation_size(1 * MIB + 512) == 20 * MIB  # 1-10 MiB: a 20 MiB segment
    assert allocation_size(10 * MIB) == 10 * MIB  # from 10 MiB: the request rounded up to 2 MiB
    assert allocation_size(11 * MIB + 1) == 12 * MIB


def test_small_requests_share_a_segment_and_large_ones_split_a_20_mib_one():
    a = CachingAllocator()
    for k in range(4):
        a.malloc(k, 256 * 1024)
    assert (a.reserved, a.allocated, a.segments_mapped) == (2 * MIB, 1 * MIB, 1)
    a.malloc(10, 3 * MIB)
    a.malloc(11, 5 * MIB)  # fits the rest of the first 20 MiB segment
    assert a.segments_mapped == 2 and a.reserved == 22 * MIB


def test_best_fit_reuses_the_smallest_free_block_and_merges_neighbours():
    a = CachingAllocator()
    a.malloc("big", 64 * MIB)
    a.malloc("mid", 32 * MIB)
    a.free("big")
    a.free("mid")
    a.malloc("x", 30 * MIB)  # the 32 MiB block, not the 64 MiB one
    assert a.segments_mapped == 2
    a.malloc("y", 40 * MIB)  # split from the 64 MiB block: 24 MiB left free
    a.malloc("z", 20 * MIB)  # the 24 MiB remainder
    assert a.segments_mapped == 2 and a.reserved == 96 * MIB
    a.free("y")
    a.free("z")  # merges back into one 64 MiB block
    a.malloc("w", 64 * MIB)
    assert a.segments_mapped == 2


def test_a_remainder_of_at_most_1_mib_is_not_split_off_a_large_block():
    a = CachingAllocator()
    a.malloc("a", 12 * MIB)
    a.free("a")
    a.malloc("b", 11 * MIB + 512)  # 12 MiB - request <= 1 MiB: handed out whole
    assert a.allocated == 12 * MIB


def test_frees_strand_memory_that_differently_sized_requests_cannot_use():
    # a freed 100 MiB block cannot serve a 120 MiB request: the reserve grows by a new segment
    a = replay([("malloc", 1, 100 * MIB), ("free", 1), ("malloc", 2, 120 * MIB)])
    assert (a.peak_allocated, a.peak_reserved) == (120 * MIB, 220 * MIB)
    a.empty_cache()
    assert a.reserved == 120 * MIB


def test_replay_of_traced_steps_reproduces_measured_reserve():
    # two H100 calibration rows (LoRA, after the model's first step): the allocator replayed on the
    # traced step's allocations (TracedStep.replayed_reserve_bytes) against peak_reserved_step - peak_alloc_step
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("trl")
    from calibration_data import calibration_path

    from planner.profiler.trace import Shape, trace_steps
    from planner.specs.model import resolve_model

    rows = [json.loads(line) for line in calibration_path().read_text().splitlines() if line.strip()]
    wanted = {("meta-llama/Llama-3.2-1B-Instruct", True, 8, 256, 1792),
              ("meta-llama/Llama-3.2-1B-Instruct", False, 4, 256, 1024)}
    picked = [r for r in rows if r.get("stage") == "step" and r.get("mode") == "lora"
              and (r["model"], r["grad_ckpt"], r["batch"], r["prompt_len"], r["completion_len"]) in wanted]
    assert len(picked) == 2
    for r in picked:
        res = trace_steps(resolve_model(r["model"]), [Shape(r["batch"], r["prompt_len"], r["completion_len"])],
                          weights="bf16", finetune="lora", lora_rank=16, gradient_checkpointing=r["grad_ckpt"])
        replayed = res.steps[0].replayed_reserve_bytes
        measured = (r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]) * MIB
        assert abs(replayed - measured) <= 25 * MIB, (r["grad_ckpt"], replayed / MIB, measured / MIB)
        assert res.steps[0].to_dict()["replayed_reserve_bytes"] == replayed


# -- expandable_segments: one growing segment per pool (allocator_sim's module docstring) --------------------

def test_expandable_segments_grow_one_segment_in_20_mib_pages_and_grow_its_free_end_in_place():
    a = CachingAllocator(expandable_segments=True)
    a.malloc(1, 30 * MIB)
    assert a.reserved == 40 * MIB  # two 20 MiB pages
    a.malloc(2, 5 * MIB)  # the 10 MiB free end serves it: nothing mapped
    assert a.reserved == 40 * MIB
    a.malloc(3, 10 * MIB)  # 5 MiB free at the end: one more page, not a segment of its own
    assert a.reserved == 60 * MIB
    a.free(1)
    a.malloc(4, 25 * MIB)  # best fit inside the segment: the 30 MiB hole
    assert (a.reserved, a.allocated) == (60 * MIB, 40 * MIB)


def test_expandable_segments_split_any_remainder_and_keep_small_requests_in_2_mib_pages():
    a = CachingAllocator(expandable_segments=True)
    a.malloc("a", 12 * MIB)
    a.free("a")
    a.malloc("b", 11 * MIB + 512)  # the default hands the 12 MiB block out whole; here it is split
    assert a.allocated == 11 * MIB + 512
    a.malloc("s", 256 * 1024)
    assert a.reserved == 20 * MIB + 2 * MIB


def test_expandable_segments_stay_mapped_until_empty_cache_unmaps_the_free_end():
    events = [("malloc", 1, 100 * MIB), ("free", 1), ("malloc", 2, 120 * MIB)]
    default, expandable = replay(events), replay(events, expandable_segments=True)
    assert default.peak_reserved == 220 * MIB  # a second segment beside the stranded first
    assert expandable.peak_reserved == 120 * MIB  # the freed 100 MiB grown in place by one page
    expandable.malloc(3, 10 * MIB)
    expandable.free(2)
    expandable.empty_cache()  # the 120 MiB hole is below a live block: it stays mapped
    assert expandable.reserved == 140 * MIB
    expandable.free(3)
    expandable.empty_cache()
    assert expandable.reserved == 0


def test_expandable_fractions_are_the_largest_replayed_ratio_rounded_up():
    # planner/memory/allocator.py derives them from benchmarks/results/allocator_replay_expandable.txt
    import math
    import re
    from pathlib import Path

    import planner.memory.allocator as al

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "allocator_replay_expandable.txt").read_text()
    largest = {k: float(v) for k, v in re.findall(r"^  (gc|none|full_gc) +n +\d+ +min \S+ +median \S+ +max (\S+)$",
                                                    text, re.M)}
    assert set(largest) == {"gc", "none", "full_gc"}
    assert al.RESERVE_FRACTION_CHECKPOINTED_EXPANDABLE == math.ceil(largest["gc"] * 100) / 100
    assert al.RESERVE_FRACTION_NOT_CHECKPOINTED_EXPANDABLE == math.ceil(largest["none"] * 100) / 100
    # the replayed steps measured with the setting: the replay within 20 MiB of the measured reserve
    scored = re.search(r"steps after the first: median \S+ MiB, range (\S+) to (\S+) MiB", text)
    assert scored and -20 <= float(scored.group(1)) and float(scored.group(2)) <= 20
