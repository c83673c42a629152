"""GPU specs: the memory CUDA reports, bf16 support, memory bandwidth, the dense peak throughput per
dtype and the interconnect (NVLink, PCIe), from profiles/gpus.json, or the real card through NVML
with ``--gpu auto`` (whose throughput comes from the shipped profile its name matches, else none).

Throughput figures are the datasheets' dense peaks (half the "with sparsity" figures), each profile
naming its source in ``throughput_source``; planner.timing turns them into seconds with fitted
efficiencies. ``nvlink_gbs`` and ``pcie_gbs`` are the datasheets' totals over both directions (one
direction is half); ``nvlink_gbs`` is 0 for a card without NVLink.

``total_bytes`` is what ``cudaMemGetInfo`` (``torch.cuda.mem_get_info()[1]``) reports, the
figure vLLM multiplies by ``gpu_memory_utilization``: an H100 80GB HBM3 reports 81,079 MiB,
not the nominal 80 GB, and less than nvidia-smi's (NVML) total.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from ..errors import InvalidSetupError, NoGpuError, UnknownGpuError
from .shipped import PROFILES_DIR, require
from .units import GIB, MIB

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
    reserve_bytes: int = 0  # kept free for a display or another process (--reserve): never planned into
    dense_tflops: tuple[tuple[str, float], ...] = ()  # (dtype, dense peak TFLOPS) from the datasheet
    nvlink_gbs: float = 0.0  # NVLink, both directions together (0: none)
    pcie_gbs: float = 0.0  # the host link (x16 unless the card has fewer lanes), both directions together
    throughput_source: str = ""

    def peak_tflops(self, dtype: str) -> float:
        """The dense peak TFLOPS for ``dtype`` (bf16, fp16, fp32, fp8, int8); 0 when the card has no
        such unit or the profile has no figure."""
        return dict(self.dense_tflops).get(dtype, 0.0)

    @property
    def usable_bytes(self) -> int:
        """Memory a new process can take: the live free figure when known, else the total, less the
        reserve (``--reserve``)."""
        free = self.total_bytes if self.free_bytes is None else min(self.free_bytes, self.total_bytes)
        return max(0, free - self.reserve_bytes)

    def to_dict(self) -> dict:
        d = {"name": self.name, "total_bytes": self.total_bytes, "bf16": self.bf16,
             "memory_bandwidth_gbs": self.memory_bandwidth_gbs, "source": self.source}
        if self.free_bytes is not None:
            d.update(free_bytes=self.free_bytes, other_process_bytes=self.other_process_bytes,
                     nvml_name=self.nvml_name, driver_version=self.driver_version)
        if self.reserve_bytes:
            d["reserve_bytes"] = self.reserve_bytes
        if self.dense_tflops:
            d.update(dense_tflops=dict(self.dense_tflops), nvlink_gbs=self.nvlink_gbs, pcie_gbs=self.pcie_gbs,
                     throughput_source=self.throughput_source)
        return d


def margin_budget_bytes(gpu: GpuSpec, margin: float) -> int:
    """What every phase must stay under: the card less the safety margin (a fraction of the total),
    less what other processes hold on a live card (``--gpu auto``) and the reserve (``--reserve``)."""
    return int(gpu.total_bytes * (1 - margin)) - (gpu.total_bytes - gpu.usable_bytes)


@lru_cache(maxsize=1)
def _gpu_table() -> tuple[dict, ...]:
    with require(GPUS_FILE).open() as f:
        return tuple(json.load(f)["gpus"])


def _spec_from_entry(e: dict) -> GpuSpec:
    return GpuSpec(name=e["name"], total_bytes=int(e["total_bytes"]), bf16=bool(e.get("bf16", True)),
                   memory_bandwidth_gbs=float(e.get("memory_bandwidth_gbs", 0.0)),
                   compute_capability=str(e.get("compute_capability", "")), fp8=bool(e.get("fp8", False)),
                   source=f"shipped profile ({e.get('total_source', 'profiles/gpus.json')})",
                   dense_tflops=tuple((k, float(v)) for k, v in e.get("dense_tflops", {}).items()),
                   nvlink_gbs=float(e.get("nvlink_gbs", 0.0)), pcie_gbs=float(e.get("pcie_gbs", 0.0)),
                   throughput_source=str(e.get("throughput_source", "")))


def shipped_gpu_names() -> list[str]:
    return [e["name"] for e in _gpu_table()]


# Words that name no card ("NVIDIA GeForce RTX 4090" is the RTX 4090), and words that make a
# different card of a name ("RTX 4060 Ti" is not the RTX 4060; "L40S" is one word, so not here).
# A size is such a word too when the profile's own name carries one (A100-40GB vs A100-80GB,
# RTX-3060-12GB vs the 8 GB card): ``A100`` or ``3060`` alone is asked about, never guessed.
_NOISE_WORDS = frozenset({"nvidia", "geforce", "tesla"})
_VARIANT_WORDS = frozenset({"ti", "super", "ada", "blackwell", "pro", "max", "q", "nvl", "laptop", "mobile"})


def _gpu_words(name: str) -> tuple[str, ...]:
    """Lower-case words of a GPU name, separators and vendor words dropped, sizes as ``<n>gb``."""
    text = re.sub(r"(?<![a-z0-9])(\d+)\s*g(?:b|ib)?\b", r"\1gb", name.strip().lower())
    return tuple(w for w in re.split(r"[^a-z0-9.]+", text) if w and w not in _NOISE_WORDS)


def _gpu_key(name: str) -> str:
    """One key per spelling: ``h100_80gb``, ``H100 80GB`` and ``H100-80G`` all give ``h10080gb``."""
    return "".join(_gpu_words(name)).replace(".", "")


def _entry_names(e: dict) -> list[str]:
    return [e["name"], *e.get("aliases", ()), *e.get("nvml_names", ())]


def _lookup(name: str) -> dict | None:
    """The profile one of whose names or aliases spells ``name`` (case and separators forgiven)."""
    key = _gpu_key(name)
    for e in _gpu_table():
        if key in (_gpu_key(n) for n in _entry_names(e)):
            return e
    return None


def _family_match(words: tuple[str, ...], name: str) -> frozenset | None:
    """The words of ``name`` that ``words`` leave over, or None when some word is not in ``name``.

    A bare number stands for a size (``A100 40`` -> ``a100 40gb``).
    """
    theirs = list(_gpu_words(name))
    for w in words:
        hit = next((t for t in theirs if t == w or (w.isdigit() and t == f"{w}gb")), None)
        if hit is None:
            return None
        theirs.remove(hit)
    return frozenset(theirs)


def _is_size(word: str) -> bool:
    return re.fullmatch(r"\d+gb", word) is not None


def _identifying(extras: frozenset, entry: dict) -> frozenset:
    """The leftover words that make ``entry`` a card of its own: variant words, and sizes when
    the profile's name carries one."""
    sized = any(_is_size(w) for w in _gpu_words(entry["name"]))
    return frozenset(w for w in extras if w in _VARIANT_WORDS or (sized and _is_size(w)))


