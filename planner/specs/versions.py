"""Version-specific facts about vLLM, TRL and transformers: the one place that says what changed when.

Every other module asks ``vllm_facts(version)`` / ``trl_facts(version)`` instead of comparing
version strings itself. ``None`` means the installed package (``importlib.metadata``); when the
package is not installed, the newest release in the table.

    vllm_facts("0.33.0").gpu_memory_utilization_default   # 0.92
    vllm_facts("0.19.1").cudagraph_estimate_subtracted     # False
    trl_facts(None).fused_lm_head                          # True with the installed trl 1.16
    transformers_eager_attention("gemma2", "5.17.0")       # False: SDPA until 5.21

How the tables were built. vLLM facts were read from the release wheels (``pip download
--no-deps vllm==X``) of 0.8.5, 0.9.0, 0.9.1, 0.9.2, 0.10.0, 0.10.1.1, 0.10.2, 0.11.0, 0.12.0,
0.13.0, 0.14.0, 0.15.0, 0.16.0, 0.17.0, 0.18.0 (the V1 engine before 0.19), 0.19.0, 0.20.0,
0.21.0, 0.22.0, 0.24.0, 0.25.0, 0.26.0, 0.27.0, 0.28.0, 0.29.0, 0.31.0 and 0.33.0; a range that
starts at a release we did not read (0.10.1, 0.23, 0.30, 0.32) inherits the facts of the release
read just before it, and each row says so.
``path:line`` citations are for the release named. TRL facts come from the installed trl 1.16.0,
the 0.28.0, 1.9.0, 1.9.2, 1.10.0, 1.11.0, 1.12.0, 1.13.0, 1.14.0, 1.14.2 and 1.15.0 wheels, and
docs/trl-grpo.md (a git snapshot of 1.10.0.dev0 with tag-verified history) for older ones. The Liger
facts (``liger_head``, ``liger_field``) come from the 0.16.0, 0.17.0, 0.18.0, 0.20.0, 0.23.0, 0.24.0,
0.25.0, 1.0.0, 1.5.0, 1.9.0, 1.10.0, 1.12.0, 1.13.0, 1.14.0, 1.14.2 and 1.15.0 wheels and the liger-kernel
0.7.0, 0.8.0, 0.8.2 and 0.8.5 wheels.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..errors import VersionError
from .units import MIB

# -- version strings --------------------------------------------------------------------------

_VERSION_RE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.\-+]?[0-9A-Za-z.+\-]*)?\s*$")


def parse_version(text: str, package: str) -> tuple[int, int, int]:
    """``"0.33.0"``, ``"v0.20.1+cu128"``, ``"0.33.0rc1"``, ``"1.16"`` -> ``(major, minor, patch)``.

    Pre-release and local suffixes are dropped: ``0.33.0rc1`` is treated as 0.33.0.
    """
    m = _VERSION_RE.match(str(text)) if isinstance(text, str) else None
    if not m:
        example = {"vLLM": "0.33.0", "transformers": "5.17.0"}.get(package, "1.16.0")
        raise VersionError(f"unknown {package} version {text!r}: expected a release number like {example}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _fmt(v: tuple[int, int, int]) -> str:
    return ".".join(str(x) for x in v)


def installed_version(dist: str) -> str | None:
    """The installed version of ``dist``, or None (package metadata; the package is not imported).

    The version is read from the ``NAME-VERSION.dist-info`` folder names on ``sys.path``, in path order,
    as ``importlib.metadata.version`` finds them (PEP 427/491 write the version into the name); a folder
    without a version in its name (an old ``NAME.egg-info``) is read by ``importlib.metadata`` itself.
    Listing the folders costs well under a millisecond; importing ``importlib.metadata`` and scanning
    with it cost about 30 ms, most of a shipped plan's time (tests/test_versions.py compares the two)."""
    wanted = _normalised_name(dist)
    for folder in sys.path:
        for name in _metadata_names(folder or "."):
            stem = name.rsplit(".", 1)[0]
            dist_name, _, version = stem.partition("-")
            if _normalised_name(dist_name) != wanted:
                continue
            if version:
                return version
            return _metadata_version(dist)
    return None


