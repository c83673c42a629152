"""The trainer model on held-out H100 measurements: models, ranks, shapes and an allocator setting
that data/calibration does not have (benchmarks/gpu_heldout.sh, each model in a fresh process,
torch 2.11.0+cu130, transformers 5.17.0, peft 0.21.0, TRL 1.16.0, bitsandbytes 0.50.2).

Measured = ``device_used_mib_end``: device-wide used memory right after the step, i.e. the
process's device-level peak (the reserved pool does not shrink and non-PyTorch memory only grows).
In a fresh process this differs from the calibration README's formula (reserved peak + non-PyTorch
memory *after load*): CUDA loads kernels lazily during the first step, so non-PyTorch memory grows
from 619 MiB after load to 767-771 MiB after it. Both are printed. Predicted = the analytic model
(``trainer_memory``, no calibration profile) with the row's setup and allocator setting. The evaluation
itself is ``calibration_data.evaluate_heldout`` (tests/test_heldout_accuracy.py asserts on it).

Run: python benchmarks/heldout_accuracy.py   (writes benchmarks/results/heldout_accuracy.txt)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_data import evaluate_heldout  # noqa: E402

MIB = 1024**2


def main() -> None:
    res = evaluate_heldout()
    lines = [f"{'model':34s} {'w':4s} {'mode':4s} {'r':>3s} {'alloc':5s} {'gc':3s} {'B':>2s} {'P':>4s} {'C':>4s} "
             f"{'device MiB':>10s} {'predicted':>9s} {'error':>7s} {'README fig.':>11s}"]
    for r, pred, err, err_readme in res["ran"]:
        lines.append(f"{r['model']:34s} {r['weights']:4s} {r['mode']:4s} {r['rank'] or '-':>3} "
                     f"{'exp' if r.get('expandable_segments') else 'def':5s} {'on' if r['grad_ckpt'] else 'off':3s} "
                     f"{r['batch']:2d} {r['prompt_len']:4d} {r['completion_len']:4d} "
                     f"{r['device_used_mib_end']:10.0f} {pred / MIB:9.0f} {err * 100:+6.1f}% {err_readme * 100:+10.1f}%"
                     + ("  (first step)" if r["first_step"] else ""))
    for r, pred, above in res["oom"]:
        lines.append(f"{r['model']:34s} {r['weights']:4s} {r['mode']:4s} {r['rank'] or '-':>3} "
                     f"{'exp' if r.get('expandable_segments') else 'def':5s} {'on' if r['grad_ckpt'] else 'off':3s} "
                     f"{r['batch']:2d} {r['prompt_len']:4d} {r['completion_len']:4d} "
                     f"{'OOM':>10s} {pred / MIB:9.0f} {'above card' if above else 'BELOW CARD'}")
    lines += ["", f"rows that ran: {len(res['ran'])}, OOM rows: {len(res['oom'])} (card {res['card_bytes'] / MIB:.0f} MiB)",
              f"vs device-level peak: median |error| {res['median_abs_error'] * 100:.2f}%  "
              f"max |error| {res['max_abs_error'] * 100:.2f}%  worst under-prediction {res['worst_under'] * 100:+.2f}%  "
              f"every OOM row above the card: {res['oom_predicted_above_card']}",
              f"max |error| without each model's first step: {res['max_abs_error_after_first_step'] * 100:.2f}%",
              f"vs the README formula: median |error| {res['readme_median_abs_error'] * 100:.2f}%  "
              f"max |error| {res['readme_max_abs_error'] * 100:.2f}%"]
    text = "\n".join(lines)
    print(text)
    (Path(__file__).resolve().parent / "results" / "heldout_accuracy.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
