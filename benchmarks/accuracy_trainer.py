"""Predicted vs measured device-level trainer peak for every row of the H100 calibration data.

Measured = ``peak_reserved_step_mib + (device_used_mib_after_load - reserved_mib_after_load)``
(data/calibration/README.md). Predicted = ``planner.estimate(...).trainer.peak_bytes`` with the
row's model, weights, mode, rank, optimizer, checkpointing and shape on the H100-80GB profile.
Rows that ran out of memory must be predicted above the card. The evaluation itself is
``calibration_data.evaluate_calibration`` (tests/test_fit_set_accuracy.py asserts on it).

Run: python benchmarks/accuracy_trainer.py   (writes benchmarks/results/accuracy_trainer.txt)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_data import evaluate_calibration  # noqa: E402

MIB = 1024**2


def main() -> None:
    res = evaluate_calibration()
    lines = [f"{'model':34s} {'w':4s} {'mode':4s} {'gc':3s} {'B':>3s} {'P':>4s} {'C':>5s} "
             f"{'measured MiB':>12s} {'predicted MiB':>13s} {'error':>7s}"]
    for r, pred, err in res["ran"]:
        lines.append(f"{r['model']:34s} {r['weights']:4s} {r['mode']:4s} {'on' if r['grad_ckpt'] else 'off':3s} "
                     f"{r['batch']:3d} {r['prompt_len']:4d} {r['completion_len']:5d} "
                     f"{r['measured_peak_bytes'] / MIB:12.0f} {pred / MIB:13.0f} {err * 100:+6.1f}%")
    for r, pred, above in res["oom"]:
        lines.append(f"{r['model']:34s} {r['weights']:4s} {r['mode']:4s} {'on' if r['grad_ckpt'] else 'off':3s} "
                     f"{r['batch']:3d} {r['prompt_len']:4d} {r['completion_len']:5d} "
                     f"{'OOM':>12s} {pred / MIB:13.0f} {'above card' if above else 'BELOW CARD'}")
    lines.append("")
    lines.append(f"rows that ran: {len(res['ran'])}, OOM rows: {len(res['oom'])} "
                 f"(card {res['card_bytes'] / MIB:.0f} MiB)")
    lines.append(f"median |error| {res['median_abs_error'] * 100:.2f}%  max |error| {res['max_abs_error'] * 100:.2f}%  "
                 f"worst under-prediction {res['worst_under'] * 100:+.2f}%  "
                 f"every OOM row above the card: {res['oom_predicted_above_card']}")
    lines.append(f"against device_used_mib_end (the device-level peak; differs only for the first model measured): "
                 f"median |error| {res['device_median_abs_error'] * 100:.2f}%  "
                 f"max |error| {res['device_max_abs_error'] * 100:.2f}%  "
                 f"worst under-prediction {res['device_worst_under'] * 100:+.2f}%")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "accuracy_trainer.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
