"""torch.optim.AdamW's step temporaries, traced on the CPU, against planner.memory.optimizer (issue 23).

One AdamW step over a set of fp32 parameters shaped like a shrunken decoder (per layer: q/k/v/o and
gate/up/down matrices and two norms, plus an embedding, the largest tensor), run three ways with torch's own
switches: ``foreach=True`` (what ``optim="adamw_torch"`` gets on CUDA), ``foreach=False`` (the for-loop),
``fused=True`` (``adamw_torch_fused``). The second step is traced (the first creates the states lazily) with
planner/profiler/trace.py's live-storage tracker (every storage rounded to the caching allocator's 512-byte
block); the figure is the step's peak above what was alive before it: the step's temporaries. The planner's
figure is ``optimizer_step_transient_bytes`` for the same tensors (block-rounded the same way). bitsandbytes'
optimizers need a GPU and are not traced here (their update kernels work in place: planner/memory/optimizer.py).

    python benchmarks/optimizer_step_trace.py     # writes benchmarks/results/optimizer_step_trace.txt

Needs torch (the train extras); a few seconds on the CPU.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.memory.optimizer import optimizer_step_transient_bytes  # noqa: E402
from planner.profiler.allocator_sim import round_size  # noqa: E402
from planner.profiler.trace import _make_tracker  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "optimizer_step_trace.txt"
HIDDEN, INTERMEDIATE, KV, VOCAB, LAYERS = 256, 768, 128, 8192, 4
KIB = 1024

# (optim name the planner knows, torch.optim.AdamW keyword arguments)
VARIANTS = (("adamw_torch", dict(foreach=True)), ("adamw_torch_forloop", dict(foreach=False)),
            ("adamw_torch_fused", dict(fused=True)))


def shapes() -> list[tuple[int, ...]]:
    per_layer = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN),
                 (INTERMEDIATE, HIDDEN), (INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE), (HIDDEN,), (HIDDEN,)]
    return [(VOCAB, HIDDEN)] + per_layer * LAYERS + [(HIDDEN,)]


def traced_step_bytes(kwargs: dict) -> int:
    """The live bytes the second AdamW step allocates above what was alive before it."""
    import torch

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-3, **kwargs)
    opt.step()  # creates exp_avg / exp_avg_sq (zeros_like, lazily)
    tracker = _make_tracker(None)
    # what exists before the step (parameters, gradients, states): in-place ops return these, not new storage
    for p in params:
        tracker.track(p)
        tracker.track(p.grad)
        for v in opt.state[p].values():
            tracker.track(v)
    with tracker:
        before = tracker.current_bytes
        opt.step()
    return tracker.peak_bytes - before


def planned_bytes(optim: str) -> int:
    """The planner's step temporaries for these tensors, each temporary block-rounded as traced."""
    numels = [int(math.prod(s)) for s in shapes()]
    largest = max(numels)
    raw = optimizer_step_transient_bytes(sum(numels), optim, 4, largest)
    if optim == "adamw_torch":  # one temporary per tensor
        return sum(round_size(n * 4) for n in numels)
    if optim == "adamw_torch_forloop":  # two of the largest
        return 2 * round_size(largest * 4) if raw else 0
    return raw


def main() -> None:
    import torch

    n = sum(int(math.prod(s)) for s in shapes())
    lines = [f"torch {torch.__version__.split('+')[0]}, CPU; {len(shapes())} fp32 parameters, {n:,} elements "
             f"({n * 4 / KIB:,.0f} KiB), the largest {VOCAB} x {HIDDEN}; the second step's peak above its start",
             f"  {'optim':<20} {'torch.optim.AdamW':<17} {'traced KiB':>11} {'planner KiB':>12} {'error':>7}"]
    for optim, kwargs in VARIANTS:
        traced, planned = traced_step_bytes(kwargs), planned_bytes(optim)
        err = f"{(planned - traced) / traced:+.1%}" if traced else ("0" if planned == 0 else "n/a")
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        lines.append(f"  {optim:<20} {args:<17} {traced / KIB:>11,.1f} {planned / KIB:>12,.1f} {err:>7}")
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