def _normalised_name(name: str) -> str:
    """PEP 503's normalised project name (``Foo_bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _metadata_names(folder: str) -> tuple[str, ...]:
    """The ``*.dist-info`` and ``*.egg-info`` entries of one ``sys.path`` folder (none if unreadable)."""
    try:
        return tuple(sorted(n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info"))))
    except OSError:
        return ()


def _metadata_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@cache
def _installed(dist: str) -> str | None:
    """:func:`installed_version`, read once per process: the facts below are looked up for every
    setup the solvers evaluate, and a metadata read costs milliseconds."""
    return installed_version(dist)


# -- vLLM -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VllmFacts:
    """What one vLLM release range does that changes memory or capacity.

    ``release`` is the version that was asked for (normalised); ``first``/``last`` bound the row.
    """

    release: str
    first: str
    last: str
    # vllm/config/cache.py `gpu_memory_utilization: float = Field(default=...)`
    # (0.19.0 cache.py:41 -> 0.9; 0.20.0 cache.py:66 and 0.33.0 cache.py:215 -> 0.92)
    gpu_memory_utilization_default: float
    # How "Available KV cache memory" is computed (v1/worker/gpu_worker.py determine_available_memory):
    # "whole_device" (0.8.5-0.9.0; 0.8.5 gpu_worker.py:180-212): total x util - (torch's
    # allocated peak in the process + every non-torch byte on the device), so whatever a colocated
    # trainer or another process holds comes out of the KV cache, and there is no start-up check;
    # "profiled" (0.9.1 on; 0.9.2 gpu_worker.py:206, 0.10.2 gpu_worker.py:259-280 with
    # utils/__init__.py:2795-2797): requested - (weights + torch peak increase + non-torch increase
    # since vLLM's init snapshot); memory held before the snapshot is outside the budget.
    kv_budget_formula: str
    # requested memory: "float" = total x util, truncated only by the final int()
    # (0.9.1 gpu_worker.py:136, 0.10.2 gpu_worker.py:176-177); "ceil" = math.ceil(total x util)
    # (0.14.0 v1/worker/utils.py:258, 0.19.0 utils.py:408-410).
    budget_rounding: str
    # the start-up ValueError "Free memory on device ... on startup is less than desired GPU memory
    # utilization": "none" (0.8.5, 0.9.0: no check), "no_device_name" (0.9.1-0.13:
    # "Free memory on device (F/T GiB)", 0.10.2 gpu_worker.py:178-188), "device_name"
    # (0.14.0 v1/worker/utils.py:264: "Free memory on device cuda:0 (F/T GiB)")
    startup_check: str
    # the init snapshot is taken after NCCL / custom all-reduce set-up (0.11.0 gpu_worker.py:169
    # then :182); before it in 0.9.1-0.10.x (0.10.2 gpu_worker.py:175 then :193), so there the
    # communicators' memory is measured as non-torch growth inside the budget.
    snapshot_after_distributed_init: bool
    # default CUDA-graph capture sizes (VllmConfig._set_cudagraph_sizes), all capped at
    # max_num_batched_tokens: "every8_to_512" = 1, 2, 4, 8..512 step 8 whatever max_num_seqs is
    # (0.8.5 config.py:4031-4045; 0.9.2 cuda_graph_sizes=[512], config.py:2133, 4727-4744);
    # "every8_to_2x_seqs" = 1, 2, 4, 8..min(2 x max_num_seqs, 512) step 8 (0.10.0 config.py:2456,
    # 0.10.2 config/scheduler.py:244); "grid_8_16" = every 8 below 256 then every 16
    # (0.12.0 config/vllm.py:1039, 1069-1074; 0.19.0 config/vllm.py:1343).
    cudagraph_sizes_rule: str
    # FULL decode graphs are captured besides the PIECEWISE ones (default cudagraph_mode
    # FULL_AND_PIECEWISE from 0.11.0, config/__init__.py:361-366; PIECEWISE only in 0.10.2
    # config/__init__.py:3389-3393; 0.8.5-0.9.x V1 captures piecewise graphs only).
    cudagraph_full_decode: bool
    # sliding-window layers get their own KV groups (hybrid allocator: 0.9.1 on,
    # 0.9.2 kv_cache_utils.py:740, 826). Before (0.8.5 kv_cache_utils.py:699-708,
    # unify_hybrid_kv_cache_specs) every sliding layer is turned into a full-attention layer.
    hybrid_kv_groups: bool
    # hybrid group size: the smaller layer bucket, or the larger one when it is < ratio x the
    # smaller: 1.0 (never; 0.9.2 kv_cache_utils.py:826 `group_size = min(...)`, to 0.11),
    # 1.25 (0.12.0 kv_cache_utils.py:1015-1023 to 0.17.0 :1041-1049), 1.5 (0.18.0 :1043).
    hybrid_group_max_ratio: float
    # "Maximum concurrency": "tokens_over_len" = num_blocks x block_size / max_model_len
    # (0.8.5 kv_cache_utils.py:632-639, 0.9.0 :639); "blocks_over_request" = num_blocks /
    # blocks per request (0.9.2 kv_cache_utils.py:626-640 get_max_concurrency_for_kv_cache_config).
    concurrency_formula: str
    # A100s stay on the small batch-default tier although they have >= 70 GiB (PR #17885):
    # not in 0.8.5 (engine/arg_utils.py:1596), from 0.9.0 (arg_utils.py:1495).
    batch_defaults_a100_small: bool
    # a defaulted max_num_seqs is capped at max_num_batched_tokens (0.10.1.1 arg_utils.py:1711,
    # 0.10.2 :1742; not in 0.10.0)
    batch_defaults_cap_seqs: bool
    # a defaulted max_num_batched_tokens is capped at max_num_seqs x max_model_len
    # (0.12.0 arg_utils.py:2004, 0.18.0 :2183; not in 0.11.0)
    batch_defaults_cap_tokens: bool
    # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS default (0.19.0 envs.py:1654-1656 -> "0";
    # 0.20.0 envs.py:1724-1726 and 0.33.0 envs.py:2219 -> "1"): when on, the profiled CUDA-graph
    # estimate is subtracted from the KV budget (0.33.0 v1/worker/gpu_worker.py:753-757);
    # when off, graphs are captured after the KV cache is sized and land outside the budget.
    cudagraph_estimate_subtracted: bool
    # "GPU KV cache size: N tokens": "blocks_per_group" = num_blocks // len(groups) * block_size
    # (0.20.0 v1/core/kv_cache_utils.py:1693-1697); "concurrency_x_len" =
    # int(max_concurrency * max_model_len) (0.21.0 kv_cache_utils.py:1708; 0.33.0 :1128).
    kv_tokens_formula: str
    # 2 = "GPU KV cache size" and "Maximum concurrency" on separate lines (to 0.27);
    # 1 = one combined line (0.28.0 on; 0.33.0 kv_cache_utils.py:1147-1155).
    capacity_log_lines: int
    # in-flight batches a sliding-window layer must keep blocks for: 1 until 0.24
    # (window - 1 + max_num_batched_tokens, 0.24.0 v1/kv_cache_interface.py:521); 2 with async
    # scheduling from 0.26 (window - 1 + max_in_flight_tokens, 0.26.0 kv_cache_interface.py:584,
    # 0.33.0 config/vllm.py:588-609: max_concurrent_batches = 2 when async scheduling is on,
    # which it is by default, also for TRL's external_launcher executor).
    sliding_window_in_flight_batches: int
    # _check_enough_kv_cache_memory plans against available - one block (the null block),
    # 0.29.0 kv_cache_utils.py:975 / 0.33.0 v1/core/kv_cache_planning.py:170, 1533-1545.
    kv_check_reserves_null_block: bool
    # _set_cudagraph_sizes: max_num_batched_tokens appended when it fits the capture range
    # (0.21.0 config/vllm.py:1580; not in 0.20.0 config/vllm.py:1423).
    cudagraph_appends_mnbt: bool
    # max capture size 1024 instead of 512 on data-centre Blackwell (0.28.0 config/vllm.py:1938).
    cudagraph_blackwell_1024: bool
    # uniform-decode size max_num_seqs appended (0.31.0 config/vllm.py:2540; 0.33.0 :2550).
    cudagraph_appends_max_num_seqs: bool
    # quantization="bitsandbytes" exists (0.27.0 model_executor/layers/quantization/__init__.py);
    # gone from the method list in 0.28.0 (0.33.0 config/model.py:1464-1469 then raises
    # "Unknown quantization method: bitsandbytes").
    bitsandbytes_supported: bool
    # wording of the KV-cache startup errors: "v0.8" (no docs link, GiB as :.2f, and the estimated
    # length lost to a dropped f-string: 0.8.5 kv_cache_utils.py:526-551), "v0.9" (estimate kept,
    # 0.9.2 kv_cache_utils.py:554-579 to 0.11/0.12), "v0.13" (docs link added, still :.2f,
    # 0.13.0 kv_cache_utils.py:688-719), "v0.19" (GiB via format_gib, 0.14.0 kv_cache_utils.py:616-643;
    # "models's max seq len", 0.19.0 kv_cache_utils.py:619-652) or "v0.22" (adds the CPU-backend
    # remarks, 0.22.0 and 0.33.0 v1/core/kv_cache_planning.py:50-87)
    kv_error_wording: str
    # GB10 (cc 12.1) kept on the small batch-default tier (0.33.0 engine/arg_utils.py:2963, 2984-2986;
    # not in the 0.31.0 wheel)
    batch_defaults_gb10_small: bool
    # which model runner profiles by default ("v1", "v2 for listed models", "v2")
    default_model_runner: str
    # a >= 160 GiB tier (B200/B300: 16384 tokens / 1024 seqs for both usage contexts) exists in
    # get_batch_defaults from 0.28.0 (0.33.0 engine/arg_utils.py:2973-2982; absent in 0.27.0)
    batch_defaults_160gib_tier: bool
    # -- activation peak (profile_run) ------------------------------------------------------
    # bytes per (sampled row x vocab entry) live at the sampler's peak: bf16 logits (2 B) plus
    # three fp32 logits-sized buffers (temperature/top-k/top-p pipeline: fp32 copy, sort
    # values, softmax) = 2 + 3 x 4 = 14 B. Fitted to the v0.19 H100 profile numbers in
    # docs/vllm-memory.md §1.3/§8.4 at max_num_batched_tokens 8192, 1024 rows:
    # Llama-3.1-8B 1.93 GiB predicted (1.9-2.2 measured), Qwen2.5-7B 2.24 (~2.2),
    # Gemma-2-9B 3.62 (3.65-3.99), Gemma-3-27B 3.76 (3.65-3.99). Later releases are assumed
    # the same: the V2 runner (0.33.0 v1/worker/gpu/model_runner.py:993-1016) samples twice
    # but one pass after the other, so the peak is one fp32 pipeline, not two.
    sampler_bytes_per_logit: float = 14.0
    # The PyTorch sort path of top-k/top-p (apply_top_k_top_p: 0.10.2 v1/sample/ops/topk_topp_sampler.py:126-166;
    # apply_top_k_top_p_pytorch in 0.17.0 :258-300). vLLM's dummy sampler run sets top_k = vocab - 1 and
    # top_p = 0.9 for every row (0.10.2 v1/worker/gpu_model_runner.py:2852-2861), so profiling always takes
    # it where the sort path is the one used: below ``sampler_triton_min_rows`` rows (None = every batch
    # size) once vLLM has the Triton kernel, and, before 0.17, whenever FlashInfer's sampler is not. The
    # planner counts the sort before 0.17 only where it is certain: TRL >= 0.24 passes
    # logprobs_mode="processed_logprobs", which skips FlashInfer (0.10.2 topk_topp_sampler.py:35-37;
    # TrlFacts.processed_logprobs). Elsewhere (Unsloth, a bare `plan vllm`) FlashInfer is assumed, the
    # 14 B of the v0.19 fit (an Unsloth vLLM 0.11.2 log agrees with it within 2%, with the sort it would
    # be 7% off). Bytes per (row x vocab entry) at the sort:
    # bf16 logits (2, still held by the caller) + their fp32 copy (4) + sort's outputs, fp32 values and
    # int64 indices (12) + the CUDA segmented sort's temporaries: an int64 iota of the input indices
    # (8) and CUB's alternate key/value buffers (12) = 38 B. Checked on a colocated vLLM 0.10.2 start-up
    # (TRL's QLoRA notebook, 64 rows of a 151,936-token vocabulary at 4096 batched tokens): 0.46 GiB
    # predicted, 0.47 GiB "torch peak" in its log.
    sampler_sort_bytes_per_logit: float = 38.0
    # the fewest rows that take the Triton top-k/top-p kernel instead of the sort (0.17.0
    # topk_topp_sampler.py:251 `if HAS_TRITON and logits.shape[0] >= 8`); None: no Triton kernel (the sort,
    # or FlashInfer's sampler)
    sampler_triton_min_rows: int | None = 8
    # workspace and metadata on top of the larger phase; calibration slack of the same fit
    activation_fixed_bytes: int = 100 * MIB
    # -- memory outside the model (H100 numbers of v0.19 logs, docs/vllm-memory.md §8.2 and §8.5) --
    # allocated before vLLM's init snapshot: CUDA context, cuBLAS handles, NCCL communicators
    baseline_bytes_tp1: int = 512 * MIB
    baseline_bytes_tp_multi: int = 1536 * MIB
    # non-torch growth during profiling (attention workspaces, lazily allocated NCCL buffers).
    # 256 MiB: v0.19 H100 logs. 0.8.5-0.10.x: 96 MiB, what the logs of those releases show (in-process
    # engines beside a trainer): 0.03-0.09 GiB "non_torch_memory" in Unsloth's vLLM 0.8.5 logs
    # (../shared/unsloth), and ~0.01 GiB in TRL's QLoRA notebook on 0.10.2 (budget 3.94 - weights 0.45
    # - activation 0.47 - KV 3.02); its full fine-tuning notebook started, which at 256 MiB it could
    # not have (a KV cache below one 1408-token request).
    non_torch_bytes_tp1: int = 256 * MIB
    non_torch_bytes_tp_multi: int = 2150 * MIB  # ~2.1 GiB at TP2; TP>2 assumed the same
    # -- CUDA graphs (an estimate, see planner.memory.vllm.cudagraph_bytes) ---------------------------
    # graph-exec and piecewise-buffer memory per captured graph per decoder layer, fitted to
    # Llama-3.1-8B on H100, v0.19.0: 51 PIECEWISE + 51 FULL graphs took 0.91 GiB (actual).
    cudagraph_bytes_per_graph_layer: int = 280 * 1024
    block_size: int = 16  # CacheConfig.DEFAULT_BLOCK_SIZE (0.33.0 config/cache.py:185)
    note: str = ""

    @property
    def version(self) -> str:
        return self.release


# What changed at each release, oldest first; each row inherits every earlier change.
# (first release of the range, newest release it covers, what was read, changes)
_VLLM_CHANGES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("0.8.5", "0.8.5.x", ("read: 0.8.5 wheel (V1 engine; Unsloth and VLLM_USE_V1=0 runs use the V0 "
                          "worker.py arithmetic, which is not modelled)"),
     dict(gpu_memory_utilization_default=0.9, cudagraph_estimate_subtracted=False,
          kv_tokens_formula="blocks_per_group", capacity_log_lines=2, sliding_window_in_flight_batches=1,
          kv_check_reserves_null_block=False, cudagraph_appends_mnbt=False, cudagraph_blackwell_1024=False,
          cudagraph_appends_max_num_seqs=False, bitsandbytes_supported=True, kv_error_wording="v0.8",
          batch_defaults_gb10_small=False, batch_defaults_160gib_tier=False, default_model_runner="v1",
          kv_budget_formula="whole_device", budget_rounding="float", startup_check="none",
          snapshot_after_distributed_init=False, cudagraph_sizes_rule="every8_to_512",
          cudagraph_full_decode=False, hybrid_kv_groups=False, hybrid_group_max_ratio=1.0,
          concurrency_formula="tokens_over_len", batch_defaults_a100_small=False,
          batch_defaults_cap_seqs=False, batch_defaults_cap_tokens=False, sampler_triton_min_rows=None,
          non_torch_bytes_tp1=96 * MIB)),
    ("0.9.0", "0.9.0.1", "read: 0.9.0 wheel",
     dict(batch_defaults_a100_small=True)),
    ("0.9.1", "0.9.2", "read: 0.9.1 and 0.9.2 wheels",
     dict(kv_budget_formula="profiled", startup_check="no_device_name", hybrid_kv_groups=True,
          concurrency_formula="blocks_over_request", kv_error_wording="v0.9")),
    ("0.10.0", "0.10.0", "read: 0.10.0 wheel",
     dict(cudagraph_sizes_rule="every8_to_2x_seqs")),
    ("0.10.1", "0.10.2", "read: 0.10.1.1 and 0.10.2 wheels; 0.10.1 assumed the same as 0.10.1.1",
     dict(batch_defaults_cap_seqs=True)),
    ("0.11.0", "0.11.2", "read: 0.11.0 wheel; 0.11.1-0.11.2 assumed the same",
     dict(snapshot_after_distributed_init=True, cudagraph_full_decode=True, non_torch_bytes_tp1=256 * MIB)),
    ("0.12.0", "0.12.0", "read: 0.12.0 wheel",
     dict(cudagraph_sizes_rule="grid_8_16", batch_defaults_cap_tokens=True, hybrid_group_max_ratio=1.25)),
    ("0.13.0", "0.13.0", "read: 0.13.0 wheel",
     dict(kv_error_wording="v0.13")),
    ("0.14.0", "0.16.x", "read: 0.14.0, 0.15.0, 0.16.0 wheels; 0.14.1, 0.15.1 assumed the same",
     dict(budget_rounding="ceil", startup_check="device_name", kv_error_wording="v0.19")),
    ("0.17.0", "0.17.1", "read: 0.17.0 wheel; 0.17.1 assumed the same",
     dict(sampler_triton_min_rows=8)),
    ("0.18.0", "0.18.1", "read: 0.18.0 wheel; 0.18.1 assumed the same",
     dict(hybrid_group_max_ratio=1.5)),
    ("0.19.0", "0.19.1", "read: 0.19.0 wheel", {}),
    ("0.20.0", "0.20.2", "read: 0.20.0 wheel (the graph estimate is on by default, though its log says "
                         "'default since v0.21.0')",
     dict(gpu_memory_utilization_default=0.92, cudagraph_estimate_subtracted=True)),
    ("0.21.0", "0.21.0", "read: 0.21.0 wheel",
     dict(kv_tokens_formula="concurrency_x_len", cudagraph_appends_mnbt=True)),
    ("0.22.0", "0.25.1", "read: 0.22.0, 0.24.0, 0.25.0 wheels; 0.23 assumed the same",
     dict(kv_error_wording="v0.22", default_model_runner="v2 for listed models")),
    ("0.26.0", "0.27.1", "read: 0.26.0, 0.27.0 wheels",
     dict(sliding_window_in_flight_batches=2)),
    ("0.28.0", "0.28.0", "read: 0.28.0 wheel",
     dict(capacity_log_lines=1, cudagraph_blackwell_1024=True, bitsandbytes_supported=False,
          batch_defaults_160gib_tier=True)),
    ("0.29.0", "0.30.x", "read: 0.29.0 wheel; 0.30 assumed the same",
     dict(kv_check_reserves_null_block=True, default_model_runner="v2")),
    ("0.31.0", "0.32.x", "read: 0.31.0 wheel; 0.32 assumed the same",
     dict(cudagraph_appends_max_num_seqs=True)),
    ("0.33.0", "0.33.x", "read: 0.33.0 wheel (the reference release)",
     dict(batch_defaults_gb10_small=True)),
)


def _cumulative(changes) -> tuple:
    rows: list = []
    facts: dict[str, Any] = {}
    for first, last, note, change in changes:
        facts = {**facts, **change}
        rows.append((parse_version(first, "vLLM"), last, {**facts, "note": note}))
    return tuple(rows)


# (first release as a tuple, newest release covered, every fact of the range)
_VLLM_ROWS = _cumulative(_VLLM_CHANGES)
_VLLM_END = (0, 34, 0)  # first release the table does not cover
VLLM_NEWEST_KNOWN = "0.33.0"
VLLM_OLDEST_KNOWN = "0.8.5"


def _vllm_row(v: tuple[int, int, int]) -> tuple | None:
    if v >= _VLLM_END:
        return None
    row = None
    for first, last, kw in _VLLM_ROWS:
        if v >= first:
            row = (first, last, kw)
    return row


def vllm_facts(version: str | None = None) -> VllmFacts:
    """Facts for a vLLM release; ``None`` = the installed vLLM, else the newest known (0.33.0).

    Raises VersionError for a string that is not a version or a release outside 0.8.5-0.33.x;
    below 0.8.5 the V0 engine's arithmetic (worker/worker.py) applies, which is not modelled.
    """
    if version is None:
        version = _installed("vllm") or VLLM_NEWEST_KNOWN
    return _vllm_facts(version) if isinstance(version, str) else _vllm_facts.__wrapped__(version)


@cache
def _vllm_facts(version: str) -> VllmFacts:
    """:func:`vllm_facts` of a release named (one table walk per release and process: the search asks
    for the same release hundreds of times per plan)."""
    v = parse_version(version, "vLLM")
    if v < parse_version(VLLM_OLDEST_KNOWN, "vLLM"):
        raise VersionError(f"vLLM {str(version).strip()} is not covered: releases before {VLLM_OLDEST_KNOWN} size "
                           f"the KV cache with the V0 engine, which the planner does not model (it knows vLLM "
                           f"{VLLM_OLDEST_KNOWN} to 0.33.x; pass --vllm-version to plan for one of those)")
    found = _vllm_row(v)
    if found is None:
        raise VersionError(f"vLLM {str(version).strip()} is not covered: the planner knows vLLM "
                           f"{VLLM_OLDEST_KNOWN} to 0.33.x (pass --vllm-version to plan for one of those)")
    first, last, kw = found
    return VllmFacts(release=_fmt(v), first=_fmt(first), last=last, **kw)


def known_vllm_ranges() -> list[str]:
    """``["0.19.0-0.19.1", ...]`` for messages and ``plan vllm --help``."""
    return [f"{_fmt(f)}-{last}" for f, last, _ in _VLLM_ROWS]


# -- TRL --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrlFacts:
    """What one TRL release does to the colocated vLLM engine and the trainer's memory."""

    release: str
    first: str
    # vllm_mode="colocate" exists (v0.18.0, #3394)
    colocate_supported: bool
    # vllm_enable_sleep_mode exists (v0.23.0, #3968)
    sleep_mode_supported: bool
    # llm.sleep(level=...) TRL calls: 1 in 0.23-0.24, 2 from 0.25.0 (#4296)
    # (1.16.0 trl/generation/vllm_generation.py:365-366, 750-751)
    sleep_level: int | None
    # #5312: with sleep mode, rollouts come from the on-disk checkpoint, not the trained
    # weights. Introduced by the 0.28.0 refactor (#4700: reload_weights after sync_weights;
    # `collective_rpc("reload_weights")` present in the 0.28.0, 1.9.0 and 1.9.2 wheels). Fixed
    # in 1.10.0 (#5313, `_llm_weights_sleeping` in the 1.10.0 wheel; 1.16.0
    # vllm_generation.py:368, 492, 589, 752).
    sleep_weight_sync_broken: bool
    # vLLM versions this TRL accepts without a warning (trl/import_utils.py); None = not read
    vllm_min: str | None
    vllm_max: str | None
    # max_num_batched_tokens TRL passes to vllm.LLM: None (vLLM's own default) in 0.18,
    # 4096 from 0.19.0 (#3565; 1.16.0 vllm_generation.py:359)
    max_num_batched_tokens: int | None
    # max_num_seqs = per_device_train_batch_size * vllm_tensor_parallel_size * this
    # (1.16.0 trl/trainer/grpo_trainer.py:1124-1126); gradient_accumulation_steps before 0.20
    max_num_seqs_multiplier: str
    # max_model_len passed to vLLM: "prompt_plus_completion" (0.18-0.25:
    # max_prompt_length + max_completion_length) or "vllm_max_model_length" (0.26.0 on:
    # vllm_max_model_length, None -> the model's context; 1.16.0 vllm_generation.py:351)
    max_model_len_rule: str
    # TRL never passes enforce_eager or kv_cache_dtype in colocate mode (1.16.0
    # vllm_generation.py:347-363): CUDA graphs are captured and the KV cache is model dtype.
    passes_enforce_eager: bool
    passes_kv_cache_dtype: bool
    # a bitsandbytes Linear4bit in the trainer model makes TRL pass quantization="bitsandbytes";
    # Linear8bitLt raises (1.16.0 vllm_generation.py:337-344)
    quantization_for_4bit: str
    # GRPOConfig.vllm_gpu_memory_utilization default (0.3 since 0.18; 1.16.0 grpo_config.py:656-657)
    vllm_gpu_memory_utilization_default: float
    # GRPOConfig.max_completion_length default: 256 until 1.9.x, 512 from 1.10.0 (#6264;
    # 1.16.0 grpo_config.py:494-496)
    max_completion_length_default: int
    # GRPOTrainer wraps the policy with the fused, tiled log-prob head
    # (trl/trainer/utils.py add_fused_lm_head; absent in the 1.14.2 wheel, present in 1.15.0;
    # 1.16.0 grpo_trainer.py:1068-1078): no full (batch, seq, vocab) logits.
    fused_lm_head: bool
    # what TRL itself passes to from_pretrained when the model is a string and model_init_kwargs
    # names no dtype: "float32" from 0.27.0 (#4778; 0.27.0 trl/trainer/utils.py:1154
    # `kwargs.get("dtype", "float32")`, written back as torch.float32; 1.16.0 utils.py:1332).
    # "auto" before means TRL passes *no* dtype and transformers decides (0.24.0
    # grpo_trainer.py:240-254 and 0.25.0 :264-278 pass None through; 0.26.0 utils.py:2007-2021
    # reads "auto" as a local default but never writes it into kwargs): float32 under
    # transformers 4.x, the checkpoint's dtype under 5.x. See trl_default_model_dtype().
    default_model_dtype: str
    # GRPOConfig.vllm_mode default: "server" before 1.0.0, "colocate" from 1.0.0 (#5255)
    vllm_mode_default: str
    # How the full-logits head (no fused head) divides by the temperature before
    # selective_log_softmax: "copy" = `logits = logits / self.temperature` (0.18.0
    # trl/trainer/grpo_trainer.py:854, 0.23.0 :834, 0.26.0 :974, 0.27.0 :1018, 0.28.0 :1022, 0.29.0 :1078,
    # 1.10.0 :1532), "inplace" = `logits.div_(self.temperature)` (1.0.0 :1068, 1.1.0 :1088, 1.5.0
    # :1113, 1.8.0 :1375, 1.9.0 :1519), "kernel" = selective_log_softmax(..., temperature=,
    # row_mask=) which on CUDA runs TRL's Triton `_fused_logprob_entropy` (1.14.0 :1573-1583,
    # trl/trainer/utils.py `_supports_trl_loss_kernel`: cuda/xpu only); memory/logprob_head.py.
    logprob_temperature: str = "copy"
    # compute_loss asks for the entropy (compute_entropy=True, computed under torch.no_grad by
    # entropy_from_logits in chunks of rows): from 0.20.0 (grpo_trainer.py:1832; 0.23.0 :1638,
    # :840-842; chunk_size=128 from 0.23.0 utils.py:1480, 1 in 0.20.0-0.22.0 utils.py:1464/1476);
    # 0.18.0 computes log-probs only (grpo_trainer.py:1332).
    logprob_entropy: bool = False
    # vllm.LLM(logprobs_mode="processed_logprobs"): from 0.24.0 (0.24.0 grpo_trainer.py:547, 0.25.0 :613,
    # 0.26.0 :676, 1.16.0 vllm_generation.py:361; absent in the 0.22.0 and 0.23.0 wheels). It keeps vLLM's
    # sampler on its PyTorch path, which sorts the vocabulary before vLLM 0.17
    # (VllmFacts.sampler_sort_bytes_per_logit).
    processed_logprobs: bool = False
    # The log-prob head with use_liger_kernel=True (planner/memory/logprob_head.py): None = no Liger GRPO
    # loss (before 0.17.0: the 0.16.0 wheel's grpo_trainer.py never names Liger); "liger" =
    # liger-kernel's LigerFusedLinearGRPOLoss (0.17.0 grpo_trainer.py:70-71, 0.25.0 :91 and :521, 1.12.0)
    # or TRL 1.13's copy of it (1.13.0 grpo_trainer.py:73 and :1044, trl/losses/fused_linear_ppo.py:21);
    # "chunked" = TRL's own _ChunkedLogProbFunction (1.14.0 grpo_trainer.py:1372 and :1459, 1.14.2 :1382, :1469);
    # "fused" = from 1.15.0 Liger only patches the layers and the fused head stays (1.15.0 :1025-1040).
    liger_head: str | None = None
    # the GRPOConfig field that turns the Liger loss on: use_liger_loss (0.17.0 grpo_config.py:391,
    # 0.24.0 :221), use_liger_kernel from 0.25.0 (0.25.0 grpo_trainer.py:397; use_liger_loss deprecated
    # into it, grpo_config.py:723-727); in 0.17-0.24 TrainingArguments.use_liger_kernel is transformers'
    # own model patching, not the GRPO loss
    liger_field: str | None = None
    # TRL refuses use_liger_kernel with a PEFT adapter on lm_head from 1.9.0 (1.9.0 grpo_trainer.py:796,
    # 1.14.2 :827; absent in the 1.5.0 wheel); before, the adapter on the head is silently never trained
    liger_refuses_lm_head_adapter: bool = False
    # When GRPO runs the old policy's log-prob pass (old_per_token_logps, a no-grad forward over the
    # generation batch), num_iterations = 1: "num_iterations" never (0.16.0 grpo_trainer.py:743, 0.17.0
    # :1004: only num_iterations > 1); "steps_per_generation" when steps_per_generation > accumulation
    # (0.18.0 :1132); "accumulation_multiple" when the accumulation is not a multiple of
    # steps_per_generation (0.20.0 :1619, 0.22.0 :1331, 1.16.0 :2642-2644); see trl_old_logprob_pass
    old_logps_rule: str = "num_iterations"
    # ... and always when vLLM generates with vllm_importance_sampling_correction (default True): from
    # 0.23.0 (grpo_config.py:601-602, grpo_trainer.py:1371-1374; absent in the 0.22.0 wheel)
    importance_sampling: bool = False
    note: str = ""

    @property
    def version(self) -> str:
        return self.release

    @property
    def fused_logprob_head(self) -> bool:
        """Alias of ``fused_lm_head`` (the name the trainer-side code uses)."""
        return self.fused_lm_head

    @property
    def sleep_mode_broken(self) -> bool:
        """Alias of ``sleep_weight_sync_broken`` (trl#5312)."""
        return self.sleep_weight_sync_broken


