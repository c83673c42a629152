"""Unsloth's memory in use before vLLM (planner/runtimes/unsloth.py PRE_VLLM_USED_BYTES), re-derived and scored.

What is on the card when load_vllm reads torch.cuda.mem_get_info() (unsloth_zoo 2025.5.8 vllm_utils.py:851-852:
``free_memory = gpu_memory_utilization * free_memory``; :903 ``actual_gpu_memory_utilization = free_memory /
total_memory``, the figure Unsloth prints): with ``fast_inference=True`` unsloth 2025.5.7's
``FastLlamaModel.from_pretrained`` calls ``load_vllm`` (models/llama.py:1826) before any weight is on the card;
what came before is the process's CUDA context, created at import (unsloth/kernels/utils.py:88-91 reads each
device's current stream, no tensor allocated) and by ``torch.cuda.get_device_properties`` (llama.py:1676). So the
figure is the CUDA context of the card and driver, nothing of Unsloth's.

Each run's own figure follows from its printed utilisation: the planner's prediction is linear in the free
memory, so ``free_own = free_shipped x printed / predicted`` (runs whose prediction is capped are left out). The
shipped 256 MiB was read off these runs' utilisations; this script scores vLLM's KV cache (a different
observable) three ways: with 256 MiB, with each run's own figure, and leave-one-run-out with the median of the
other runs' own figures (a constant that never saw the run it scores).

Run: python benchmarks/unsloth_pre_vllm.py   (writes benchmarks/results/unsloth_pre_vllm.txt)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unsloth_reports import DATA, predict  # noqa: E402

from planner.runtimes.unsloth import PRE_VLLM_USED_BYTES  # noqa: E402
from planner.specs.gpu import resolve_gpu  # noqa: E402
from planner.specs.units import GIB, MIB  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "unsloth_pre_vllm.txt"
KV_TARGET = 0.10  # the KV-cache target of benchmarks/unsloth_reports.py


def with_free(rec: dict, free_bytes: int):
    """The record's estimate with ``free_bytes`` free when load_vllm runs (unsloth_reports.predict's arguments)."""
    import unsloth_reports as ur

    real = ur.unsloth_estimate
    ur.unsloth_estimate = lambda *a, **kw: real(*a, **kw, free_bytes=free_bytes)
    try:
        return predict(rec)[0]
    finally:
        ur.unsloth_estimate = real


def runs() -> list[dict]:
    """Per record with a printed utilisation: its own pre-vLLM usage and, where vLLM is modelled and a KV cache
    reported, the KV errors at 256 MiB and at its own figure."""
    out = []
    for line in DATA.read_text().splitlines():
        rec = json.loads(line)
        est, _ = predict(rec)
        if est is None or rec["actual_gpu_utilization"] is None or "capped" in est.utilization_reason:
            continue
        from unsloth_reports import GPUS

        card = resolve_gpu(GPUS[rec["gpu"]])
        free = card.usable_bytes - PRE_VLLM_USED_BYTES
        own_free = int(free * rec["actual_gpu_utilization"] / est.vllm_gpu_memory_utilization)
        row = {"rec": rec, "card": card.name, "own_used": card.usable_bytes - own_free, "usable": card.usable_bytes,
               "kv_reported": (rec.get("extra") or {}).get("vllm_kv_cache_gib") if est.capacity is not None else None}
        if row["kv_reported"]:
            row["kv_shipped"] = est.kv_cache_bytes / GIB / row["kv_reported"] - 1
            row["kv_own"] = with_free(rec, own_free).kv_cache_bytes / GIB / row["kv_reported"] - 1
        out.append(row)
    for r in out:  # leave one run out: the median of the other runs' own figures
        others = [o["own_used"] for o in out if o is not r]
        r["loo_used"] = int(statistics.median(others))
        if r["kv_reported"]:
            est = with_free(r["rec"], r["usable"] - r["loo_used"])
            r["kv_loo"] = est.kv_cache_bytes / GIB / r["kv_reported"] - 1
    return out


def main() -> None:
    rows = runs()
    lines = [f"{'record':58s} {'card':10s} {'own MiB':>8s} {'KV @256':>8s} {'KV @own':>8s} {'LOO MiB':>8s} {'KV @LOO':>8s}"]
    for r in rows:
        kv = (f"{r['kv_shipped']:+8.1%} {r['kv_own']:+8.1%}" if r["kv_reported"] else f"{'-':>8s} {'-':>8s}")
        kvl = f"{r['kv_loo']:+8.1%}" if r["kv_reported"] else f"{'-':>8s}"
        lines.append(f"{r['rec']['model'][:58]:58s} {r['card']:10s} {r['own_used'] / MIB:8.0f} {kv} "
                     f"{r['loo_used'] / MIB:8.0f} {kvl}")
    kv_rows = [r for r in rows if r["kv_reported"]]
    med = statistics.median(r["own_used"] for r in rows)
    lines += ["",
              f"own pre-vLLM usage from the printed utilisation: {len(rows)} runs, "
              + ", ".join(f"{r['card']} {r['own_used'] / MIB:.0f}" for r in rows) + " MiB; median "
              f"{med / MIB:.0f} MiB (shipped: {PRE_VLLM_USED_BYTES / MIB:.0f} MiB, read off the same runs)",
              f"vLLM KV cache, {len(kv_rows)} runs: at the shipped figure max |error| "
              f"{max(abs(r['kv_shipped']) for r in kv_rows):.1%}; at each run's own figure max |error| "
              f"{max(abs(r['kv_own']) for r in kv_rows):.1%}; leave-one-run-out median max |error| "
              f"{max(abs(r['kv_loo']) for r in kv_rows):.1%} (target {KV_TARGET:.0%})",
              "beyond the target at the run's own figure (a KV-model miss the shipped figure hid): "
              + (", ".join(f"{r['rec']['model']} on {r['card']} {r['kv_own']:+.1%}" for r in kv_rows
                           if abs(r["kv_own"]) > KV_TARGET) or "none")]
    text = "\n".join(lines)
    print(text)
    OUT.write_text(text + "\n")


if __name__ == "__main__":
    main()
