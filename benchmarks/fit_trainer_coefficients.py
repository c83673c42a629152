"""Fit the trainer model's few free coefficients on the measured H100 rows and print them.

The per-layer saved bytes are derived (planner/memory/activations.py); what is fitted here:
1. the backward working set per token, ``a_h * h + a_I * I`` (least squares over the LoRA rows
   with gradient checkpointing and >= 4096 tokens, on the residual after the derived terms);
2. the allocator reserve as a fraction of the step's transient bytes (median ratio), with and
   without gradient checkpointing.
Run: python benchmarks/fit_trainer_coefficients.py
The same fits with one model family left out, and their held-out errors: benchmarks/heldout_fits.py.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_data import load_rows, measured_setup  # noqa: E402

from planner.memory import activations as act  # noqa: E402
from planner.memory.fit import least_squares  # noqa: E402
from planner.memory.trainer import above_resident, trainer_memory  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402


def backward_points(rows: list[dict]) -> tuple[list[tuple[int, int]], list[float]]:
    """The backward working set's fit points: per LoRA row with checkpointing and >= 4096 tokens,
    (hidden size, MLP width per token) and the measured activation bytes per token less the derived terms."""
    xs, ys = [], []
    for r in rows:
        if r["mode"] != "lora" or not r["grad_ckpt"]:
            continue
        spec = resolve_model(r["model"])
        T = r["batch"] * (r["prompt_len"] + r["completion_len"])
        if T < 4096:
            continue
        derived = act.checkpoint_bytes_per_token(spec) + act.layer_saved_bytes_per_token(spec, "lora", r["rank"])
        xs.append((spec.hidden_size, act.mlp_width_per_token(spec)))
        ys.append(r["measured_activation_bytes"] / T - derived)
    return xs, ys


def main() -> None:
    rows = [r for r in load_rows() if r["ok"]]
    xs, ys = backward_points(rows)
    # 2-parameter least squares without intercept: solve the normal equations by hand
    shh = sum(h * h for h, _ in xs); sii = sum(i * i for _, i in xs); shi = sum(h * i for h, i in xs)
    shy = sum(h * y for (h, _), y in zip(xs, ys)); siy = sum(i * y for (_, i), y in zip(xs, ys))
    det = shh * sii - shi * shi
    a_h = (shy * sii - siy * shi) / det
    a_i = (siy * shh - shy * shi) / det
    print(f"backward working set: a_h = {a_h:.2f} B/token/hidden, a_I = {a_i:.2f} B/token/intermediate"
          f"  ({len(ys)} rows)")
    # reserve = base + fraction * (the step's transient bytes as the model predicts them)
    for ckpt in (True, False):
        pts = []
        for r in rows:
            if r["grad_ckpt"] != ckpt or r["mode"] != "lora":
                continue
            t = trainer_memory(resolve_model(r["model"]), measured_setup(r))
            layers, head = (above_resident(t.moment(m)) for m in ("backward", "logprob_head"))
            # the layers' activations plus what the head's moment holds above the layers' peak
            transient = (t.moment("backward")["activations"] + max(0, head - layers)
                         - (saved_bytes(r, ckpt) if ckpt else 0))
            pts.append((transient, r["measured_reserve_bytes"]))
        slope, base = least_squares([x for x, _ in pts], [y for _, y in pts])
        print(f"reserve, checkpointing={ckpt}: base {base / 2**20:.0f} MiB + {slope:.3f} x transient "
              f"({len(pts)} rows)")

    print(safety_first_reserve(rows))


def safety_first_reserve(rows) -> str:
    """The reserve coefficients the planner ships: the (intercept, fraction with / without
    checkpointing, fraction for full fine-tuning with checkpointing) that minimise the largest
    |error| over all rows subject to no row being under-predicted by more than 3% (a grid search on
    the device-level peak of one fixed-shape step, the data's protocol)."""
    import planner.memory.allocator as al

    data = []
    for r in rows:
        c = trainer_memory(resolve_model(r["model"]), measured_setup(r)).components
        full_gc = r["grad_ckpt"] and r["mode"] == "full"
        used = (al.RESERVE_FRACTION_CHECKPOINTED_FULL if full_gc else al.RESERVE_FRACTION_CHECKPOINTED
                if r["grad_ckpt"] else al.RESERVE_FRACTION_NOT_CHECKPOINTED)
        recycled = (c["allocator_reserve"] - al.RESERVE_BASE_BYTES) / used
        kind = "full_gc" if full_gc else "gc" if r["grad_ckpt"] else "none"
        data.append((r, sum(c.values()) - c["allocator_reserve"], recycled, kind))
    best = None
    for base_mib in range(200, 461, 2):
        for fg in (0.14, 0.16, 0.18, 0.20, 0.22, 0.24, 0.26):
            for fn in (0.0, 0.01, 0.02, 0.03):
                for ff in (0.26, 0.28, 0.30, 0.32, 0.34):
                    frac = {"gc": fg, "none": fn, "full_gc": ff}
                    errs = [(rest + base_mib * 2**20 + frac[k] * rec - r["measured_peak_bytes"])
                            / r["measured_peak_bytes"] for r, rest, rec, k in data]
                    if min(errs) < -0.03:
                        continue
                    key = (max(abs(e) for e in errs), statistics.median(abs(e) for e in errs))
                    if best is None or key < best[0]:
                        best = (key, base_mib, fg, fn, ff)
    (mx, med), base_mib, fg, fn, ff = best
    return (f"safety-first reserve: intercept {base_mib} MiB, fraction {fg} (checkpointing) / {fn} (none) / "
            f"{ff} (full fine-tuning, checkpointing): max |error| {mx:.3f}, median {med:.4f}")


def saved_bytes(r: dict, ckpt: bool) -> int:
    spec = resolve_model(r["model"])
    T = r["batch"] * (r["prompt_len"] + r["completion_len"])
    return int(T * act.saved_bytes_per_token(spec, "lora", r["rank"], ckpt))


if __name__ == "__main__":
    main()