# What changed at each TRL release, oldest first; each row inherits every earlier change.
# (first release, changes). Sources: docs/trl-grpo.md §1, §3 and §6 for 0.14-1.9, the wheels named in
# the notes, and the installed 1.16.0.
_TRL_CHANGES = (
    ("0.14.0", dict(colocate_supported=False, sleep_mode_supported=False, sleep_level=None,
                    sleep_weight_sync_broken=False, vllm_min=None, vllm_max=None, max_num_batched_tokens=None,
                    max_num_seqs_multiplier="gradient_accumulation_steps",
                    max_model_len_rule="prompt_plus_completion", passes_enforce_eager=False,
                    passes_kv_cache_dtype=False, quantization_for_4bit="bitsandbytes",
                    vllm_gpu_memory_utilization_default=0.9, max_completion_length_default=256,
                    fused_lm_head=False, default_model_dtype="auto", vllm_mode_default="server",
                    logprob_temperature="copy", logprob_entropy=False, processed_logprobs=False,
                    note="no colocate mode (vLLM on a dedicated GPU)")),
    # vllm_min from the wheels' METADATA `Requires-Dist: vllm>=0.8.3; extra == "vllm"` (0.18.0-0.20.0) and
    # `vllm>=0.10.0` (0.21.0-0.23.0); no upper bound and no check in trl/import_utils.py there
    ("0.17.0", dict(liger_head="liger", liger_field="use_liger_loss", note="read: 0.17.0 wheel")),
    ("0.18.0", dict(colocate_supported=True, vllm_gpu_memory_utilization_default=0.3, vllm_min="0.8.3",
                    old_logps_rule="steps_per_generation",
                    note="read: 0.18.0 wheel (METADATA vllm>=0.8.3)")),
    ("0.19.0", dict(max_num_batched_tokens=4096)),
    ("0.20.0", dict(max_num_seqs_multiplier="steps_per_generation", logprob_entropy=True,
                    old_logps_rule="accumulation_multiple")),
    ("0.21.0", dict(vllm_min="0.10.0", note="read: 0.21.0-0.23.0 wheels (METADATA vllm>=0.10.0)")),
    ("0.23.0", dict(sleep_mode_supported=True, sleep_level=1, importance_sampling=True)),
    # 0.24.0 trl/import_utils.py:90 warns unless vLLM == 0.10.2 (METADATA vllm==0.10.2)
    ("0.24.0", dict(vllm_min="0.10.2", vllm_max="0.10.2", processed_logprobs=True,
                    note="read: 0.24.0 wheel (import_utils.py:90)")),
    ("0.25.0", dict(sleep_level=2, liger_field="use_liger_kernel", note="read: 0.25.0 wheel (import_utils.py:90)")),
    # 0.26.0 import_utils.py:97: 0.10.2 <= vLLM <= 0.11.2 (METADATA vllm<0.12.0,>=0.10.2)
    ("0.26.0", dict(max_model_len_rule="vllm_max_model_length", vllm_max="0.11.2",
                    note="read: 0.26.0 wheel (import_utils.py:97)")),
    ("0.27.0", dict(default_model_dtype="float32", vllm_min="0.10.2", vllm_max="0.12.0")),
    ("0.28.0", dict(sleep_weight_sync_broken=True, note="read: 0.28.0 wheel")),
    ("1.0.0", dict(vllm_mode_default="colocate", vllm_min=None, vllm_max="0.17.1", logprob_temperature="inplace",
                   note="")),
    # 1.1.0 import_utils.py:112: 0.11.0 <= vLLM <= 0.17.1
    ("1.1.0", dict(vllm_min="0.11.0", vllm_max="0.17.1", note="read: 1.1.0 wheel (import_utils.py:112)")),
    ("1.4.0", dict(vllm_min="0.12.0", vllm_max="0.18.0", note="")),
    # 1.5.0 import_utils.py:112: 0.12.0 <= vLLM <= 0.18.0 (the same as 1.4.0)
    ("1.5.0", dict(vllm_min="0.12.0", vllm_max="0.18.0", note="read: 1.5.0 wheel (import_utils.py:112)")),
    ("1.8.0", dict(vllm_min="0.16.0", vllm_max="0.23.0", note="")),
    ("1.9.0", dict(vllm_min="0.17.0", vllm_max="0.25.1", liger_refuses_lm_head_adapter=True,
                   note="read: 1.9.0 and 1.9.2 wheels")),
    ("1.10.0", dict(sleep_weight_sync_broken=False, max_completion_length_default=512, vllm_max="0.26.0",
                    logprob_temperature="copy",
                    note="read: 1.10.0 wheel")),
    ("1.11.0", dict(vllm_min="0.19.0", vllm_max="0.27.1", note="read: 1.11.0 and 1.12.0 wheels")),
    ("1.13.0", dict(vllm_min="0.19.1", vllm_max="0.28.0", note="read: 1.13.0 wheel")),
    ("1.14.0", dict(vllm_min="0.20.0", vllm_max="0.30.0", logprob_temperature="kernel", liger_head="chunked",
                    note="read: 1.14.0 and 1.14.2 wheels")),
    ("1.15.0", dict(fused_lm_head=True, liger_head="fused", vllm_min="0.21.0", vllm_max="0.31.0", note="read: 1.15.0 wheel")),
    ("1.16.0", dict(vllm_min="0.22.0", vllm_max="0.31.0",
                    note="read: installed 1.16.0 (trl/import_utils.py:107)")),
)


