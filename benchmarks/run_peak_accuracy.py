"""The trainer model against whole GRPO-shaped runs on an H100 (benchmarks/gpu_run_peak.py): 16
micro-batches of random completion length (4 optimizer steps x 4 accumulation steps), the cache
emptied once per optimizer step as TRL does around generation, one fresh process per model.

Measured = the largest device-wide used memory after any micro-step (the run's device-level peak).
Predicted = ``trainer_memory`` at the longest completion length, ``completion_lengths="varied"``,
``gradient_accumulation_steps=4``. The run-level reserve fractions (memory/allocator.py) were read off
the six runs of run_peak.jsonl (a fit check); heldout_runs.jsonl holds two runs measured after the
fractions were fixed and their predictions committed (heldout_predictions.txt). The single-step prediction
(``completion_lengths="fixed"``, one accumulation step) is printed beside it to show what a planner
calibrated on isolated steps alone would have missed. The evaluation itself is
``calibration_data.evaluate_runs`` (tests/test_run_peak.py asserts on it).

Run: python benchmarks/run_peak_accuracy.py   (writes benchmarks/results/run_peak_accuracy.txt)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_data import evaluate_runs  # noqa: E402

MIB = 1024**2


def main() -> None:
    res = evaluate_runs()
    lines = [f"{'model':34s} {'w':4s} {'gc':3s} {'B':>2s} {'P':>4s} {'C':>5s} {'run peak MiB':>12s} "
             f"{'predicted':>9s} {'error':>7s} {'one fixed step':>14s} {'error':>7s}"]
    for r, pred, single, measured in res["runs"]:
        lines.append(f"{r['model']:34s} {r['weights']:4s} {'on' if r['grad_ckpt'] else 'off':3s} {r['batch']:2d} "
                     f"{r['prompt_len']:4d} {r['completion_len']:5d} {measured / MIB:12.0f} {pred / MIB:9.0f} "
                     f"{(pred - measured) / measured * 100:+6.1f}% {single / MIB:14.0f} "
                     f"{(single - measured) / measured * 100:+6.1f}%" + ("  held out" if r.get("heldout") else ""))
    lines += ["", "held-out runs: " + ", ".join(f"{e * 100:+.1f}%" for e in res["heldout_errors"]),
              f"{len(res['runs'])} runs of 16 micro-steps: max |error| {res['max_abs_error'] * 100:.2f}%, "
                  f"worst under-prediction {res['worst_under'] * 100:+.2f}% "
                  f"(one fixed step would have been {res['single_step_worst_under'] * 100:+.2f}%)"]
    text = "\n".join(lines)
    print(text)
    (Path(__file__).resolve().parent / "results" / "run_peak_accuracy.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
