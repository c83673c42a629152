"""Unsloth's memory in use before vLLM (planner/runtimes/unsloth.py pre_vllm_used_bytes), derived and scored.

What is on the card when load_vllm reads torch.cuda.mem_get_info() (unsloth_zoo 2025.5.8 vllm_utils.py:851-852:
``free_memory = gpu_memory_utilization * free_memory``; :903 ``actual_gpu_memory_utilization = free_memory /
total_memory``, the figure Unsloth prints): with ``fast_inference=True`` unsloth 2025.5.7's
``FastLlamaModel.from_pretrained`` calls ``load_vllm`` (models/llama.py:1826) before any weight is on the card;
what came before is the process's CUDA context. So the figure is the CUDA context of the card and driver.

Each run's own figure follows from its printed utilisation: the planner's prediction is linear in the free
memory, so ``free_own = free_model x printed / predicted`` (runs whose prediction is capped are left out).
The model (runtimes/unsloth.py): fixed + bytes per thread x resident threads (SMs x threads per SM), least
squares on the 8 runs' own figures (the fit set, decided before fitting); held out: leave one run out (refit on
the other 7, score the eighth), and two checks outside the fit: the H100 calibration env row's bare context
(data/calibration/h100-trl1.16-train.jsonl, ``used_mib_at_init``) and record 10 (A100-40GB, "88." printed;
benchmarks/unsloth_reports.py). vLLM's KV cache (a different observable) is scored at the model's figure,
at each run's own figure and at the leave-one-run-out figure.

Run: python benchmarks/unsloth_pre_vllm.py   (writes benchmarks/results/unsloth_pre_vllm.txt)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unsloth_reports import DATA, predict  # noqa: E402

from planner.runtimes.unsloth import (  # noqa: E402
    CUDA_CONTEXT_BYTES_PER_THREAD,
    CUDA_CONTEXT_FIXED_BYTES,
    pre_vllm_used_bytes,
    resident_threads,
)
from planner.memory.fit import least_squares  # noqa: E402
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


H100_ENV = Path(__file__).resolve().parents[1] / "data" / "calibration" / "h100-trl1.16-train.jsonl"


def fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least squares ``used = fixed + per_thread x threads`` over ``(threads, used bytes)``."""
    slope, intercept = least_squares([x for x, _ in points], [y for _, y in points])
    return intercept, slope


def runs() -> list[dict]:
    """Per record with a printed utilisation: its own pre-vLLM usage, the model's and the leave-one-run-out
    figure, and, where vLLM is modelled and a KV cache reported, the KV errors at each."""
    from unsloth_reports import GPUS

    out = []
    for line in DATA.read_text().splitlines():
        rec = json.loads(line)
        est, _ = predict(rec)
        if est is None or rec["actual_gpu_utilization"] is None or "capped" in est.utilization_reason:
            continue
        card = resolve_gpu(GPUS[rec["gpu"]])
        free = card.usable_bytes - pre_vllm_used_bytes(card)
        own_free = int(free * rec["actual_gpu_utilization"] / est.vllm_gpu_memory_utilization)
        row = {"rec": rec, "card": card.name, "own_used": card.usable_bytes - own_free, "usable": card.usable_bytes,
               "threads": resident_threads(card), "model_used": pre_vllm_used_bytes(card),
               "kv_reported": (rec.get("extra") or {}).get("vllm_kv_cache_gib") if est.capacity is not None else None}
        if row["kv_reported"]:
            row["kv_model"] = est.kv_cache_bytes / GIB / row["kv_reported"] - 1
            row["kv_own"] = with_free(rec, own_free).kv_cache_bytes / GIB / row["kv_reported"] - 1
        out.append(row)
    for r in out:  # leave one run out: refit on the other runs' own figures
        a, b = fit([(o["threads"], o["own_used"]) for o in out if o is not r])
        r["loo_used"] = int(a + b * r["threads"])
        if r["kv_reported"]:
            est = with_free(r["rec"], r["usable"] - r["loo_used"])
            r["kv_loo"] = est.kv_cache_bytes / GIB / r["kv_reported"] - 1
    return out


def h100_context() -> tuple[float, int]:
    """(measured bare CUDA context of the H100 calibration env row, the model's figure), bytes."""
    env = json.loads(H100_ENV.read_text().splitlines()[0])
    return env["used_mib_at_init"] * MIB, pre_vllm_used_bytes(resolve_gpu("H100-80GB"))


def main() -> None:
    rows = runs()
    lines = [f"{'record':52s} {'card':10s} {'own MiB':>7s} {'model':>6s} {'LOO':>6s} {'KV @model':>9s} "
             f"{'KV @own':>8s} {'KV @LOO':>8s}"]
    for r in rows:
        kv = (f"{r['kv_model']:+9.1%} {r['kv_own']:+8.1%} {r['kv_loo']:+8.1%}" if r["kv_reported"]
              else f"{'-':>9s} {'-':>8s} {'-':>8s}")
        lines.append(f"{r['rec']['model'][:52]:52s} {r['card']:10s} {r['own_used'] / MIB:7.0f} "
                     f"{r['model_used'] / MIB:6.0f} {r['loo_used'] / MIB:6.0f} {kv}")
    kv_rows = [r for r in rows if r["kv_reported"]]
    a, b = fit([(r["threads"], r["own_used"]) for r in rows])
    fit_err = [abs(r["model_used"] - r["own_used"]) / MIB for r in rows]
    loo_err = [abs(r["loo_used"] - r["own_used"]) / MIB for r in rows]
    h_meas, h_model = h100_context()
    lines += ["",
              f"fit (all {len(rows)} runs, least squares on resident threads): {a / MIB:.1f} MiB + "
              f"{b:.0f} B per thread (shipped: {CUDA_CONTEXT_FIXED_BYTES / MIB:.1f} MiB + "
              f"{CUDA_CONTEXT_BYTES_PER_THREAD} B)",
              f"pre-vLLM usage |error| vs each run's own figure: fit set max {max(fit_err):.0f} MiB, median "
              f"{statistics.median(fit_err):.0f}; leave-one-run-out (held out) max {max(loo_err):.0f} MiB, median "
              f"{statistics.median(loo_err):.0f}",
              f"independent check, H100 calibration env row: bare context {h_meas / MIB:.0f} MiB measured, "
              f"{h_model / MIB:.0f} MiB modelled ({h_model / h_meas - 1:+.1%})",
              f"vLLM KV cache, {len(kv_rows)} runs: at the model's figure max |error| "
              f"{max(abs(r['kv_model']) for r in kv_rows):.1%}; at each run's own figure "
              f"{max(abs(r['kv_own']) for r in kv_rows):.1%}; leave-one-run-out "
              f"{max(abs(r['kv_loo']) for r in kv_rows):.1%} (target {KV_TARGET:.0%})",
              "beyond the target at the run's own figure: "
              + (", ".join(f"{r['rec']['model']} on {r['card']} {r['kv_own']:+.1%}" for r in kv_rows
                           if abs(r["kv_own"]) > KV_TARGET) or "none")]
    text = "\n".join(lines)
    print(text)
    OUT.write_text(text + "\n")


if __name__ == "__main__":
    main()