def _trl_cumulative(changes) -> tuple:
    rows: list = []
    facts: dict[str, Any] = {}
    for first, change in changes:
        facts = {**facts, **change}
        rows.append((parse_version(first, "TRL"), facts))
    return tuple(rows)


# (first release as a tuple, every fact of the range)
_TRL_ROWS = _trl_cumulative(_TRL_CHANGES)
_TRL_END = (1, 17, 0)
TRL_NEWEST_KNOWN = "1.16.0"
TRL_OLDEST_KNOWN = "0.14.0"


def trl_facts(version: str | None = None) -> TrlFacts:
    """Facts for a TRL release; ``None`` = the installed trl, else the newest known (1.16.0).

    Raises VersionError for a string that is not a version or a release outside 0.14.0-1.16.x.
    """
    if version is None:
        version = _installed("trl") or TRL_NEWEST_KNOWN
    return _trl_facts(version) if isinstance(version, str) else _trl_facts.__wrapped__(version)


@cache
def _trl_facts(version: str) -> TrlFacts:
    """:func:`trl_facts` of a release named, one table walk per release and process."""
    v = parse_version(version, "TRL")
    row = None
    if v < _TRL_END:
        for first, kw in _TRL_ROWS:
            if v >= first:
                row = (first, kw)
    if row is None:
        raise VersionError(f"TRL {str(version).strip()} is not covered: the planner knows TRL "
                           f"{TRL_OLDEST_KNOWN} to 1.16.x")
    first, kw = row
    return TrlFacts(release=_fmt(v), first=_fmt(first), **kw)


def trl_old_logprob_pass(trl_version: str | None, use_vllm: bool, accumulation: int,
                         steps_per_generation: int) -> bool:
    """Whether GRPO runs the old policy's log-prob pass (num_iterations = 1; ``TrlFacts.old_logps_rule``
    and ``importance_sampling``): vLLM's importance-sampling correction from 0.23.0, else only where a
    generation batch outlives one optimizer step's accumulation."""
    facts = trl_facts(trl_version)
    if use_vllm and facts.importance_sampling:
        return True
    if facts.old_logps_rule == "accumulation_multiple":
        return accumulation % max(1, steps_per_generation) != 0
    if facts.old_logps_rule == "steps_per_generation":
        return steps_per_generation > accumulation
    return False


def trl_max_num_seqs(per_device_train_batch_size: int, steps_per_generation: int,
                     vllm_tensor_parallel_size: int = 1) -> int:
    """``max_num_seqs`` TRL passes to ``vllm.LLM`` in colocate mode.

    ``per_device_train_batch_size * vllm_tensor_parallel_size * steps_per_generation``
    (1.16.0 trl/trainer/grpo_trainer.py:1124-1126; before 0.20 the last factor was
    ``gradient_accumulation_steps``, which is ``steps_per_generation``'s default).
    """
    return per_device_train_batch_size * vllm_tensor_parallel_size * steps_per_generation


def trl_max_model_len(facts: TrlFacts, model_max_position_embeddings: int,
                      vllm_max_model_length: int | None = None, max_prompt_length: int | None = None,
                      max_completion_length: int | None = None) -> int:
    """``max_model_len`` the colocated engine gets from this TRL release.

    From 0.26.0: ``vllm_max_model_length``, or (None) the model's own context, which vLLM
    derives from ``max_position_embeddings``. 0.18-0.25: ``max_prompt_length +
    max_completion_length`` (prompt default 512 then).
    """
    if facts.max_model_len_rule == "prompt_plus_completion":
        prompt = 512 if max_prompt_length is None else max_prompt_length
        completion = facts.max_completion_length_default if max_completion_length is None else max_completion_length
        return prompt + completion
    return model_max_position_embeddings if vllm_max_model_length is None else vllm_max_model_length


# -- first release with a fact ----------------------------------------------------------------

def trl_first_release(fact: str, value=True) -> str | None:
    """The oldest TRL release from which ``fact`` equals ``value`` in every later row.

    ``trl_first_release("colocate_supported")`` -> ``"0.18.0"``; ``"sleep_mode_supported"`` ->
    ``"0.23.0"``; ``trl_first_release("sleep_weight_sync_broken", False)`` -> ``"1.10.0"`` (the
    trl#5312 fix). None when the newest row does not have it.
    """
    first = None
    for v, kw in _TRL_ROWS:
        first = (first or v) if kw[fact] == value else None
    return _fmt(first) if first else None


def vllm_first_release(fact: str, value=True) -> str | None:
    """The oldest vLLM release from which ``fact`` equals ``value`` in every later row
    (``vllm_first_release("bitsandbytes_supported", False)`` -> ``"0.28.0"``)."""
    first = None
    for v, _last, kw in _VLLM_ROWS:
        first = (first or v) if kw[fact] == value else None
    return _fmt(first) if first else None


# -- which vLLM a colocated TRL run gets ------------------------------------------------------

