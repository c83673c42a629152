"""A GRPO-shaped *run* on the GPU, not one step: what the allocator holds after many micro-steps of
varying completion length, as TRL's training loop produces them, against the planner's prediction.

Each optimizer step: ``torch.cuda.empty_cache()`` (TRL empties the cache around every generation),
then ``--accumulation`` micro-batches of ``batch`` sequences of ``prompt + c`` tokens, ``c`` drawn
uniformly from [completion/4, completion] (TRL pads a micro-batch's completions to its longest),
forward + backward through TRL's fused head, then the 8-bit AdamW step. The last micro-step of the
run always uses the full completion length, so the run contains the shape the planner is asked
about. Recorded per micro-step: the allocator's peak allocated and reserved (reset per micro-step)
and the device-wide used memory after it; the run's device-level peak is the largest of those.

Usage (on the GPU machine; one model per process, like benchmarks/gpu_heldout.sh):
  python benchmarks/gpu_run_peak.py --model Qwen/Qwen2.5-3B-Instruct --batch 8 --prompt 256 \
      --completion 1792 --steps 4 --accumulation 4 --output run_peak.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.memory.allocator import expandable_segments_from_env  # noqa: E402
from planner.memory.trainer import TrainerSetup, trainer_memory  # noqa: E402
from planner.profiler import measure as m  # noqa: E402
from planner.profiler.trace import _set_checkpointing  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402

MIB = 1024**2


def run(args, memory=None, device: str = "cuda") -> list[dict]:
    """``memory``/``device`` exist for a CPU dry run (tests); by default the GPU is required."""
    if memory is None:
        torch = m.require_gpu(args.model)
        mem = m._CudaMemory(torch)
    else:
        import torch

        mem = memory
    spec = resolve_model(args.model)
    mods = m.require_packages(args.weights, args.finetune)
    model, optimizer, load = m._build(spec, args.weights, args.finetune, args.lora_rank, mods, torch, mem, device)
    _set_checkpointing(model, args.gradient_checkpointing)
    vocab = int(getattr(m._hf_config(spec), "vocab_size", spec.vocab_size))
    rng = random.Random(args.seed)
    setup = TrainerSetup(weights=args.weights, finetune=args.finetune, lora_rank=args.lora_rank,
                         gradient_checkpointing=args.gradient_checkpointing, batch_size=args.batch,
                         prompt_length=args.prompt, completion_length=args.completion,
                         expandable_segments=expandable_segments_from_env(),
                         transformers_version=mods["transformers"].__version__,
                         gradient_accumulation_steps=args.accumulation)
    predicted = trainer_memory(spec, setup).peak_bytes / MIB
    family = {"model": spec.model_id, "weights": args.weights, "mode": args.finetune,
              "rank": args.lora_rank if args.finetune == "lora" else None, "grad_ckpt": args.gradient_checkpointing,
              "batch": args.batch, "prompt_len": args.prompt, "completion_len": args.completion,
              "accumulation": args.accumulation, "expandable_segments": setup.expandable_segments,
              "versions": m.package_versions(mods), "predicted_peak_mib": predicted}
    rows = [{**family, "stage": "load", **load}]
    run_peak = 0.0
    for step in range(args.steps):
        mem.empty_cache()
        for k in range(args.accumulation):
            last = step == args.steps - 1 and k == args.accumulation - 1
            c = args.completion if last else rng.randint(max(1, args.completion // 4), args.completion)
            mem.reset_peak()
            t0 = time.perf_counter()
            m.grpo_forward_backward(model, torch, args.batch, args.prompt, c, vocab, device)
            if k == args.accumulation - 1:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            mem.sync()
            used, _ = mem.device_used_total()
            run_peak = max(run_peak, used)
            rows.append({**family, "stage": "micro", "step": step, "micro": k, "completion": c,
                         "secs": round(time.perf_counter() - t0, 3), "peak_alloc_mib": mem.peak_allocated(),
                         "peak_reserved_mib": mem.peak_reserved(), "reserved_mib": mem.reserved(),
                         "device_used_mib": used})
    rows.append({**family, "stage": "run", "device_peak_mib": run_peak,
                 "error": (predicted - run_peak) / run_peak})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default="bf16", choices=("bf16", "nf4"))
    p.add_argument("--finetune", default="lora", choices=("lora", "full"))
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt", type=int, default=256)
    p.add_argument("--completion", type=int, default=1792)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--accumulation", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    args = p.parse_args()
    with m._quiet_transformers():
        rows = run(args)
    with open(args.output, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    last = rows[-1]
    print(f"{args.model}: run device peak {last['device_peak_mib']:.0f} MiB, predicted "
          f"{last['predicted_peak_mib']:.0f} MiB ({last['error'] * 100:+.1f}%)")


if __name__ == "__main__":
    main()
