"""Version tables: each fact is checked against the release it was read from.

vLLM facts were read from the release wheels (line numbers in planner/specs/versions.py); TRL facts from
the installed trl 1.16.0 and older wheels. Where trl is installed, a few facts are re-read from its
source text here (no import of trl, so no torch).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from planner.errors import VersionError
from planner.specs.versions import (
    parse_version,
    trl_facts,
    trl_first_release,
    trl_max_model_len,
    trl_max_num_seqs,
    vllm_facts,
    vllm_first_release,
)


@pytest.mark.parametrize("text,expected", [
    ("0.33.0", (0, 33, 0)), ("v0.20.1+cu128", (0, 20, 1)), ("0.33.0rc1", (0, 33, 0)), ("1.16", (1, 16, 0)),
    ("0.20.2.dev3", (0, 20, 2)),
])
def test_parse_version(text, expected):
    assert parse_version(text, "vLLM") == expected


@pytest.mark.parametrize("bad", ["abc", "", "1", "x.y.z"])
def test_unparseable_versions(bad):
    with pytest.raises(VersionError, match=r"^unknown vLLM version .*: expected a release number like 0\.33\.0$"):
        vllm_facts(bad)


@pytest.mark.parametrize("bad", ["0.34.0", "1.0"])
def test_vllm_versions_outside_the_table(bad):
    with pytest.raises(VersionError, match=rf"^vLLM {bad} is not covered: the planner knows vLLM 0\.8\.5 to 0\.33\.x"):
        vllm_facts(bad)


@pytest.mark.parametrize("bad", ["0.1", "0.7.3", "0.8.4", "0.8.3.dev162+g8af5a5c4"])
def test_v0_engine_releases_are_refused_in_one_line(bad):
    with pytest.raises(VersionError) as e:
        vllm_facts(bad)
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"vLLM {bad} is not covered: releases before 0.8.5 size the KV cache with the V0 engine")


@pytest.mark.parametrize("bad", ["0.1", "0.13.0", "1.17.0"])
def test_trl_versions_outside_the_table(bad):
    with pytest.raises(VersionError, match=rf"^TRL {bad} is not covered"):
        trl_facts(bad)


def test_default_gpu_memory_utilization():
    # 0.19.0 config/cache.py:41 default=0.9; 0.20.0 cache.py:66 and 0.33.0 cache.py:215 default=0.92
    assert vllm_facts("0.19.1").gpu_memory_utilization_default == 0.9
    assert vllm_facts("0.20.0").gpu_memory_utilization_default == 0.92
    assert vllm_facts("0.33.0").gpu_memory_utilization_default == 0.92


def test_cudagraph_estimate_subtracted_from_0_20():
    # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS default "0" in 0.19.0 (envs.py:1655), "1" in 0.20.0 (envs.py:1725)
    assert not vllm_facts("0.19.0").cudagraph_estimate_subtracted
    assert vllm_facts("0.20.1").cudagraph_estimate_subtracted
    assert vllm_first_release("cudagraph_estimate_subtracted") == "0.20.0"


def test_kv_token_formula_and_log_lines():
    # old num_blocks // groups * block_size through 0.20 (kv_cache_utils.py:1693-1697 in 0.20.0),
    # int(concurrency * max_model_len) from 0.21.0 (kv_cache_utils.py:1708); one combined line from 0.28.0
    assert vllm_facts("0.20.2").kv_tokens_formula == "blocks_per_group"
    assert vllm_facts("0.21.0").kv_tokens_formula == "concurrency_x_len"
    assert vllm_facts("0.27.0").capacity_log_lines == 2
    assert vllm_facts("0.28.0").capacity_log_lines == 1


def test_sliding_window_in_flight_batches():
    # window - 1 + max_num_batched_tokens in 0.24.0 (kv_cache_interface.py:521);
    # window - 1 + max_in_flight_tokens (2 batches with async scheduling) in 0.26.0 (kv_cache_interface.py:584)
    assert vllm_facts("0.24.0").sliding_window_in_flight_batches == 1
    assert vllm_facts("0.26.0").sliding_window_in_flight_batches == 2
    assert vllm_facts("0.33.0").sliding_window_in_flight_batches == 2


def test_block_size_and_bitsandbytes():
    assert all(vllm_facts(v).block_size == 16 for v in ("0.19.0", "0.26.0", "0.33.0"))
    assert vllm_facts("0.27.1").bitsandbytes_supported and not vllm_facts("0.28.0").bitsandbytes_supported
    assert vllm_first_release("bitsandbytes_supported", False) == "0.28.0"


def test_rows_say_what_was_read():
    assert "0.33.0 wheel" in vllm_facts("0.33.0").note
    assert "assumed" in vllm_facts("0.23.0").note  # a release that was not read inherits its neighbour's facts


def test_installed_vllm_or_newest_known():
    # None means the installed vLLM; where it is not installed (as here), the newest known release
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("vllm")
    except PackageNotFoundError:
        installed = None
    expected = ".".join(str(x) for x in parse_version(installed, "vLLM")) if installed else "0.33.0"
    assert vllm_facts(None).release == expected


# -- TRL ----------------------------------------------------------------------------------------

def test_trl_colocate_and_sleep_mode_timeline():
    assert not trl_facts("0.17.0").colocate_supported
    assert trl_facts("0.18.0").colocate_supported and not trl_facts("0.18.0").sleep_mode_supported
    assert trl_facts("0.23.0").sleep_level == 1 and trl_facts("0.24.0").sleep_level == 1
    assert trl_facts("0.25.0").sleep_level == 2 and trl_facts("1.16.0").sleep_level == 2
    assert trl_first_release("colocate_supported") == "0.18.0"
    assert trl_first_release("sleep_mode_supported") == "0.23.0"


def test_trl_sleep_weight_sync_bug_range():
    # #5312: reload_weights after sync from 0.28.0 (in the 0.28.0, 1.9.0, 1.9.2 wheels); fixed in 1.10.0
    assert not trl_facts("0.27.2").sleep_weight_sync_broken
    assert trl_facts("0.28.0").sleep_weight_sync_broken and trl_facts("1.9.2").sleep_weight_sync_broken
    assert not trl_facts("1.10.0").sleep_weight_sync_broken and not trl_facts("1.16.0").sleep_weight_sync_broken
    assert trl_first_release("sleep_weight_sync_broken", False) == "1.10.0"
    assert trl_facts("1.9.0").sleep_mode_broken  # alias used by planner.memory.phases


def test_trl_engine_arguments():
    f = trl_facts("1.16.0")
    assert f.max_num_batched_tokens == 4096 and trl_facts("0.18.2").max_num_batched_tokens is None
    assert not f.passes_enforce_eager and not f.passes_kv_cache_dtype
    assert f.quantization_for_4bit == "bitsandbytes"
    assert f.vllm_gpu_memory_utilization_default == 0.3
    assert (f.vllm_min, f.vllm_max) == ("0.22.0", "0.31.0")
    assert trl_facts("1.9.1").max_completion_length_default == 256 and f.max_completion_length_default == 512
    assert f.default_model_dtype == "float32" and trl_facts("0.26.0").default_model_dtype == "auto"
    assert f.vllm_mode_default == "colocate" and trl_facts("0.29.1").vllm_mode_default == "server"


def test_trl_fused_head_from_1_15():
    assert not trl_facts("1.14.2").fused_lm_head
    assert trl_facts("1.15.0").fused_lm_head and trl_facts("1.16.0").fused_logprob_head
    assert trl_first_release("fused_lm_head") == "1.15.0"


def test_trl_max_num_seqs_and_max_model_len():
    # grpo_trainer.py:1124-1126: per_device_train_batch_size * vllm_tensor_parallel_size * steps_per_generation
    assert trl_max_num_seqs(8, 4, 2) == 8 * 2 * 4
    new, old = trl_facts("1.16.0"), trl_facts("0.25.1")
    assert trl_max_model_len(new, 131_072) == 131_072  # vllm_max_model_length=None -> the model's context
    assert trl_max_model_len(new, 131_072, vllm_max_model_length=4096) == 4096
    assert trl_max_model_len(old, 131_072, max_completion_length=1024) == 512 + 1024  # prompt + completion


def _trl_source(rel: str) -> str | None:
    try:
        from importlib.metadata import distribution, version

        if not version("trl").startswith("1.16."):
            return None
        path = Path(distribution("trl").locate_file(f"trl/{rel}"))
    except Exception:  # noqa: BLE001 - trl not installed
        return None
    return path.read_text() if path.is_file() else None


def test_installed_trl_source_agrees_with_the_table():
    gen = _trl_source("generation/vllm_generation.py")
    utils = _trl_source("trainer/utils.py")
    if gen is None or utils is None:
        pytest.skip("trl 1.16 source not installed")
    f = trl_facts("1.16.0")
    assert ("_llm_weights_sleeping" in gen) == (not f.sleep_weight_sync_broken)
    assert "max_num_batched_tokens=4096" in gen
    assert "self.llm.sleep(level=2)" in gen
    assert "enforce_eager" not in gen and "kv_cache_dtype" not in gen
    assert ("def add_fused_lm_head" in utils) == f.fused_lm_head
    assert 'Version("0.22.0") <= _vllm_base_version <= Version("0.31.0")' in _trl_source("import_utils.py")


def test_modules_import_without_torch():
    code = ("import sys; import planner.memory.vllm, planner.specs.versions, planner.cli.vllm; "
            "bad = [m for m in ('torch', 'transformers', 'vllm', 'trl') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- vLLM 0.8.5-0.18 and the TRL releases that pair with them -------------------------------------

def test_old_vllm_rows_follow_the_wheels():
    # 0.8.5 gpu_worker.py:180-212 (whole device, no start-up check); 0.9.1/0.9.2 memory_profiling + check;
    # 0.14.0 v1/worker/utils.py:258 math.ceil; 0.11.0 FULL_AND_PIECEWISE; 0.12.0 capture grid 8/16
    assert vllm_facts("0.8.5.post1").kv_budget_formula == "whole_device"
    assert vllm_facts("0.9.0").startup_check == "none"
    assert vllm_facts("0.9.1").kv_budget_formula == "profiled" and vllm_facts("0.9.1").startup_check == "no_device_name"
    assert vllm_first_release("kv_budget_formula", "profiled") == "0.9.1"
    assert vllm_first_release("budget_rounding", "ceil") == "0.14.0"
    assert vllm_first_release("startup_check", "device_name") == "0.14.0"
    assert vllm_first_release("cudagraph_full_decode") == "0.11.0"
    assert vllm_first_release("cudagraph_sizes_rule", "grid_8_16") == "0.12.0"
    assert vllm_first_release("snapshot_after_distributed_init") == "0.11.0"
    assert vllm_first_release("hybrid_kv_groups") == "0.9.1"
    assert [vllm_facts(v).hybrid_group_max_ratio for v in ("0.11.2", "0.12.0", "0.17.1", "0.18.0")] == [1.0, 1.25, 1.25, 1.5]
    # utilization default 0.9 and the graph estimate off through 0.19 (0.18.0 envs.py:1635-1636 default "0")
    assert all(vllm_facts(v).gpu_memory_utilization_default == 0.9 and not vllm_facts(v).cudagraph_estimate_subtracted
               for v in ("0.8.5", "0.10.2", "0.14.0", "0.18.1"))
    assert "0.10.1 assumed" in vllm_facts("0.10.1").note


def test_trl_vllm_pairing_from_the_wheels():
    from planner.specs.versions import colocate_vllm_version

    # METADATA extras: trl 0.18-0.20 vllm>=0.8.3, 0.21-0.23 vllm>=0.10.0; import_utils.py pins from 0.24
    assert (trl_facts("0.18.0").vllm_min, trl_facts("0.18.0").vllm_max) == ("0.8.3", None)
    assert trl_facts("0.23.1").vllm_min == "0.10.0"
    assert (trl_facts("0.24.0").vllm_min, trl_facts("0.24.0").vllm_max) == ("0.10.2", "0.10.2")
    assert trl_facts("0.26.2").vllm_max == "0.11.2"
    assert (trl_facts("1.1.0").vllm_min, trl_facts("1.1.0").vllm_max) == ("0.11.0", "0.17.1")
    assert (trl_facts("1.5.1").vllm_min, trl_facts("1.5.1").vllm_max) == ("0.12.0", "0.18.0")
    # with no vLLM installed, a colocated run is planned for what pip resolves
    try:
        from importlib.metadata import version

        version("vllm")
        pytest.skip("vllm installed: colocate_vllm_version returns it")
    except Exception:  # noqa: BLE001 - not installed, as on CI
        pass
    assert colocate_vllm_version("0.24.0") == "0.10.2"
    assert colocate_vllm_version("0.26.0") == "0.11.2"
    assert colocate_vllm_version("1.5.0") == "0.18.0"


def test_trl_default_model_dtype_is_the_product_of_trl_and_transformers():
    from planner.specs.versions import default_weights_format, trl_default_model_dtype

    assert trl_default_model_dtype("0.26.0", "4.57.3") == "float32"  # TRL passes none, transformers 4: fp32
    assert trl_default_model_dtype("0.24.0", "5.0.0") == "auto"  # transformers 5: the config's dtype
    assert trl_default_model_dtype("0.27.0", "5.0.0") == "float32"  # TRL passes float32 itself
    assert default_weights_format("0.26.0", "5.1.0", "bfloat16") == "bf16"
    assert default_weights_format("0.26.0", "4.57.1", "bfloat16") == "fp32"


def test_default_optimizer_follows_torch():
    from planner.specs.versions import default_optimizer, optimizer_default_read

    assert default_optimizer("4.57.1", "2.8.0") == "adamw_torch_fused"
    assert default_optimizer("4.57.1", "2.7.1") == "adamw_torch"
    assert default_optimizer("4.50.0", "2.8.0") == "adamw_torch"  # before the rule was read: assumed
    assert not optimizer_default_read("4.50.0") and optimizer_default_read("5.0.0")


def test_vllm_sampler_sort_path_by_release_and_trl_logprobs_mode():
    # before 0.17 no Triton top-k/top-p: the sort is profiled only where TRL >= 0.24 asks for processed
    # log-probs (FlashInfer skipped); from 0.17 the sort is left only below 8 rows
    from planner.memory.vllm import activation_peak_bytes, forward_bytes_per_token
    from planner.specs.model import resolve_model
    assert [vllm_facts(v).sampler_triton_min_rows for v in ("0.10.2", "0.16.0", "0.17.0", "0.33.0")] == [None, None, 8, 8]
    assert vllm_facts("0.10.2").sampler_sort_bytes_per_logit == 38.0
    assert [trl_facts(v).processed_logprobs for v in ("0.23.0", "0.24.0", "0.26.0", "1.16.0")] == [False, True, True, True]
    spec = resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
    fixed, rows, vocab = 100 * 1024**2, 64, spec.vocab_size
    held = 4096 * spec.hidden_size * 2 * 2  # the dummy run's hidden states and residual
    assert activation_peak_bytes(spec, 4096, rows, "0.10.2", processed_logprobs=True) == rows * vocab * 38 + held + fixed
    assert activation_peak_bytes(spec, 4096, rows, "0.10.2") == max(
        4096 * forward_bytes_per_token(spec), rows * vocab * 14 + held) + fixed
    # 0.17: 64 rows take Triton whatever the logprobs mode; 4 rows sort (at 16 batched tokens, where the
    # sampler is the larger phase)
    assert activation_peak_bytes(spec, 4096, rows, "0.17.0", processed_logprobs=True) == \
        activation_peak_bytes(spec, 4096, rows, "0.17.0")
    assert activation_peak_bytes(spec, 16, 4, "0.17.0") == 4 * vocab * 38 + 16 * spec.hidden_size * 4 + fixed
    assert activation_peak_bytes(spec, 16, 4, "0.10.2") == 4 * vocab * 14 + 16 * spec.hidden_size * 4 + fixed


def test_vllm_non_torch_growth_is_smaller_before_0_11():
    # 0.8.5-0.10.x logs: 0.03-0.09 GiB (Unsloth, 0.8.5) and ~0.01 GiB (TRL's QLoRA notebook, 0.10.2)
    assert [vllm_facts(v).non_torch_bytes_tp1 // 2**20 for v in ("0.8.5", "0.10.2", "0.11.0", "0.19.0")] == \
        [96, 96, 256, 256]


def test_installed_version_reads_what_importlib_metadata_reads():
    # planner.specs.versions.installed_version lists the dist-info folders instead of importing
    # importlib.metadata (30 ms of a plan); on every distribution of this environment it must agree
    import importlib.metadata as md

    from planner.specs.versions import installed_version

    names = sorted({d.metadata["Name"] for d in md.distributions()})
    assert len(names) > 10 and "trl" in [n.lower() for n in names]
    assert [(n, installed_version(n)) for n in names] == [(n, md.version(n)) for n in names]
    assert installed_version("TRL") == md.version("trl")  # names are compared normalised (PEP 503)
    assert installed_version("Grpo_Vram.Planner") == md.version("grpo-vram-planner")
    assert installed_version("no-such-distribution-here") is None
