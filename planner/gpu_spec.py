"""GPU specs: the memory CUDA reports, bf16 support and bandwidth, from profiles/gpus.json,
or the real card through NVML with ``--gpu auto``.

``total_bytes`` is what ``cudaMemGetInfo`` (``torch.cuda.mem_get_info()[1]``) reports, the
figure vLLM multiplies by ``gpu_memory_utilization``: an H100 80GB HBM3 reports 81,079 MiB,
not the nominal 80 GB, and less than nvidia-smi's (NVML) total.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, replace
from functools import lru_cache

from .errors import NoGpuError, UnknownGpuError
from .shipped import PROFILES_DIR, require
from .units import MIB

GPUS_FILE = PROFILES_DIR.joinpath("gpus.json")

# NVML's total includes memory the driver keeps for itself; CUDA reports this much less
# on the cards we have both figures for (H100 80GB: 81,559 MiB NVML vs 81,079 MiB CUDA).
NVML_MINUS_CUDA_BYTES = 480 * MIB


@dataclass(frozen=True)
class GpuSpec:
    """One GPU. ``free_bytes``/``other_process_bytes`` are set only for a live card (``auto``)."""

    name: str
    total_bytes: int
    bf16: bool = True
    memory_bandwidth_gbs: float = 0.0
    compute_capability: str = ""
    fp8: bool = False
    source: str = ""
    free_bytes: int | None = None
    other_process_bytes: int = 0
    nvml_name: str = ""
    driver_version: str = ""
    count: int = 1  # cards of this kind seen (auto) or requested

    @property
    def usable_bytes(self) -> int:
        """Memory a new process can take: the live free figure when known, else the total."""
        return self.total_bytes if self.free_bytes is None else min(self.free_bytes, self.total_bytes)

    def to_dict(self) -> dict:
        d = {"name": self.name, "total_bytes": self.total_bytes, "bf16": self.bf16,
             "memory_bandwidth_gbs": self.memory_bandwidth_gbs, "source": self.source}
        if self.free_bytes is not None:
            d.update(free_bytes=self.free_bytes, other_process_bytes=self.other_process_bytes,
                     nvml_name=self.nvml_name, driver_version=self.driver_version)
        return d


def margin_budget_bytes(gpu: GpuSpec, margin: float) -> int:
    """What every phase must stay under: the card less the safety margin (a fraction of the total),
    less what other processes hold on a live card (``--gpu auto``)."""
    return int(gpu.total_bytes * (1 - margin)) - (gpu.total_bytes - gpu.usable_bytes)


@lru_cache(maxsize=1)
def _gpu_table() -> tuple[dict, ...]:
    with require(GPUS_FILE).open() as f:
        return tuple(json.load(f)["gpus"])


def _spec_from_entry(e: dict) -> GpuSpec:
    return GpuSpec(name=e["name"], total_bytes=int(e["total_bytes"]), bf16=bool(e.get("bf16", True)),
                   memory_bandwidth_gbs=float(e.get("memory_bandwidth_gbs", 0.0)),
                   compute_capability=str(e.get("compute_capability", "")), fp8=bool(e.get("fp8", False)),
                   source=f"shipped profile ({e.get('total_source', 'profiles/gpus.json')})")


def shipped_gpu_names() -> list[str]:
    return [e["name"] for e in _gpu_table()]


def _lookup(name: str) -> dict | None:
    key = name.strip().lower()
    for e in _gpu_table():
        names = [e["name"], *e.get("aliases", ()), *e.get("nvml_names", ())]
        if key in (n.lower() for n in names):
            return e
    return None


def resolve_gpu(gpu: "str | GpuSpec") -> GpuSpec:
    """``auto`` -> the real card through NVML; a shipped name or alias -> its profile."""
    if isinstance(gpu, GpuSpec):
        return gpu
    if not isinstance(gpu, str) or not gpu.strip():
        raise UnknownGpuError(f"no GPU given: pass --gpu auto or one of {', '.join(shipped_gpu_names()[:6])}, ...")
    if gpu.strip().lower() == "auto":
        return detect_gpu()
    entry = _lookup(gpu)
    if entry is None:
        all_names = [n for e in _gpu_table() for n in (e["name"], *e.get("aliases", ()))]
        close = difflib.get_close_matches(gpu.strip(), all_names, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownGpuError(f"unknown GPU '{gpu}': {hint}known GPUs: {', '.join(shipped_gpu_names())}")
    return _spec_from_entry(entry)


def detect_gpu(index: int = 0) -> GpuSpec:
    """Read card ``index`` through NVML: name, total, free, memory held by other processes.

    The total CUDA reports comes from the shipped profile when NVML's name matches one,
    else NVML's total less the driver reservation (``NVML_MINUS_CUDA_BYTES``).
    """
    names = ", ".join(shipped_gpu_names()[:5])
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        raise NoGpuError(f"--gpu auto needs NVML (pip install 'grpo-vram-planner[nvml]') and an NVIDIA driver; "
                         f"plan for a named card instead with --gpu NAME (e.g. {names})") from None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        raise NoGpuError(f"no NVIDIA GPU found (NVML could not load the driver); use --gpu NAME, "
                         f"e.g. {names}") from None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise NoGpuError(f"NVML sees no GPU; use --gpu NAME, e.g. {names}")
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        except Exception:  # noqa: BLE001
            driver = ""
        others = 0
        try:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                others += int(p.usedGpuMemory or 0)
        except Exception:  # noqa: BLE001
            others = int(mem.used)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    entry = _lookup(name)
    if entry is not None:
        spec = _spec_from_entry(entry)
        total = spec.total_bytes
    else:
        spec = GpuSpec(name=name, total_bytes=0, source="NVML")
        total = int(mem.total) - NVML_MINUS_CUDA_BYTES
    # NVML's "used" counts the driver's reservation too; free as CUDA sees it:
    free = max(0, min(total, int(mem.free)))
    return replace(spec, total_bytes=total, free_bytes=free, other_process_bytes=others,
                   nvml_name=name, driver_version=driver, count=count,
                   source=f"NVML ({name}, driver {driver})")