def colocate_vllm_version(trl_version: str | None = None, needs_bitsandbytes: bool = False) -> str:
    """The vLLM release to plan a colocated run for when the user names none.

    The installed vLLM when there is one; otherwise the newest release we know that the TRL
    release accepts (``vllm_max``; what ``pip install trl[vllm]`` resolves to) and, for a 4-bit
    trainer (TRL passes ``quantization="bitsandbytes"``), that still has bitsandbytes loading
    (dropped in vLLM 0.28.0: ``vllm_first_release("bitsandbytes_supported", False)``).
    """
    installed = _installed("vllm")
    if installed:
        return installed
    trl = trl_facts(trl_version)
    ceiling = parse_version(trl.vllm_max, "vLLM") if trl.vllm_max else parse_version(VLLM_NEWEST_KNOWN, "vLLM")
    best = None
    for first, _last, kw in _VLLM_ROWS:
        if first > ceiling:
            break
        if needs_bitsandbytes and not kw["bitsandbytes_supported"]:
            continue
        best = first
    if best is None:
        return VLLM_NEWEST_KNOWN
    # a ceiling inside the chosen row is what pip resolves (TRL 0.24-0.25 pin 0.10.2, not the row's 0.10.1);
    # otherwise the newest release of that row we know is the row's first
    in_row = _vllm_row(ceiling)
    return _fmt(ceiling) if in_row is not None and in_row[0] == best else _fmt(best)


# -- transformers -----------------------------------------------------------------------------
# Architectures whose attention transformers stopped running through SDPA, by the first release
# without it (``_supports_sdpa = False``). Read from the 5.17.0-5.24.0 wheels: Gemma 2's attention
# logit soft-capping has no SDPA form, and from 5.21.0 transformers refuses SDPA for it and runs
# eager attention (batch x heads x seq^2 scores kept for backward); up to 5.20 it ran SDPA and
# ignored the soft-cap (measured on an H100 with 5.17.0: benchmarks/results/heldout_accuracy.txt).
# gpt-oss has no SDPA path (``_supports_sdpa = False``, models/gpt_oss/modeling_gpt_oss.py:380 in
# 5.24.0: the per-head sinks have no SDPA form), so transformers' default attention for it is eager;
# read in 5.24.0 only, assumed for every release.
_TRANSFORMERS_EAGER_FROM = {"gemma2": (5, 21, 0), "gpt_oss": (0, 0, 0)}
TRANSFORMERS_NEWEST_KNOWN = "5.24.0"


def transformers_eager_attention(model_type: str, version: str | None = None) -> bool:
    """Whether training ``model_type`` with ``attn_implementation="sdpa"`` runs eager attention in
    this transformers release (``None``: the installed one, else the newest we read)."""
    first = _TRANSFORMERS_EAGER_FROM.get(model_type)
    if first is None:
        return False
    if version is None:
        version = _installed("transformers") or TRANSFORMERS_NEWEST_KNOWN
    return parse_version(version, "transformers") >= first


# ``TrainingArguments.activation_checkpointing`` first appears in transformers 5.23.0
# (transformers/training_args.py:908); ``gradient_checkpointing`` stays as its deprecated alias and
# warns on every config that sets it (training_args.py:1541, "will be removed in v6"). 5.22.0 has
# only ``gradient_checkpointing`` (training_args.py:900), so a config that names the new field is
# refused there (HfArgumentParser: unknown key). Read from the 5.20.0-5.24.0 wheels.
_TRANSFORMERS_ACTIVATION_CHECKPOINTING_FROM = (5, 23, 0)


def transformers_checkpointing_field(version: str | None = None) -> str:
    """The ``TrainingArguments`` field that turns on activation (gradient) checkpointing in this
    transformers release: ``"activation_checkpointing"`` from 5.23.0, ``"gradient_checkpointing"``
    before (``None``: the installed one, else the newest we read)."""
    if version is None:
        version = _installed("transformers") or TRANSFORMERS_NEWEST_KNOWN
    if parse_version(version, "transformers") >= _TRANSFORMERS_ACTIVATION_CHECKPOINTING_FROM:
        return "activation_checkpointing"
    return "gradient_checkpointing"


# -- what a run gets when it names no dtype or optimizer -----------------------------------------
# transformers' ``from_pretrained`` with no ``dtype``/``torch_dtype``:
# - 4.x: ``dtype=None`` -> ``torch.get_default_dtype()``, float32 ("set fp32 as the default dtype for
#   BC", 4.57.3 modeling_utils.py:1288-1294 with ``dtype = kwargs.pop("dtype", None)`` at :4628);
# - 5.x: ``if dtype is None: dtype = "auto"`` -> the config's dtype (5.0.0 modeling_utils.py:3901,
#   3935; installed 5.24.0 :4155, 4186-4187).
_TRANSFORMERS_AUTO_DTYPE_FROM = (5, 0, 0)
# ``TrainingArguments.optim`` default: ``"adamw_torch_fused"`` when torch >= 2.8, else ``"adamw_torch"``
# (4.54.1 training_args.py:1286-1291, 4.55.4 :1286-1291, 4.56.0 :1296-1301, 4.57.3 :1292-1297,
# 5.0.0 :1175-1180, installed 5.24.0 :806-811; ``is_torch_greater_or_equal("2.8", accept_dev=True)``,
# 4.57.3 pytorch_utils.py:37). Releases before 4.54 were not read: they are assumed to default to
# ``adamw_torch`` (torch 2.8 did not exist before them), and ``optimizer_default_read`` says so.
_TRANSFORMERS_FUSED_DEFAULT_READ_FROM = (4, 54, 0)
_TORCH_FUSED_DEFAULT_FROM = (2, 8, 0)
# vLLM 0.10.2 pins torch==2.8.0 and transformers>=4.55.2 (its wheel metadata, Requires-Dist).
VLLM_TORCH_PINS = {"0.10.2": "2.8.0"}


def _transformers_version(version: str | None) -> str:
    return version if version is not None else (_installed("transformers") or TRANSFORMERS_NEWEST_KNOWN)


def trl_default_model_dtype(trl_version: str | None = None, transformers_version: str | None = None) -> str:
    """The dtype a ``GRPOTrainer(model="org/name")`` run loads the policy in when ``model_init_kwargs``
    names none: ``"float32"`` or ``"auto"`` (the checkpoint's own dtype, usually bf16).

    TRL >= 0.27 passes float32 itself. Older TRL passes nothing and transformers decides: float32 in
    4.x, ``"auto"`` from 5.0. So the TRL git main of November 2025 (0.26.0.dev) with transformers
    4.57 loads a 1.7B model in float32: 6.4 GiB of weights where bf16 would be 3.2.
    """
    if trl_facts(trl_version).default_model_dtype == "float32":
        return "float32"
    tf = parse_version(_transformers_version(transformers_version), "transformers")
    return "auto" if tf >= _TRANSFORMERS_AUTO_DTYPE_FROM else "float32"


def default_weights_format(trl_version: str | None = None, transformers_version: str | None = None,
                           checkpoint_dtype: str = "bfloat16") -> str:
    """:func:`trl_default_model_dtype` as a planner weight format (``"fp32"``, ``"bf16"``, ``"fp16"``);
    ``checkpoint_dtype`` is the config's ``torch_dtype`` (``ModelSpec.dtype``), used for ``"auto"``."""
    if trl_default_model_dtype(trl_version, transformers_version) == "float32":
        return "fp32"
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(str(checkpoint_dtype), "bf16")


def default_optimizer(transformers_version: str | None = None, torch_version: str | None = None) -> str:
    """``TrainingArguments.optim``'s default: ``"adamw_torch_fused"`` with torch >= 2.8 (transformers
    >= 4.54 read), else ``"adamw_torch"`` (torch's AdamW with ``foreach``, which allocates one
    parameter-sized temporary in its step). ``None``: the installed package, else the newest known
    transformers and torch 2.8."""
    tf = parse_version(_transformers_version(transformers_version), "transformers")
    if torch_version is None:
        torch_version = _installed("torch") or "2.8.0"
    tv = parse_version(torch_version, "torch")
    return "adamw_torch_fused" if tf >= _TRANSFORMERS_FUSED_DEFAULT_READ_FROM and tv >= _TORCH_FUSED_DEFAULT_FROM \
        else "adamw_torch"


def optimizer_default_read(transformers_version: str | None = None) -> bool:
    """Whether :func:`default_optimizer`'s rule was read from this transformers release's wheel (4.54+)
    rather than assumed."""
    return parse_version(_transformers_version(transformers_version), "transformers") >= \
        _TRANSFORMERS_FUSED_DEFAULT_READ_FROM


# -- Unsloth ----------------------------------------------------------------------------------
# ``FastLanguageModel.from_pretrained(..., fast_inference=True)``: vLLM in the training process,
# sharing its weights with the trainer. The memory rules live in unsloth_zoo/vllm_utils.py
# (``load_vllm``, ``approximate_vllm_memory_usage``, ``determine_max_lora_rank``) and
# unsloth/models/{loader,rl}.py. unsloth and unsloth_zoo are released in lock-step with the same
# calendar version numbers, so one version string keys both (the zoo's when a log gives it).
# Read from the unsloth_zoo wheels 2025.2.4, 2025.3.8, 2025.4.1, 2025.5.7, 2025.6.8, 2025.7.1,
# 2025.8.1, 2025.9.1, 2025.9.2, 2025.9.6, 2025.9.7, 2025.9.14, 2025.10.1, 2025.10.4, 2025.10.6,
# 2025.10.8, 2025.10.9, 2025.10.10, 2025.10.13, 2025.11.1-2025.11.6, 2025.12.1, 2025.12.8, 2026.1.1, 2026.3.1, 2026.5.1,
# 2026.7.1, 2026.9.1, 2026.10.9 and the unsloth wheels 2025.2.4, 2025.3.8, 2025.5.7, 2025.9.6,
# 2025.11.3, 2026.10.9 (``pip download --no-deps``). A range starts at the first wheel read with
# the change; releases between two wheels read are assumed to behave like the earlier one.
# ``vllm_utils.py:N`` citations are for the row's first wheel unless another release is named.

