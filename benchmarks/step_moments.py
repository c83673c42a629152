"""The moments of one training step (issue 23), for one example, as the planner models them.

The example is the issue's: full fine-tuning of Qwen/Qwen3-1.7B in fp32 with ``optim="adamw_torch"`` (torch's
foreach AdamW), one micro-batch of 256 + 512 tokens, gradient checkpointing, TRL 1.16's fused log-prob head,
GRPO's varied completion lengths. Each moment is the resident terms (non-PyTorch memory, cuBLAS workspace,
weights, optimizer state), the tensors alive at that moment, and the caching allocator's reserve then
(planner/memory/trainer.py: MOMENTS, MOMENT_RESERVE); the device-level peak is the largest moment. The file
also gives, for the same setup, the optimizer step's moment for every optimizer the planner accepts, and what
the peak was when the step's temporaries were added on top of the backward's peak (the planner before issue 23).

    python benchmarks/step_moments.py      # prints the diagram, writes benchmarks/results/step_moments.txt

CPU only, the planner only, well under a second. README's "Moments of one step" is generated from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.memory.optimizer import OPTIMIZERS, step_implementation  # noqa: E402
from planner.memory.trainer import MOMENT_RESERVE, TrainerSetup, trainer_memory  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402
from planner.specs.units import GIB  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "step_moments.txt"
MODEL = "Qwen/Qwen3-1.7B"
SETUP = dict(weights="fp32", finetune="full", batch_size=1, prompt_length=256, completion_length=512)
RESIDENT = ("non_torch", "cublas_workspace", "weights", "adapters", "optimizer_state", "rollout_buffers")
WIDTH = 60  # characters of the largest moment's bar
BEGIN, END = "--- diagram ---", "--- end diagram ---"


def bar(parts: dict, scale: float) -> str:
    """One moment as a bar: ``#`` the resident terms, ``=`` the moment's tensors, ``.`` the allocator's reserve."""
    resident = sum(parts[k] for k in RESIDENT)
    reserve = parts["allocator_reserve"]
    tensors = sum(parts.values()) - resident - reserve
    cells = [round(resident * scale), round(tensors * scale), round(reserve * scale)]
    return "#" * cells[0] + "=" * cells[1] + "." * cells[2]


def diagram(t) -> list[str]:
    scale = WIDTH / t.peak_bytes
    lines = []
    for name, parts in t.moment_components.items():
        total = sum(parts.values())
        mark = "  <- peak" if name == t.binding_moment else ""
        lines.append(f"{name:<15}|{bar(parts, scale):<{WIDTH}}| {total / GIB:6.2f} GiB{mark}")
    lines.append(f"{'':<15} # resident (weights, Adam states, CUDA context)  = tensors of the moment  "
                 f". allocator reserve")
    return lines


def contents(t) -> list[str]:
    """What each moment holds above the resident terms, GiB."""
    out = []
    for name, parts in t.moment_components.items():
        held = ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items() if v and k not in RESIDENT)
        out.append(f"  {name:<15} {held}  (reserve: {MOMENT_RESERVE[name]})")
    return out


def optimizer_table(spec) -> list[str]:
    out = [f"  {'optim':<20} {'step runs as':<13} {'temporaries':>11} {'step moment':>11} {'peak':>9} "
           f"{'binding':<15} {'stacked (before)':>16}"]
    for optim in OPTIMIZERS:
        t = trainer_memory(spec, TrainerSetup(**SETUP, optim=optim))
        step = t.moment("optimizer_step")
        # the planner before issue 23: the step's temporaries on top of the backward's peak
        stacked = max(max(t.moments["logprob_head"], t.moments["backward"]) + step["optimizer_step"],
                      t.moments["forward"])
        out.append(f"  {optim:<20} {step_implementation(optim):<13} {step['optimizer_step'] / GIB:>7.2f} GiB "
                   f"{t.moments['optimizer_step'] / GIB:>7.2f} GiB {t.peak_bytes / GIB:>5.2f} GiB "
                   f"{t.binding_moment:<15} {stacked / GIB:>12.2f} GiB")
    return out


def main() -> None:
    spec = resolve_model(MODEL)
    t = trainer_memory(spec, TrainerSetup(**SETUP, optim="adamw_torch"))
    stacked = max(t.moments["logprob_head"], t.moments["backward"]) + t.moment("optimizer_step")["optimizer_step"]
    lines = [f"{MODEL}, full fine-tuning, fp32 weights, adamw_torch (foreach), batch 1 x (256 + 512) tokens, "
             f"checkpointing, fused log-prob head, varied completion lengths",
             f"peak {t.peak_bytes / GIB:.2f} GiB at the {t.binding_moment} moment (the largest of "
             f"{len(t.moments)} moments; with the step's temporaries on top of the backward's peak, as before "
             f"issue 23: {max(stacked, t.moments['forward']) / GIB:.2f} GiB)", "", BEGIN, *diagram(t), END, "", "what each moment holds above the "
             "resident terms (GiB):", *contents(t), "",
             "the optimizer step's moment per optimizer (same setup; 'stacked': the peak with the step's "
             "temporaries added on top of the backward's, as before issue 23):", *optimizer_table(spec)]
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
