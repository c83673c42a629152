"""The full fine-tuning TRL notebook's trainer, replayed through the caching allocator (issue 15).

openenv_wordle_grpo.ipynb trains Qwen3-1.7B in float32 under bf16 autocast with accumulation and
``adamw_torch_fused``; its reported peak *reserved* memory is above the planner's prediction. The
trainer's tensors agree with a real GRPOTrainer traced on the CPU (real_grpo_trace.txt), so this
asks what the caching allocator reserves beyond them. The stream: the trace profiler's tracker
(meta tensors, full size) over TRL 0.26's loop as the notebook runs it --

- the fp32 weights, allocated first (what vLLM's own memory adds is the same in both, left out);
- per optimizer step: ``--old-logp-passes`` no-grad forwards (TRL's old log-probs for the
  importance-sampling correction, one sequence at a time), then ``--accumulation`` micro-batches of
  forward and backward (checkpointing, non-reentrant), clipping's per-tensor norms, the fused
  AdamW step (state created lazily on the first step: exp_avg, exp_avg_sq per parameter; no
  temporaries) and ``zero_grad(set_to_none=True)``;
- autocast emulated where the meta device has none: every fp32 linear casts its input and weight to
  bf16, the weight's copy cached until the forward returns (torch's autocast cache: leaf tensors
  that require grad, cleared when the outermost autocast exits, no-grad forwards included), a fresh
  copy in the backward's recomputation; SDPA casts q, k, v to bf16; accelerate returns fp32 logits.

Then ``planner.profiler.allocator_sim`` replays it (benchmarks/allocator_replay.py checks the replay
against the H100 calibration rows' measured reserve) and the planner's trainer terms are printed
beside it.

    python benchmarks/allocator_notebook.py            # every case; writes benchmarks/results/allocator_notebook.*
    python benchmarks/allocator_notebook.py --model Qwen/Qwen3-1.7B --prompt 1400 --completion 8 [--weights bf16]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.profiler import trace as T  # noqa: E402
from planner.profiler.allocator_sim import CachingAllocator  # noqa: E402
from planner.profiler.allocator_sim import replay as allocator_replay  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_data import NOTEBOOK_PROMPT_TOKENS_PER_TURN, NOTEBOOK_TURNS  # noqa: E402

GIB = 1024**3


def build_stream(model_id: str, prompt: int, completion: int, accumulation: int, steps: int,
                 old_logp_passes: int, weights: str = "fp32") -> tuple[list, int]:
    import torch
    import torch.nn.functional as F

    from planner.specs.model import resolve_model

    spec = resolve_model(model_id)
    model = T._build_model(spec, "full", 0, "plain", device="meta")
    if weights == "fp32":
        model.float()  # else the bf16 model as built: nothing for the emulated autocast to cast
    T._set_checkpointing(model, True)
    notes: list = []
    patches = T._cuda_behaviour_patches(notes)
    tracker = T._make_tracker(lambda mask_shape: 0)  # records ("malloc", key, bytes) / ("free", key)
    events = tracker.events
    params = list(model.parameters())
    for t in params + list(model.buffers()):
        tracker.track(t)
    n_resident = len(events)

    cache: dict | None = None
    orig_linear = F.linear

    def linear(x, w, b=None):
        if w.dtype != torch.float32:
            return orig_linear(x, w, b)
        if cache is not None and w.requires_grad and w.is_leaf:
            wc = cache.get(id(w))
            if wc is None:
                wc = cache[id(w)] = w.to(torch.bfloat16)
        else:
            wc = w.to(torch.bfloat16)
        return orig_linear(x.to(torch.bfloat16), wc, None if b is None else b.to(torch.bfloat16))

    def run_forward(ids, keep):
        nonlocal cache
        cache = {}
        try:
            out = model(input_ids=ids, logits_to_keep=keep)
        finally:
            cache = None  # autocast exits: the cache is cleared
        return out.logits.float()  # accelerate's convert_outputs_to_fp32

    from trl.trainer.utils import selective_log_softmax

    L = prompt + completion
    keep = completion + 1
    with T._patched(patches), torch.device("meta"), tracker:
        sdpa = F.scaled_dot_product_attention

        def sdpa_bf16(q, k, v, *a, **kw):
            return sdpa(q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16), *a, **kw)

        with T._patched([(F, "linear", linear), (F, "scaled_dot_product_attention", sdpa_bf16)]):
            state: dict = {}
            for step in range(steps):
                events.append(("phase", f"step {step} old log-probs"))
                with torch.no_grad():
                    for _ in range(old_logp_passes):
                        ids = torch.randint(0, spec.vocab_size, (1, L))
                        logits = run_forward(ids, keep)[:, :-1, :] / 1.0
                        old = selective_log_softmax(logits, ids[:, -completion:])
                        del logits, ids, old
                for micro in range(accumulation):
                    events.append(("phase", f"step {step} micro-batch {micro}"))
                    ids = torch.randint(0, spec.vocab_size, (1, L))
                    logits = run_forward(ids, keep)[:, :-1, :] / 1.0
                    logp = selective_log_softmax(logits, ids[:, -completion:])
                    del logits
                    loss = -(torch.exp(logp - logp.detach()) * torch.randn(1, 1)).mean() / accumulation
                    del logp
                    loss.backward()
                    del loss, ids
                events.append(("phase", f"step {step} clip + optimizer"))
                grads = [p.grad for p in params if p.grad is not None]
                norms = torch._foreach_norm(grads, 2.0)
                total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
                coef = torch.clamp(1.0 / (total + 1e-6), max=1.0)
                torch._foreach_mul_(grads, coef)
                del norms, total, coef, grads
                for p in params:  # torch.optim.AdamW(fused=True)._init_group, then the fused kernel
                    if p not in state:
                        state[p] = (torch.zeros((), dtype=torch.float32), torch.zeros_like(p),
                                    torch.zeros_like(p))
                for p in params:
                    p.grad = None
    return events, n_resident


def replay(events: list, n_resident: int) -> tuple[CachingAllocator, list]:
    """The replayed allocator and its per-phase (name, peak allocated, peak reserved)."""
    a = allocator_replay(events, n_resident)
    return a, a.phases


# fp32 full fine-tuning under bf16 autocast with accumulation (TRL < 0.27 or >= 0.27 given a model id):
# the full fine-tuning notebook at one turn (the 1400-token cap) and as it trains: six concatenated turns of its
# 1296-token prompt and 8-token completion (calibration_data: the settled reading), and tied and untied models
SIX_TURNS = (NOTEBOOK_TURNS * NOTEBOOK_PROMPT_TOKENS_PER_TURN, NOTEBOOK_TURNS * 8)
CASES = (("Qwen/Qwen3-1.7B", 1400, 8), ("Qwen/Qwen3-1.7B", *SIX_TURNS), ("Qwen/Qwen2.5-0.5B-Instruct", 1024, 512),
         ("Qwen/Qwen2.5-1.5B-Instruct", 512, 256), ("meta-llama/Llama-3.2-1B-Instruct", 512, 256),
         ("Qwen/Qwen2.5-7B-Instruct", 512, 256), ("meta-llama/Llama-3.1-8B-Instruct", 512, 256))
# the same loop with the model loaded in bf16 (a dtype given): nothing to autocast, Adam's states in bf16
BF16_CASES = (("Qwen/Qwen3-1.7B", 1400, 8), ("Qwen/Qwen2.5-0.5B-Instruct", 1024, 512))
ACCUMULATION, STEPS, OLD_LOGP_PASSES = 3, 2, 1
JSONL = Path(__file__).resolve().parent / "results" / "allocator_notebook.jsonl"
TXT = JSONL.with_suffix(".txt")


def replay_case(model: str, prompt: int, completion: int, accumulation: int = ACCUMULATION, steps: int = STEPS,
                old_logp_passes: int = OLD_LOGP_PASSES, weights: str = "fp32") -> dict:
    with warnings.catch_warnings(), T._quiet_transformers():
        warnings.simplefilter("ignore")
        events, n = build_stream(model, prompt, completion, accumulation, steps, old_logp_passes, weights)
    _, phases = replay(events, n)
    return {"model": model, "weights": weights, "prompt": prompt, "completion": completion,
            "accumulation": accumulation,
            "steps": steps, "old_logp_passes": old_logp_passes,
            "phases": [{"phase": p, "peak_allocated": al, "peak_reserved": res} for p, al, res in phases],
            "peak_allocated": max(al for _, al, _ in phases), "peak_reserved": max(res for _, _, res in phases)}


def main() -> None:
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="one case (default: every case in CASES, written to results/)")
    ap.add_argument("--prompt", type=int, default=1400)
    ap.add_argument("--completion", type=int, default=8)
    ap.add_argument("--accumulation", type=int, default=ACCUMULATION)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--old-logp-passes", type=int, default=OLD_LOGP_PASSES)
    ap.add_argument("--weights", choices=("fp32", "bf16"), default="fp32")
    args = ap.parse_args()
    ap_weights = args.weights
    cases = ([(*c, "fp32") for c in CASES] + [(*c, "bf16") for c in BF16_CASES] if args.model is None
             else [(args.model, args.prompt, args.completion, ap_weights)])
    rows = []
    for model, prompt, completion, weights in cases:
        row = replay_case(model, prompt, completion, args.accumulation, args.steps, args.old_logp_passes, weights)
        rows.append(row)
        print(f"{model} {weights} {prompt}+{completion}: replayed peak allocated {row['peak_allocated'] / GIB:.2f} GiB, "
              f"reserved {row['peak_reserved'] / GIB:.2f} GiB", flush=True)
        for ph in row["phases"]:
            print(f"  {ph['phase']:<32} {ph['peak_allocated'] / GIB:>8.2f} {ph['peak_reserved'] / GIB:>8.2f}")
    if args.model is None:
        JSONL.write_text("".join(json.dumps(r) + "\n" for r in rows))
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from calibration_data import evaluate_allocator_replay

        TXT.write_text(evaluate_allocator_replay(JSONL)["text"] + "\n")
        print(TXT.read_text())


if __name__ == "__main__":
    main()