@dataclass(frozen=True)
class UnslothFacts:
    """What one Unsloth release does to vLLM's share of the card and to the trainer."""

    release: str
    first: str
    last: str
    # from_pretrained(gpu_memory_utilization=0.5, max_lora_rank=64) (unsloth 2025.3.8
    # models/loader.py:90, 93; 2025.9.6 loader.py:111, 114; 2026.10.9 loader.py:1263, 1266)
    gpu_memory_utilization_default: float
    max_lora_rank_default: int
    # What UNSLOTH_VLLM_STANDBY=1 does to the requested utilisation:
    #   "none"      no override (2025.2.4-2025.9.6);
    #   "floor"     raised to ``standby_floor`` when below it (2025.9.7 vllm_utils.py:1371-1372,
    #               2025.9.14 and 2025.10.1 :1375, 2025.10.4 and 2025.10.6 :1465: 0.9; 2025.10.8 and
    #               2025.10.9 :1466-1468: 0.8, "Used to allow 0.9, but now 0.85 works only");
    #   "tiers_le"  a request at or below 0.9 replaced by a card-size tier, raised or lowered; above
    #               0.9 kept (2025.10.10 :1466-1476, 2025.10.13 :1463-1473, 2025.11.1 :1497-1507);
    #   "tiers"     raised to a card-size tier when below it (2025.11.2 and 2025.11.3 :1538-1550), then
    #               2025.11.6 :1685-1686 (2025.12.1 the same lines) multiplies the tier by 0.95 for
    #               vLLM >= 0.11;
    #   "tiers_set" replaced by the tier whether below or above (2026.3.1 :1786-1820 "your setting
    #               of gpu_memory_utilization will OOM. Changing ..."), separate tiers for vLLM < 0.11.
    standby_rule: str
    standby_floor: float | None
    # tiers as ((min ten_percent GiB, utilisation), ...), ten_percent = 0.1 x CUDA total in GiB;
    # the first row whose minimum the card reaches wins, the last row (min 0) otherwise.
    standby_tiers: tuple
    standby_tiers_pre_0_11: tuple  # used with vLLM < 0.11 where the release splits (2026.3.1 on)
    standby_factor_0_11: float     # x0.95 for vLLM >= 0.11 (2025.11.6 and 2025.12.1 :1686; 2026.10.9 :4480)
    # max_lora_rank rounded up to a rank vLLM accepts: determine_max_lora_rank (2025.11.1
    # vllm_utils.py:1436, called :1523; 2025.11.3 :1469 fallback list [8, 16, 32, 64, 128, 256, 320, 512], read from
    # vllm.config.lora when importable; 2026.10.9 :2744, 2765-2775). Before 2025.11.3 the rank
    # goes to vLLM unchanged (vLLM itself rejects other ranks; 2025.10.13 has no determine_max_lora_rank).
    rounds_lora_rank: bool
    # max_num_seqs / chunked-prefill tokens from Unsloth's own KV estimate (GiB):
    #   "v2025" table 128/160/192/224/256/288/320/226/368 seqs at <= 2/4/8/12/16/24/40/48/80 GiB
    #           (2025.2.4 vllm_utils.py:896-905; the 226 at <= 48 GiB is in the source), and
    #           max_num_batched_tokens = max_seq_length (2025.2.4 :922-925; 2025.9.7 :1537);
    #   "v2026" (mnbt, seqs) = (2048, 8), (2048, 16), (4096, 32), (4096, 48), (6144, 64), (6144, 80),
    #           (8192, 96), (8192, 112), (8192, 128), (8192, 256) at the same GiB steps (2025.11.6 and
    #           2025.12.1 vllm_utils.py:1867-1875; 2026.10.9 :4807-4816; 2025.11.5 still has "v2025",
    #           :1761-1762), mnbt capped at seqs x max_seq_length
    #           (2026.10.9 :4853-4855).
    batch_table: str
    # approximate_vllm_memory_usage subtracts a CUDA-graph allowance 172 x hidden x layers x 4 B,
    # clamped to [0.15, 1.0] GiB, from its KV estimate (2026.3.1 vllm_utils.py:1577; 2026.10.9 :2694-2699)
    estimate_subtracts_cudagraphs: bool
    # GRPO batch auto-adjust, unsloth/models/rl.py:
    #   "batch"    if batch % G != 0: batch = G (2025.9.6 rl.py:649-652; 2025.11.3 rl.py:828)
    #   "ga_world" if (ga x world x batch) % G != 0: batch = G, with a TRL that has
    #              steps_per_generation (2026.10.9 rl.py:3595-3601)
    divisibility_rule: str
    # the KV estimate counts 4-bit weights only for a checkpoint that is already quantised
    # (``load_in_4bit = "quantization_config" in config``, 2025.2.4 vllm_utils.py:710, 2025.8.1
    # :1130): a 16-bit checkpoint loaded with load_in_4bit=True is estimated at 16 bits. From
    # 2025.9.7 the estimate takes the load_in_4bit argument.
    estimate_4bit_from_checkpoint: bool
    # What load_vllm gives vLLM for a vision model (``is_vision_model``), beside
    # ``limit_mm_per_prompt = {"image": 1, "video": 0}`` (2025.9.7 vllm_utils.py:1639-1642; 2026.10.9
    # :1182-1190, 5045) and chunked prefill on as for text (2025.9.7 :1405; 2026.10.9 :4598):
    #   "none"    no vision branch in load_vllm (2025.2.4-2025.8.1 have no ``is_vision_model``);
    #   "one"     "Vision model detected, setting approx_max_num_seqs to 1": max_num_seqs = 1 and
    #             max_num_batched_tokens = max(8192, max_seq_length), whatever the KV estimate
    #             (2025.9.7 :1511-1519; 2025.12.1 :1878-1887; 2026.9.1 :2749-2752);
    #   "by_vllm" vision_max_num_seqs (2026.10.9 :2459-2485, called :4826-4838): 1 with vLLM < 0.11
    #             ("can still run V0, whose profiler gives every sequence an image", :2469-2471);
    #             with 0.11.x the table's sequences capped at max(1, int(0.1 x KV estimate /
    #             (max_num_batched_tokens x hidden x 2 B))) (:2474-2481); from 0.12 the table's
    #             (V1 caps profiled images by the encoder budget, :2472); max_num_batched_tokens =
    #             max(8192, max_seq_length) (:4828-4829), then capped at seqs x max_seq_length (:4854-4859).
    vision_rule: str = "none"
    # UNSLOTH_VLLM_STANDBY_UTIL_OVERRIDE=1 keeps the request under standby (from 2025.11.4 :1568, 1582;
    # 2025.11.6 :1672, 1688; 2026.10.9 the same variable); not modelled as a mode, named as a fix.
    standby_util_override_env: bool = False
    # The CUDA-graph mode load_vllm's CompilationConfig asks for (compilation_config=3, the default):
    #   "piecewise"          full_cuda_graph=False (2025.9.7 vllm_utils.py:1586; earlier releases the same);
    #   "full"               full_cuda_graph=True (2025.9.14 :1589, 2025.10.13 :1691), which vLLM 0.10.2
    #                        turns into cudagraph_mode=FULL (config/compilation.py:455-462);
    #   "full_and_piecewise" cudagraph_mode=FULL_AND_PIECEWISE where CompilationConfig has it (2025.11.1
    #                        :1755, 2025.12.1 :1996, 2026.10.9 :4993): FULL decode graphs beside the
    #                        piecewise ones also with vLLM 0.10.x, whose own default is PIECEWISE.
    cudagraph_mode: str = "piecewise"
    # from_pretrained(max_num_seqs=N) other than 256 is kept as vLLM's max_num_seqs (2026.10.9
    # vllm_utils.py:4401, 4819-4820 ``explicit_max_num_seqs``; 2026.9.1 has no such branch)
    max_num_seqs_kwarg: bool = False
    note: str = ""

    @property
    def version(self) -> str:
        return self.release


# Facts every release read shares (unsloth_zoo vllm_utils.py, each wheel read):
# the utilisation vLLM receives is ``util x free / total`` (free, total = torch.cuda.mem_get_info()
# at load_vllm; 2025.2.4 :712, 763; 2026.10.9 :2587, 2670), lowered to ``1 - activation / total``
# when ``total - util x free`` is below Unsloth's training-activation estimate (2025.2.4 :750-762;
# 2026.10.9 :2656-2670); that value is what load_vllm passes as vLLM's gpu_memory_utilization
# (2025.2.4 :957; 2026.10.9 :5013) and prints as "actual GPU utilization".
UNSLOTH_ACTIVATION_BATCH = 2          # "assume bsz=2" (2025.2.4 :750; 2026.10.9 :2656)
UNSLOTH_ACTIVATION_SLACK = 1.25       # "2 bytes with 25% extra" (2025.2.4 :758; 2026.10.9 :2666)
UNSLOTH_KV_ESTIMATE_FRACTION = 0.95   # 0.95 x memory left for the KV cache (2025.2.4 :779)
UNSLOTH_4BIT_WEIGHT_FACTOR = 16 / 5   # quantised linears / 3.2 in its weight estimate (2025.2.4 :769)
UNSLOTH_CUDAGRAPH_GRAPHS = 172        # 2026.10.9 :2694
UNSLOTH_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # 2025.11.3 :1469; 2026.10.9 :2744
# Vision models: the prefill budget floor, "Single image would contribute to 6404 tokens in Llama 3.2
# ... For qwen 2.5 VL, this single image/video contributes to 16Ki tokens" (2025.9.7 :1517-1519;
# 2026.10.9 :4827-4829), and the 0.11.x cap's share of the KV estimate (2026.10.9 :2481).
UNSLOTH_VISION_MIN_BATCHED_TOKENS = 8192
UNSLOTH_VISION_KV_SHARE = 0.1
# RL defaults Unsloth writes into GRPOConfig: batch 4, accumulation 2, 8 generations, adamw_8bit
# (unsloth 2025.9.6 rl.py:504-516; 2026.10.9 rl.py:3313-3325)
UNSLOTH_RL_DEFAULTS = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                       "num_generations": 8, "optim": "adamw_8bit"}
# use_gradient_checkpointing="unsloth": each decoder layer's input goes to CPU memory in the
# forward and comes back for the recomputation (unsloth_zoo 2025.3.8
# gradient_checkpointing.py:137-160, ``hidden_states.to("cpu", non_blocking=True)``).
# GRPO loss: UnslothEfficientGRPO computes log-probs chunk by chunk, never the full
# (batch, seq, vocab) logits (unsloth_zoo 2025.3.8 rl_replacements.py:100-190).
# Standby sleep: Unsloth's CuMemAllocator.sleep skips the "weights" tag (shared with training)
# and releases the rest, i.e. the KV cache (unsloth_zoo 2026.10.9 vllm_utils.py:838-840).

_TIERS_B = ((4.0, 0.925), (2.0, 0.9), (1.4, 0.85), (1.0, 0.8), (0.0, 0.75))  # 2025.10.10 :1471-1475
_TIERS_A = ((4.0, 0.925), (2.5, 0.9), (2.0, 0.875), (1.4, 0.85), (1.0, 0.8), (0.0, 0.75))  # 2025.11.2 :1541-1546
_TIERS_C = ((4.0, 0.925), (2.5, 0.9), (2.0, 0.825), (1.4, 0.8), (1.0, 0.775), (0.0, 0.75))
_TIERS_PRE_0_11 = ((9.0, 0.9), (4.0, 0.875), (2.5, 0.85), (2.0, 0.825), (1.4, 0.8), (1.0, 0.75), (0.0, 0.7))