def _family_members(name: str) -> tuple[list[dict], list[tuple[dict, frozenset]]]:
    """Profiles whose names contain every word of ``name``: those whose other words only say a
    form factor (``A100 40`` -> A100-40GB), and, with the words ``name`` lacks, those that need a
    word identifying a card (``A100`` -> A100-80GB and A100-40GB; ``4060`` -> RTX-4060-Ti-16GB)."""
    words = _gpu_words(name)
    same: list[dict] = []
    others: list[tuple[dict, frozenset]] = []
    if not words:
        return same, others
    for e in _gpu_table():
        missing = [_identifying(x, e) for x in (_family_match(words, n) for n in _entry_names(e)) if x is not None]
        if any(not m for m in missing):
            same.append(e)
        elif missing:
            others.append((e, min(missing, key=len)))
    return same, others


def _closest_gpu_names(name: str, n: int = 3) -> list[str]:
    """Shipped profile names whose spellings are closest to ``name`` (typos)."""
    by_key: dict[str, str] = {}
    for e in _gpu_table():
        for alias in _entry_names(e):
            by_key.setdefault(_gpu_key(alias), e["name"])
    close = difflib.get_close_matches(_gpu_key(name), list(by_key), n=3 * n, cutoff=0.6)
    return list(dict.fromkeys(by_key[k] for k in close))[:n]


