"""The host-side overhead of transformers' eager ``generate`` per decode step: per decoder layer and per step.

Without vLLM (``use_vllm=False``) TRL decodes with transformers' ``generate`` in eager mode: every token
step runs the model's Python forward, one PyTorch op after the other. For the small batches and models of
GRPO runs the GPU waits on the host (each op's dispatch and kernel launch) rather than on its memory.
This script measures the host side on the CPU: a randomly initialised, tiny Qwen2 (hidden 64, so the
arithmetic is negligible) generates ``NEW_TOKENS`` tokens greedily for one sequence at several depths; the
seconds per step against the number of layers is a line whose slope is the per-layer cost and whose
intercept the per-step cost (the generation loop: logits processors, stopping criteria, the cache's
bookkeeping, the embedding and the head).

What it is and is not: a measurement of PyTorch's eager dispatch on this machine's CPU with CPU kernels; on
a GPU each op also pays its CUDA launch (a few microseconds of host time, not measured here), so the
figures are a lower bound of the GPU's per-step overhead. The minimum of ``REPEATS`` runs is taken (the
machine is shared). The planner ships the figures of a run on the idle project machine (planner/timing/phases.py,
GENERATE_SECONDS_PER_LAYER and GENERATE_SECONDS_PER_STEP: 251 us per layer and 0.41 ms per step were measured,
rounded to 260 us and 0.35 ms). The check is one-sided, as the figures are a lower bound: the script fails
when a run measures less than a shipped figure by more than the tolerance (the shipped figure would then
overstate the cost); a busy machine measures more (other processes take the cores), which passes with a note.

    python benchmarks/generate_overhead.py      # -> benchmarks/results/generate_overhead.txt
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.memory.fit import least_squares  # noqa: E402

OUT = ROOT / "benchmarks/results/generate_overhead.txt"
LAYERS = (2, 6, 12, 24)
NEW_TOKENS = 48
REPEATS = 5
TOLERANCE = 0.3  # relative: a run below a shipped figure by more than this fails (one-sided, module docstring)


def seconds_per_step(num_layers: int) -> float:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=512)
    model = Qwen2ForCausalLM(config).eval()
    ids = torch.randint(0, 512, (1, 16))
    best = float("inf")
    with torch.no_grad():
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                           pad_token_id=0)
            best = min(best, (time.perf_counter() - t0) / NEW_TOKENS)
    return best


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line seconds = intercept + slope x layers."""
    slope, intercept = least_squares([x for x, _ in points], [y for _, y in points])
    return intercept, slope


def main() -> int:
    import torch
    import transformers

    from planner.timing.phases import GENERATE_SECONDS_PER_LAYER, GENERATE_SECONDS_PER_STEP

    torch.set_num_threads(1)
    points = [(layers, seconds_per_step(layers)) for layers in LAYERS]
    intercept, slope = fit(points)
    lines = ["# transformers' eager generate: host seconds per decode step (benchmarks/generate_overhead.py)",
             f"# torch {torch.__version__}, transformers {transformers.__version__}, CPU kernels, 1 thread, "
             f"{platform.machine()}; tiny random Qwen2 (hidden 64), batch 1, {NEW_TOKENS} greedy tokens, "
             f"min of {REPEATS} runs",
             "layers  ms_per_step"]
    lines += [f"{layers:6d}  {s * 1e3:.3f}" for layers, s in points]
    per_layer, per_step = GENERATE_SECONDS_PER_LAYER * 1e6, GENERATE_SECONDS_PER_STEP * 1e3
    lines += [f"per layer: {slope * 1e6:.0f} us   (shipped GENERATE_SECONDS_PER_LAYER {per_layer:.0f} us)",
              f"per step:  {intercept * 1e3:.2f} ms (shipped GENERATE_SECONDS_PER_STEP {per_step:.2f} ms)",
              "a lower bound on a GPU: each op's CUDA launch is not in it"]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    checks = (("per layer", slope, GENERATE_SECONDS_PER_LAYER), ("per step", intercept, GENERATE_SECONDS_PER_STEP))
    low = [name for name, got, shipped in checks if got < (1 - TOLERANCE) * shipped]
    if low:
        print(f"generate_overhead.py: this run measures the {', '.join(low)} cost more than {TOLERANCE:.0%} below "
              f"the shipped figure: update planner/timing/phases.py", file=sys.stderr)
        return 1
    if any(got > (1 + TOLERANCE) * shipped for _, got, shipped in checks):
        print("generate_overhead.py: note: this run measures more than the shipped figures (a busy machine?); "
              "they stay a lower bound", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