_UNSLOTH_CHANGES = (
    ("2025.2.4", "2025.9.6", "read: 2025.2.4, 2025.3.8, 2025.4.1, 2025.5.7, 2025.6.8, 2025.7.1, 2025.8.1, "
                             "2025.9.1, 2025.9.2, 2025.9.6 (no standby override in load_vllm)",
     dict(gpu_memory_utilization_default=0.5, max_lora_rank_default=64, standby_rule="none",
          standby_floor=None, standby_tiers=(), standby_tiers_pre_0_11=(), standby_factor_0_11=1.0,
          rounds_lora_rank=False, batch_table="v2025", estimate_subtracts_cudagraphs=False,
          divisibility_rule="batch", estimate_4bit_from_checkpoint=True, vision_rule="none",
          standby_util_override_env=False, cudagraph_mode="piecewise", max_num_seqs_kwarg=False)),
    ("2025.9.7", "2025.9.13", "read: 2025.9.7 (standby raises to 0.9, :1371; vision models: max_num_seqs 1, "
                              ":1516)",
     dict(standby_rule="floor", standby_floor=0.9, estimate_4bit_from_checkpoint=False, vision_rule="one")),
    ("2025.9.14", "2025.10.7", "read: 2025.9.14, 2025.10.1, 2025.10.4, 2025.10.6 (full_cuda_graph=True, "
                               "2025.9.14 :1589)",
     dict(cudagraph_mode="full")),
    ("2025.10.8", "2025.10.9", "read: 2025.10.8, 2025.10.9 (standby raises to 0.8, :1466)",
     dict(standby_floor=0.8)),
    ("2025.10.10", "2025.10.x", "read: 2025.10.10, 2025.10.13 (standby replaces a request <= 0.9 with a "
                                "card-size tier, 2025.10.10 :1466-1476)",
     dict(standby_rule="tiers_le", standby_floor=None, standby_tiers=_TIERS_B)),
    ("2025.11.1", "2025.11.1", "read: 2025.11.1 (rank rounding, :1523; standby as 2025.10.10, :1497)",
     dict(rounds_lora_rank=True, cudagraph_mode="full_and_piecewise")),
    ("2025.11.2", "2025.11.3", "read: 2025.11.2, 2025.11.3 (standby raises to a card-size tier, :1541-1549)",
     dict(standby_rule="tiers", standby_tiers=_TIERS_A)),
    ("2025.11.4", "2025.11.5", "read: 2025.11.4, 2025.11.5 (UNSLOTH_VLLM_STANDBY_UTIL_OVERRIDE, 2025.11.4 :1568)",
     dict(standby_util_override_env=True)),
    ("2025.11.6", "2026.2.x", "read: 2025.11.6, 2025.12.1, 2025.12.8, 2026.1.1 (x0.95 with vLLM >= 0.11, :1686; "
                              "new batch table :1867)",
     dict(standby_factor_0_11=0.95, batch_table="v2026")),
    ("2026.3.1", "2026.4.x", "read: 2026.3.1 (tiers replace the request, :1814; vLLM < 0.11 tiers :1787)",
     dict(standby_rule="tiers_set", standby_tiers_pre_0_11=_TIERS_PRE_0_11, estimate_subtracts_cudagraphs=True)),
    ("2026.5.1", "2026.10.8", "read: 2026.5.1, 2026.7.1, 2026.9.1 (lower tiers <= 24 GB, "
                              "2026.10.9 :4471-4476; ga x world divisibility, rl.py:3598)",
     dict(standby_tiers=_TIERS_C, divisibility_rule="ga_world")),
    ("2026.10.9", "2026.10.x", "read: 2026.10.9 (vision models: max_num_seqs by vLLM release, "
                               "vision_max_num_seqs :2459-2485)",
     dict(vision_rule="by_vllm", max_num_seqs_kwarg=True)),
)

_UNSLOTH_ROWS = tuple((parse_version(first, "Unsloth"), last, {**kw, "note": note})
                      for first, last, note, kw in (
                          (f, l, n, {k: v for c in _UNSLOTH_CHANGES[:i + 1] for k, v in c[3].items()})
                          for i, (f, l, n, _) in enumerate(_UNSLOTH_CHANGES)))
_UNSLOTH_END = (2026, 11, 0)
UNSLOTH_NEWEST_KNOWN = "2026.10.9"
UNSLOTH_OLDEST_KNOWN = "2025.2.4"


def unsloth_facts(version: str | None = None) -> UnslothFacts:
    """Facts for an Unsloth (unsloth_zoo) release; ``None`` = the installed unsloth_zoo (else
    unsloth), else the newest read (2026.10.9). VersionError outside 2025.2.4-2026.10.x."""
    if version is None:
        version = _installed("unsloth_zoo") or _installed("unsloth") or UNSLOTH_NEWEST_KNOWN
    v = parse_version(version, "Unsloth")
    row = None
    if parse_version(UNSLOTH_OLDEST_KNOWN, "Unsloth") <= v < _UNSLOTH_END:
        for first, last, kw in _UNSLOTH_ROWS:
            if v >= first:
                row = (first, last, kw)
    if row is None:
        raise VersionError(f"Unsloth {str(version).strip()} is not covered: the planner knows Unsloth "
                           f"{UNSLOTH_OLDEST_KNOWN} to 2026.10.x (pass --unsloth-version)")
    first, last, kw = row
    return UnslothFacts(release=_fmt(v), first=_fmt(first), last=last, **kw)  # type: ignore[arg-type]


# What an Unsloth release installs beside it (the unsloth wheels' METADATA ``Requires-Dist: trl``;
# unsloth pins no vLLM). A release between two wheels read takes the earlier one's pin.
_UNSLOTH_TRL_PINS = (
    ("2025.2.4", None),       # trl>=0.7.9, no ceiling (unsloth 2025.2.4 METADATA:233)
    ("2025.3.8", "0.15.2"),   # trl<=0.15.2 (unsloth 2025.3.8 METADATA:233; 2025.5.7 METADATA:33)
    ("2025.9.6", None),       # no ceiling (unsloth 2025.9.6 METADATA)
    ("2025.11.3", "0.23.0"),  # trl<=0.23.0 (unsloth 2025.11.3 METADATA)
    ("2026.3.1", "0.24.0"),   # trl<=0.24.0 (unsloth 2026.3.1 METADATA)
    ("2026.10.9", "1.15.0"),  # trl<=1.15.0 (unsloth 2026.10.9 METADATA:43; unsloth_zoo 2026.10.9 the same)
)
# Standby hands TRL vllm_enable_sleep_mode only for TRL >= 0.23 (unsloth 2026.10.9 models/rl.py:4179);
# standby refuses expandable_segments:True (unsloth_zoo 2026.10.9 vllm_utils.py:803, __init__.py:335-343);
# standby is switched off for vision models unless UNSLOTH_VLLM_STANDBY_VISION=1 (2026.10.9 vllm_utils.py:4430-4441).
# A vLLM start that fails with "memory" in its error is retried once at 0.75 x max_num_seqs (2025.3.8
# vllm_utils.py:1009-1015, the utilisation kept) and from 2025.5.7 also 0.85 x the utilisation
# (2025.5.7 :1211-1213, 2025.9.7 :1676-1689, 2026.10.9 :5367-5389, which also shrinks
# max_num_batched_tokens, _shrink_for_memory_retry, not modelled); never with standby (2025.9.7 :1676:
# "Sleep mode uses CuMemAllocator which can't run multiple instances in single process").
UNSLOTH_RETRY_SEQS = 0.75
_UNSLOTH_RETRY_UTILIZATION_FROM = "2025.5.7"


def unsloth_retry_utilization(version: str | None = None) -> float:
    """The factor on the utilisation of Unsloth's one retry after a vLLM start that ran out of memory."""
    v = parse_version(unsloth_facts(version).release, "Unsloth")
    return 0.85 if v >= parse_version(_UNSLOTH_RETRY_UTILIZATION_FROM, "Unsloth") else 1.0
UNSLOTH_STANDBY_MIN_TRL = "0.23.0"
# FP8 RL: from_pretrained(load_in_fp8=True | "block") exists from unsloth 2025.11.4 (models/loader.py:148,
# 676; not in 2025.11.3's loader.py): a mapped FP8 checkpoint (unsloth/<model>-FP8-Dynamic / -FP8-Block,
# loader_utils.py get_model_name) or, where none is mapped, an on-the-fly quantization that needs compute
# capability >= 9.0, torch >= 2.9 and torchao (loader_utils.py:286-340, "On the fly `load_in_fp8` requires
# H100 GPUs or after"). load_vllm hands an FP8 checkpoint to vLLM as FP8 (is_fp8 from the name or
# quant_method, unsloth_zoo 2025.10.4 vllm_utils.py:1486; 2025.11.6 :1716) and prices it at 8/5 of 16 bits
# in its KV estimate (``load_in_8bit = is_fp8``, 2025.11.3 :1584 with :1441 ``factor = 8/5``). The trainer
# wraps vLLM's FP8 tensors as transformers' FP8Linear (block scales) or FbgemmFp8Linear (row scales)
# (unsloth_zoo 2025.11.6 :1298-1318): one shared copy, 1 B per weight plus its scales; its backward
# dequantizes one weight at a time to bf16 (unsloth 2025.11.4 kernels/fp8.py:384, 455, 512).
UNSLOTH_LOAD_IN_FP8_FROM = "2025.11.4"
UNSLOTH_FP8_ON_THE_FLY_MIN_CC = 9.0
# vLLM's fp8 quantization needs compute capability 8.0 (Fp8Config.get_min_capability() = 80, vLLM 0.10.2
# model_executor/layers/quantization/fp8.py:112-113); below 8.9 it runs W8A16 through Marlin (:228).
VLLM_FP8_MIN_CC = 8.0
# vLLM >= 0.28 moved bitsandbytes out of tree: load_in_4bit needs ``pip install vllm-bnb-plugin``
# (unsloth_zoo 2026.10.9 vllm_utils.py:349-366; the vLLM side: VllmFacts.bitsandbytes_supported)
UNSLOTH_BNB_PLUGIN = "vllm-bnb-plugin"
# Cards below compute capability 8.0 (T4, V100): Unsloth's notebooks install vllm==0.9.2 there
# ("whose T4 branch installs vllm==0.9.2", unsloth 2026.10.9 import_fixes.py:5802).
UNSLOTH_PRE_AMPERE_VLLM = "0.9.2"


def unsloth_trl_ceiling(version: str | None = None) -> str | None:
    """The newest TRL an Unsloth release accepts (None: no ceiling)."""
    v = parse_version(unsloth_facts(version).release, "Unsloth")
    pin = None
    for first, ceiling in _UNSLOTH_TRL_PINS:
        if v >= parse_version(first, "Unsloth"):
            pin = ceiling
    return pin


def unsloth_vllm_version(unsloth_version: str | None = None, compute_capability: str | float | None = None,
                         load_in_4bit: bool = False) -> tuple[str, str]:
    """(the vLLM release to plan an Unsloth run for, why) when the user names none.

    The installed vLLM; else, below compute capability 8.0, the 0.9.2 Unsloth's notebooks install
    there; else what the TRL release Unsloth pins resolves to (:func:`colocate_vllm_version`; for
    4-bit one with bitsandbytes in tree, before vllm-bnb-plugin).
    """
    installed = _installed("vllm")
    if installed:
        return installed, "installed"
    if compute_capability is not None and float(compute_capability) < 8.0:
        return UNSLOTH_PRE_AMPERE_VLLM, (f"assumed: Unsloth's notebooks install vllm=={UNSLOTH_PRE_AMPERE_VLLM} "
                                         f"on cards below compute capability 8.0")
    ceiling = unsloth_trl_ceiling(unsloth_version)
    v = colocate_vllm_version(ceiling, needs_bitsandbytes=load_in_4bit)
    trl = f"TRL <= {ceiling}" if ceiling else "the newest TRL"
    return v, (f"assumed: the newest vLLM {trl} (Unsloth {unsloth_facts(unsloth_version).release}'s pin) accepts"
               + (", with bitsandbytes in tree (no vllm-bnb-plugin)" if load_in_4bit else ""))


# GRPOConfig(max_prompt_length=...) exists up to TRL 0.27 (0.27.0 trl/trainer/grpo_config.py:852)
# and is gone from 0.28.0 (the 0.28.0 and 1.0.0 wheels' grpo_config.py have no such field).
TRL_MAX_PROMPT_LENGTH_UNTIL = (0, 28, 0)
# GRPOConfig(use_liger_loss=...) exists from 0.17.0 (grpo_config.py:391), deprecated into use_liger_kernel in
# 0.25.0 (0.25.0 grpo_config.py:627, :723-727) and gone in 0.28.0 (the 0.28.0 wheel has no such field)
TRL_USE_LIGER_LOSS_UNTIL = (0, 28, 0)