def _entry_for(gpu: str) -> dict:
    """The one profile ``gpu`` names: an exact name or alias, else the only family member that
    needs no identifying word ``gpu`` lacks.

    Several candidates -> one error line listing them; one that needs a word -> the profile and
    that word; none -> the closest spellings.
    """
    entry = _lookup(gpu)
    if entry is not None:
        return entry
    same, others = _family_members(gpu)
    if len(same) == 1:
        return same[0]
    shown = gpu.strip()
    candidates = same or [e for e, _ in others]
    if len(candidates) > 1:
        raise UnknownGpuError(f"GPU '{shown}' is ambiguous: it matches "
                              f"{', '.join(e['name'] for e in candidates)}; pass one of them to --gpu")
    if others:
        e, missing = others[0]
        raise UnknownGpuError(f"GPU '{shown}' is not specific enough: the closest shipped profile is {e['name']} "
                              f"({', '.join(sorted(missing))}); pass --gpu {e['name']} if that is your card")
    close = _closest_gpu_names(gpu)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownGpuError(f"unknown GPU '{shown}': {hint}`plan gpus` lists the "
                          f"{len(_gpu_table())} shipped profiles; --gpu auto reads the card itself")


def with_reserve(gpu, reserve_gib: float | None):
    """``gpu`` (a name, ``auto``, a GpuSpec, or one per GPU) with ``reserve_gib`` GiB kept free on every
    card: resolved to GpuSpecs whose usable memory (and so every budget) is that much smaller. A
    reserve of None or 0 leaves ``gpu`` as given. A negative, non-finite or card-sized reserve: one line."""
    if reserve_gib is None or reserve_gib == 0:
        return gpu
    if isinstance(reserve_gib, bool) or not isinstance(reserve_gib, (int, float)) or not math.isfinite(
            reserve_gib) or reserve_gib < 0:
        raise InvalidSetupError(f"--reserve must be a number of GiB >= 0, got {reserve_gib!r}")
    many = isinstance(gpu, (list, tuple))
    cards = [resolve_gpu(g) for g in (gpu if many else (gpu,))]
    reserve = int(round(reserve_gib * GIB))
    for card in cards:
        if reserve >= card.total_bytes:
            raise InvalidSetupError(f"--reserve {reserve_gib:g} GiB is not less than {card.name}'s "
                                    f"{card.total_bytes / GIB:.2f} GiB: nothing would be left to plan")
    out = tuple(replace(c, reserve_bytes=reserve) for c in cards)
    return out if many else out[0]


def resolve_gpu(gpu: str | GpuSpec) -> GpuSpec:
    """``auto`` -> the real card through NVML; a shipped name, alias or unambiguous family name
    (``GH200``, ``h100_80gb``) -> its profile."""
    if isinstance(gpu, GpuSpec):
        return gpu
    if not isinstance(gpu, str) or not gpu.strip():
        raise UnknownGpuError(f"no GPU given: pass --gpu auto or one of {', '.join(shipped_gpu_names()[:6])}, ...")
    if gpu.strip().lower() == "auto":
        return detect_gpu()
    return _spec_from_entry(_entry_for(gpu))


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
