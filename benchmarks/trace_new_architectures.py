"""The planner's trainer-side terms on the new architectures against a CPU trace of the real
transformers code (MoE on both routing paths' shared code, MLA, gated delta-net hybrids, sliding
window with sinks, a vision-language checkpoint).

Meta tensors cannot route experts, so each architecture runs on real tensors on the CPU
(``trace_steps(..., device="cpu")``) at a shrunken config of the same model type and layer structure
(planner/profiler/shrink.py), and the planner's analytic terms are evaluated on a ModelSpec of that
same config. Compared per architecture: the base weights and LoRA adapter bytes (exact parameter
bytes of the built model, LoRA as the plan hands it to PEFT: "all-linear"); per shape and checkpointing
setting, the step's activation peak above the resident bytes (planner: activations + log-prob head +
gradients at the peak) and the decoder layers' backward peak (after the log-prob head's backward;
planner: activations + gradients).
Run: python benchmarks/trace_new_architectures.py  (writes benchmarks/results/trace_new_architectures.txt)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.memory.lora import adapter_bytes  # noqa: E402
from planner.memory.trainer import TrainerSetup, above_resident, trainer_memory  # noqa: E402
from planner.memory.weights import weights_bytes  # noqa: E402
from planner.profiler.shrink import SHRINKABLE, shrunken_spec  # noqa: E402
from planner.profiler.trace import Shape, trace_steps  # noqa: E402

MIB = 1024**2
SHAPES = (Shape(2, 64, 192), Shape(4, 64, 448))
RANK = 16


def planner_bytes(spec, shape: Shape, gc: bool) -> tuple[int, int]:
    """(activation peak, layers' backward peak) as the planner predicts them."""
    t = trainer_memory(spec, TrainerSetup(lora_rank=RANK, batch_size=shape.batch_size,
                                          prompt_length=shape.prompt_length,
                                          completion_length=shape.completion_length,
                                          gradient_checkpointing=gc))
    layers = above_resident(t.moment("backward"))
    return max(layers, above_resident(t.moment("logprob_head"))), layers


def main() -> None:
    lines = ["LoRA r=16 on 'all-linear', bf16, TRL fused head, CPU trace on real tensors (shrunken configs)", ""]
    rows = [f"{'architecture':34s} {'B':>2s} {'P':>3s} {'C':>4s} {'gc':>3s} {'trace MiB':>9s} {'plan MiB':>9s} "
            f"{'error':>7s}   {'layers trace':>12s} {'plan':>7s} {'error':>7s}"]
    errors, layer_errors, sizes = [], [], []
    for model_id in SHRINKABLE:
        spec = shrunken_spec(model_id)
        t0 = time.perf_counter()
        result = trace_steps(spec, SHAPES, lora_rank=RANK, gradient_checkpointing=(True, False), device="cpu")
        p = result.parameter_bytes
        w, a = weights_bytes(spec, "bf16"), adapter_bytes(spec, RANK)
        werr, aerr = (w - p["weights"]) / p["weights"] * 100, (a - p["adapters"]) / p["adapters"] * 100
        sizes.append(f"{model_id:34s} weights trace {p['weights']:>11,d} plan {w:>11,d} ({werr:+.2f}%)"
                     f"   adapters trace {p['adapters']:>10,d} plan {a:>10,d} ({aerr:+.2f}%)")
        for step in result.steps:
            peak, layers = planner_bytes(spec, step.shape, step.gradient_checkpointing)
            err = (peak - step.activation_peak_bytes) / step.activation_peak_bytes
            lerr = (layers - step.layers_peak_bytes) / step.layers_peak_bytes
            errors.append(err)
            layer_errors.append(lerr)
            s = step.shape
            rows.append(f"{model_id:34s} {s.batch_size:2d} {s.prompt_length:3d} {s.completion_length:4d} "
                        f"{'on' if step.gradient_checkpointing else 'off':>3s} {step.activation_peak_bytes / MIB:9.2f} "
                        f"{peak / MIB:9.2f} {err * 100:+6.1f}%   {step.layers_peak_bytes / MIB:12.2f} "
                        f"{layers / MIB:7.2f} {lerr * 100:+6.1f}%")
        print(f"{model_id}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    lines += sizes + [""] + rows
    lines.append(f"\n{len(errors)} steps: activation peak median |error| "
                 f"{statistics.median(abs(e) for e in errors) * 100:.1f}%, max {max(abs(e) for e in errors) * 100:.1f}%, "
                 f"worst under {min(errors) * 100:+.1f}%; layers' backward peak median |error| "
                 f"{statistics.median(abs(e) for e in layer_errors) * 100:.1f}%, max "
                 f"{max(abs(e) for e in layer_errors) * 100:.1f}%, worst under {min(layer_errors) * 100:+.1f}%")
    lines.append("Not traced: flash-linear-attention / causal-conv1d kernels (Qwen3-Next is traced on transformers' "
                 "torch path), Triton MoE and MXFP4 kernels (gpt-oss's experts traced dequantised to bf16, as TRL "
                 "trains them), flash-attention kernels with sinks (gpt-oss traced on eager attention, transformers' "
                 "default for it), images through the vision tower (text-only steps), full fine-tuning.")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "trace_new_architectures.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