def unsloth_trl_version(unsloth_version: str | None = None) -> tuple[str, str]:
    """(the TRL release an Unsloth run gets, why): installed, else Unsloth's ceiling, else the newest."""
    installed = _installed("trl")
    if installed:
        return installed, "installed"
    ceiling = unsloth_trl_ceiling(unsloth_version)
    if ceiling:
        return ceiling, f"assumed: the newest TRL Unsloth {unsloth_facts(unsloth_version).release} accepts"
    return TRL_NEWEST_KNOWN, "assumed: the newest TRL known (Unsloth sets no ceiling)"


def grpo_config_has_max_prompt_length(trl_version: str) -> bool:
    return parse_version(trl_version, "TRL") < TRL_MAX_PROMPT_LENGTH_UNTIL


# Standby is switched off for a vision model unless UNSLOTH_VLLM_STANDBY_VISION=1: first in the
# 2026.7.1 zoo wheel (not in 2026.5.1; 2026.10.9 vllm_utils.py:4430-4441).
UNSLOTH_VISION_STANDBY_OFF_FROM = "2026.7.1"


def unsloth_vision_turns_standby_off(unsloth_version: str | None = None) -> bool:
    return parse_version(unsloth_facts(unsloth_version).release, "Unsloth") >= \
        parse_version(UNSLOTH_VISION_STANDBY_OFF_FROM, "Unsloth")


# -- the keys `trl grpo --config` accepts (generated by benchmarks/trl_config_fields.py) ---------------------------------------
# Read with dataclasses.fields from TRL 1.16.0 (trl/scripts/grpo.py make_parser: GRPOScriptArguments,
# GRPOConfig with transformers 5.24.0's TrainingArguments, ModelConfig, DatasetMixtureConfig) and from
# accelerate 1.15.0's launch_command_parser (trl/cli/commands/training.py passes the keys TrlParser
# leaves to `accelerate launch`). planner.search.trl_config uses it where TRL is not installed.
TRL_SCRIPT_KEYS_RELEASE = "1.16.0"
TRL_SCRIPT_KEYS_TRANSFORMERS = "5.24.0"
TRL_SCRIPT_KEYS = frozenset((
    "accelerator_config", "activation_checkpointing", "activation_checkpointing_kwargs", "adam_beta1", "adam_beta2",
    "adam_epsilon", "attn_implementation", "auto_find_batch_size", "average_tokens_across_devices",
    "batch_eval_metrics", "beta", "bf16", "bf16_full_eval", "bnb_4bit_quant_storage", "bnb_4bit_quant_type",
    "cache_implementation", "cast_lm_head_to_fp32", "chat_template_kwargs", "data_seed", "dataloader_drop_last",
    "dataloader_in_order", "dataloader_multiprocessing_context", "dataloader_num_workers",
    "dataloader_persistent_workers", "dataloader_pin_memory", "dataloader_prefetch_factor", "dataset_config",
    "dataset_name", "dataset_streaming", "dataset_test_split", "dataset_train_split", "datasets", "ddp_backend",
    "ddp_broadcast_buffers", "ddp_bucket_cap_mb", "ddp_find_unused_parameters", "ddp_static_graph", "ddp_timeout",
    "debug", "deepspeed", "delta", "disable_dropout", "disable_tqdm", "do_eval", "do_predict", "do_train",
    "ds3_gather_for_generation", "dtype", "enable_jit_checkpoint", "entropy_coef", "entropy_coef_delta",
    "entropy_coef_max", "entropy_coef_min", "entropy_target", "epsilon", "epsilon_high", "eval_accumulation_steps",
    "eval_delay", "eval_do_concat_batches", "eval_on_start", "eval_steps", "eval_strategy", "eval_use_gather_object",
    "fp16", "fp16_full_eval", "fsdp", "fsdp_config", "full_determinism", "generation_batch_size",
    "generation_kwargs", "gradient_accumulation_steps", "gradient_checkpointing", "gradient_checkpointing_kwargs",
    "greater_is_better", "hub_always_push", "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy",
    "hub_token", "ignore_bias_buffers", "ignore_data_skip", "importance_sampling_level", "include_for_metrics",
    "include_num_input_tokens_seen", "label_names", "label_smoothing_factor", "learning_rate", "length_column_name",
    "liger_kernel_config", "load_best_model_at_end", "load_in_4bit", "load_in_8bit", "local_rank", "log_completions",
    "log_completions_hub_repo", "log_level", "log_level_replica", "log_multimodal", "log_on_each_node",
    "log_unique_prompts", "logging_first_step", "logging_nan_inf_filter", "logging_steps", "logging_strategy",
    "lora_alpha", "lora_dropout", "lora_modules_to_save", "lora_r", "lora_target_modules", "lora_target_parameters",
    "lora_task_type", "loss_type", "lr_scheduler_kwargs", "lr_scheduler_type", "mask_truncated_completions",
    "max_completion_length", "max_grad_norm", "max_steps", "max_tool_calling_iterations", "metric_for_best_model",
    "min_p", "model_init_kwargs", "model_name_or_path", "model_revision", "multi_objective_aggregation",
    "neftune_noise_alpha", "num_completions_to_print", "num_generations", "num_generations_eval", "num_iterations",
    "num_train_epochs", "off_policy_mask_threshold", "optim", "optim_args", "optim_target_modules", "output_dir",
    "pad_to_multiple_of", "parallelism_config", "per_device_eval_batch_size", "per_device_train_batch_size",
    "prediction_loss_only", "project", "push_to_hub", "ref_model_mixup_alpha", "ref_model_sync_steps",
    "remove_unused_columns", "repetition_penalty", "report_to", "restore_callback_states_from_checkpoint",
    "resume_from_checkpoint", "reward_funcs", "reward_model_name_or_path", "reward_weights", "router_aux_loss_coef",
    "run_name", "sapo_temperature_neg", "sapo_temperature_pos", "save_on_each_node", "save_only_model", "save_steps",
    "save_strategy", "save_total_limit", "scale_rewards", "seed", "shuffle_dataset", "skip_memory_metrics",
    "steps_per_generation", "streaming", "sync_ref_model", "temperature", "test_split_size", "tf32",
    "top_entropy_quantile", "top_k", "top_p", "torch_compile", "torch_compile_backend", "torch_compile_mode",
    "torch_empty_cache_steps", "trackio_bucket_id", "trackio_space_id", "trackio_static_space_id",
    "train_sampling_strategy", "transformers_continuous_batching_config", "trust_remote_code",
    "use_adaptive_entropy", "use_bias_correction_kl", "use_bnb_nested_quant", "use_cache", "use_cpu", "use_dora",
    "use_liger_kernel", "use_peft", "use_rslora", "use_transformers_continuous_batching", "use_transformers_paged",
    "use_vllm", "vespo_k_neg", "vespo_k_pos", "vespo_lambda_neg", "vespo_lambda_pos", "vllm_enable_sleep_mode",
    "vllm_gpu_memory_utilization", "vllm_group_port", "vllm_importance_sampling_cap",
    "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min", "vllm_importance_sampling_correction",
    "vllm_importance_sampling_mode", "vllm_max_model_length", "vllm_mode", "vllm_model_impl", "vllm_server_base_url",
    "vllm_server_host", "vllm_server_port", "vllm_server_timeout", "vllm_structured_outputs_regex",
    "vllm_tensor_parallel_size", "warmup_steps", "weight_decay",
))
ACCELERATE_LAUNCH_KEYS_RELEASE = "1.15.0"
ACCELERATE_LAUNCH_KEYS = frozenset((
    "accelerate_config", "aws_access_key_id", "aws_secret_access_key", "config_file", "cpu", "debug",
    "deepspeed_config_file", "deepspeed_exclusion_filter", "deepspeed_hostfile", "deepspeed_inclusion_filter",
    "deepspeed_moe_layer_cls_names", "deepspeed_multinode_launcher", "downcast_bf16", "dynamo_backend",
    "dynamo_mode", "dynamo_use_dynamic", "dynamo_use_fullgraph", "dynamo_use_regional_compilation",
    "enable_cpu_affinity", "fp8_amax_compute_algo", "fp8_amax_history_len", "fp8_backend",
    "fp8_enable_fsdp_float8_all_gather", "fp8_format", "fp8_interval", "fp8_margin", "fp8_opt_level",
    "fp8_override_linear_precision", "fp8_pad_inner_dim", "fp8_use_autocast_during_eval",
    "fsdp_activation_checkpointing", "fsdp_activation_checkpointing_offload", "fsdp_auto_wrap_policy",
    "fsdp_backward_prefetch", "fsdp_cpu_ram_efficient_loading", "fsdp_forward_prefetch", "fsdp_min_num_params",
    "fsdp_offload_params", "fsdp_reshard_after_forward", "fsdp_sharding_strategy", "fsdp_state_dict_type",
    "fsdp_sync_module_states", "fsdp_transformer_layer_cls_to_wrap", "fsdp_use_orig_params", "fsdp_version",
    "gpu_ids", "gradient_accumulation_steps", "gradient_clipping", "log_dir", "machine_rank", "main_process_ip",
    "main_process_port", "main_training_function", "max_restarts", "megatron_lm_attention_backend",
    "megatron_lm_attention_dropout", "megatron_lm_attention_softmax_in_fp32", "megatron_lm_calculate_per_token_loss",
    "megatron_lm_context_parallel_size", "megatron_lm_decoder_last_pipeline_num_layers", "megatron_lm_eod_mask_loss",
    "megatron_lm_expert_model_parallel_size", "megatron_lm_expert_tensor_parallel_size",
    "megatron_lm_gradient_clipping", "megatron_lm_hidden_dropout", "megatron_lm_no_load_optim",
    "megatron_lm_no_save_optim", "megatron_lm_num_micro_batches", "megatron_lm_optimizer_cpu_offload",
    "megatron_lm_overlap_cpu_optimizer_d2h_h2d", "megatron_lm_pp_degree", "megatron_lm_recompute_activations",
    "megatron_lm_recompute_granularity", "megatron_lm_recompute_method", "megatron_lm_recompute_num_layers",
    "megatron_lm_sequence_parallelism", "megatron_lm_tp_degree", "megatron_lm_use_custom_fsdp",
    "megatron_lm_use_distributed_optimizer", "megatron_lm_use_precision_aware_optimizer",
    "megatron_lm_use_rotary_position_embeddings", "mixed_precision", "module", "monitor_interval", "mpirun_hostfile",
    "multi_gpu", "no_python", "num_cpu_threads_per_process", "num_machines", "num_processes",
    "offload_optimizer_device", "offload_optimizer_nvme_path", "offload_param_device", "offload_param_nvme_path",
    "parallelism_config_cp_backend", "parallelism_config_cp_comm_strategy", "parallelism_config_cp_size",
    "parallelism_config_dp_replicate_size", "parallelism_config_dp_shard_size",
    "parallelism_config_sp_attn_implementation", "parallelism_config_sp_backend", "parallelism_config_sp_seq_length",
    "parallelism_config_sp_seq_length_is_variable", "parallelism_config_sp_size", "parallelism_config_tp_size",
    "quiet", "rdzv_backend", "rdzv_conf", "role", "same_network", "tee", "tpu", "tpu_use_cluster", "tpu_use_sudo",
    "use_deepspeed", "use_fsdp", "use_megatron_lm", "use_parallelism_config", "vm", "zero3_init_flag",
    "zero3_save_16bit_model", "zero_stage",
))
# -- end of the generated keys
