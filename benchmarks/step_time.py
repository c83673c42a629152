"""Predicted vs measured seconds per GRPO step on the real Unsloth runs (CPU, planner only).

    python benchmarks/step_time.py      # prints and writes benchmarks/results/step_time.txt

The runs: the 8 records of data/unsloth/unsloth-reports.jsonl with a progress line (``extra.progress``,
e.g. ``[100/100 2:38:49, Epoch 0/1`` = 100 steps in 2 h 38 min 49 s: 95.3 s per step).

THE SPLIT (decided and committed before any fit): leave-one-out. Each run's held-out prediction uses
constants fitted on the other 7 runs; the held-out error of a run is that prediction against its
measured seconds per step. The shipped constants (planner.timing.efficiency.FITTED) are fitted on all 8,
and their error on the 8 is reported beside as the fit-set error. (A 4/4 split would leave 4 runs to
fit the numbers below; leave-one-out keeps 7.)

THE PRE-REGISTERED DESIGN FAILED, AND WAS REVISED AFTER SEEING IT (stated, not hidden): first committed
were 3 fitted numbers, ``mfu``, ``bandwidth_efficiency`` and one ``typical_completion`` for every run
(completions = min(cap, typical)). Its leave-one-out error: median 2.84, worst 8.92 (fit-set median 2.18,
worst 5.17; the Qwen3-4B and Llama-3.2-1B runs too fast by 3-9x, Mistral 7B too slow by 4-5x): one
length cannot fit notebooks whose completions differ by 5x, and nothing paid for a small model's decode
steps. The revision, fitted the same way:
- shipped to the planner: ``mfu``, ``bandwidth_efficiency`` and ``decode_step_seconds`` (a fixed cost per
  decode token step: the engine's scheduling and sampling, planner.timing.efficiency);
- nuisance lengths of these runs, not shipped (the records do not carry the lengths generated):
  completions = min(cap, typical) with one typical length for the GSM8K-style notebooks (runs 0-3, 5, 7)
  and one for the two notebooks that first teach a long reasoning format by an SFT warm-up (runs 4, 6;
  the Qwen3 GRPO template). A wave decodes as long as its longest completion and TRL pads the training
  batch to its longest, so this stands for the longest completion of a batch. The planner uses the
  user's expected completion length instead (default: the cap).
The fit minimises the sum of squared log(predicted / measured) over a grid, with the step time taken as
compute / mfu + bytes / bandwidth_efficiency + decode steps x decode_step_seconds (each term read off
planner.timing.step.step_time at unit efficiencies; decode is bandwidth-bound on every run, so the
roofline's max is that sum); the reported predictions are step_time's own. Also tried once each after
this fit, with the two lengths assumed instead of fitted (200 tokens / the cap; 300 / the cap) and only
the 3 constants fitted: held-out median 1.21 and 1.28, worst 2.07 and 2.20 (run 6), and the bandwidth
efficiency at its bound 1.0 in both; not adopted. The constants are not pinned apart by these 8 runs
(planner.timing.efficiency says so).

THE ASSUMPTIONS (each run's settings are the record's; where the record is silent):
- prompt tokens: the run's max_prompt_length (a cap: real prompts are shorter; run 5's 287 + 1 from the
  notebook source its record quotes); 256 where the notebook
  computes it from the data and the record does not print it (runs 4 and 6); run 7 (prompt cap 600,
  max_seq_length 512) the 384 tokens the sequence leaves beside its 128-token completion;
- the GRPO step in the semantics of the TRL release the run used: before TRL 0.18 (runs 0-5 and 7) a
  generate call per micro-step of per_device_train_batch_size completions (pre-2025.3 Unsloth, runs 0-1:
  one prompt x num_generations); TRL 0.22 (run 6) one generation of batch x accumulation completions;
- beta: TRL's default of that release, 0.04 before TRL 0.19 (a reference forward, Unsloth's adapter-off
  pass) and 0 in TRL 0.22 (run 6); run 7 (2025-07, TRL not printed) taken as 0.04;
- vLLM shares the trainer's weights (no weight sync) and decodes with CUDA graphs (every record's log
  captures them); run 6's standby moves no weights (Unsloth's standby frees the KV cache only);
- 4-bit weights dequantise per matmul in vLLM's decode and in training (planner.timing.phases);
  fp8 weights (run 6) read 1 byte per weight in decode; the trainer computes in fp16 on a T4, else bf16;
- concurrency: vLLM's printed "Maximum concurrency" for full-length sequences, capped by Unsloth's
  "Num Sequences".

Done-when target (issue 25): every run within a factor of 2, the median run within 1.35.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.memory.lora import lora_params
from planner.memory.vllm import kv_bytes_per_token
from planner.memory.weights import quantisable_linear_params
from planner.specs.gpu import resolve_gpu
from planner.specs.model import resolve_model
from planner.timing.efficiency import FITTED, Efficiency
from planner.timing.step import StepShape, step_time

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "unsloth" / "unsloth-reports.jsonl"
OUT = ROOT / "benchmarks" / "results" / "step_time.txt"

# record model -> shipped profile (same architecture), record GPU -> shipped profile
PROFILE = {"unsloth/phi-4-bnb-4bit": "microsoft/phi-4", "/opt/tiger/test0/Phi-4": "microsoft/phi-4",
           "unsloth/qwen2.5-3b-instruct-unsloth-bnb-4bit": "Qwen/Qwen2.5-3B-Instruct",
           "unsloth/meta-llama-3.1-8b-instruct-unsloth-bnb-4bit": "meta-llama/Llama-3.1-8B-Instruct",
           "unsloth/mistral-7b-instruct-v0.3-bnb-4bit": "mistralai/Mistral-7B-Instruct-v0.3",
           "unsloth/Qwen3-4B-Base": "Qwen/Qwen3-4B", "unsloth/Llama-3.2-3B-Instruct": "meta-llama/Llama-3.2-3B-Instruct",
           "unsloth/Llama-3.2-1B-Instruct-FP8-Block": "meta-llama/Llama-3.2-1B-Instruct"}
GPU = {"Tesla T4": "T4", "NVIDIA GeForce RTX 4090": "RTX-4090", "NVIDIA L4": "L4", "NVIDIA A100-SXM4-80GB": "A100-80GB"}
DEFAULT_PROMPT = 256  # where the notebook computes max_prompt_length from its data (module docstring)
SPLIT = "leave-one-out (each run predicted by constants fitted on the other 7); shipped constants fitted on all 8"


@dataclass(frozen=True, eq=False)  # hashed by identity (terms' cache)
class Run:
    index: int  # line of the jsonl (0-based)
    label: str
    record: dict
    measured_seconds: float  # per step, from the progress line


def progress_seconds(progress: str) -> tuple[int, float]:
    """``[100/100 2:38:49, Epoch 0/1`` -> (100 steps, 9529 s)."""
    m = re.match(r"\[(\d+)/\d+ ([\d:]+)", progress)
    if not m:
        raise ValueError(progress)
    secs = 0
    for part in m[2].split(":"):
        secs = secs * 60 + int(part)
    return int(m[1]), float(secs)


def load_runs() -> list[Run]:
    runs = []
    for i, line in enumerate(DATA.read_text().splitlines()):
        r = json.loads(line)
        progress = (r.get("extra") or {}).get("progress")
        if not progress:
            continue
        steps, secs = progress_seconds(progress)
        runs.append(Run(i, f"{r['model'].split('/')[-1]} on {GPU[r['gpu']]}", r, secs / steps))
    return runs


def _source_prompt(r: dict) -> int | None:
    """``max_prompt_length = 287 + 1`` in the notebook source the record quotes (run 5), else None."""
    for line in r["evidence"]:
        m = re.search(r"max_prompt_length = (\d+) \+ (\d+)", line)
        if m:
            return int(m[1]) + int(m[2])
    return None


def _lengths(r: dict) -> tuple[int, int]:
    """(prompt tokens, completion cap) of a record (module docstring)."""
    seq = r["max_seq_length"]
    prompt = r["max_prompt_length"] or _source_prompt(r) or DEFAULT_PROMPT
    cap = r["max_completion_length"] or seq - prompt
    return min(prompt, seq - cap), cap


def _old_trl(r: dict) -> bool:
    """Before TRL 0.18/0.19: a generation per micro-step and beta 0.04 (module docstring)."""
    trl = r["versions"].get("trl")
    return trl is None or tuple(int(x) for x in trl.split(".")[:2]) < (0, 18)


def _rounds(r: dict) -> tuple[int, int, int]:
    """(generate calls per step, completions per call, micro-batch) in the run's TRL semantics."""
    B, GA, G = r["batch_size"], r["grad_accum"], r["num_generations"]
    if tuple(int(x) for x in r["versions"]["unsloth"].split(".")[:2]) < (2025, 3):  # the batch counted prompts
        return GA, B * G, B * G
    return (GA, B, B) if _old_trl(r) else (1, B * GA, B)


def shape_of(run: Run, typical_completion: float) -> StepShape:
    r = run.record
    spec = resolve_model(PROFILE[r["model"]])
    gpu = resolve_gpu(GPU[r["gpu"]])
    prompt, cap = _lengths(r)
    linear, _ = quantisable_linear_params(spec)
    counts = spec.param_counts()
    rest = counts.active - linear
    quant = r["quant"]
    read = {"4bit": linear * 4.5 + rest * 2, "fp8": linear * 1 + rest * 2}.get(quant, counts.active * 2)
    dtype = "fp16" if not gpu.bf16 else "bf16"
    rounds, per_round, micro = _rounds(r)
    concurrency = min(int(r["max_concurrency"]), r["extra"]["unsloth_num_sequences"])
    return StepShape(
        matmul_params=linear + spec.vocab_size * spec.hidden_size, num_layers=spec.num_layers, q_dim=spec.q_dim,
        quantised_weights=linear if quant == "4bit" else 0.0, decode_weight_read_bytes=read,
        kv_bytes_per_token=kv_bytes_per_token(spec), peak_flops_per_s=gpu.peak_tflops(dtype) * 1e12,
        bandwidth_bytes_per_s=gpu.memory_bandwidth_gbs * 1e9, host_link_bytes_per_s=gpu.pcie_gbs / 2 * 1e9,
        prompt_tokens=prompt, completion_tokens=min(cap, typical_completion), generation_rounds=rounds,
        sequences_per_round=per_round, concurrency=concurrency, trained_sequences=rounds * per_round,
        micro_batch=micro, full_finetune=False, recompute=True, logprob_forwards=1 if _old_trl(r) else 0,
        trainable_params=lora_params(spec, r["lora_rank"]), param_bytes=4, grad_bytes=4, state_bytes=8,
        completions_per_step=rounds * per_round)


LONG_REASONING = {4, 6}  # the notebooks with an SFT warm-up to a long reasoning format (module docstring)
MFU = np.arange(0.02, 1.0001, 0.01)
BANDWIDTH = np.arange(0.05, 1.0001, 0.01)
STEP = np.arange(0.0, 0.0401, 0.0005)  # seconds
SHORT = range(50, 801, 10)
LONG = range(200, 2001, 20)


def predict(run: Run, eff: Efficiency, lengths: tuple[float, float]) -> float:
    return step_time(shape_of(run, lengths[run.index in LONG_REASONING]), eff).step_seconds


@cache
def terms(run: Run, typical: float) -> tuple[float, float, float]:
    """(compute seconds at the peak, bandwidth seconds at the full bandwidth, decode token steps)."""
    s = shape_of(run, typical)
    big = 1e12
    return (step_time(s, Efficiency(1.0, big)).step_seconds, step_time(s, Efficiency(big, 1.0)).step_seconds,
            step_time(s, Efficiency(big, big, 1.0)).step_seconds)


def _group_loss(runs: list[Run], lengths: range) -> tuple[np.ndarray, np.ndarray]:
    """Squared log errors summed over ``runs`` at every (mfu, bandwidth, step) of the grid, minimised
    over ``lengths``: (the least loss, the index of its length)."""
    m, b, o = np.meshgrid(MFU, BANDWIDTH, STEP, indexing="ij")
    best = np.full(m.shape, np.inf)
    where = np.zeros(m.shape, dtype=int)
    for i, t in enumerate(lengths):
        loss = np.zeros(m.shape)
        for r in runs:
            c, w, n = terms(r, float(t))
            loss += np.log((c / m + w / b + n * o) / r.measured_seconds) ** 2
        better = loss < best
        best[better], where[better] = loss[better], i
    return best, where


def fit(runs: list[Run]) -> tuple[Efficiency, tuple[float, float]]:
    """The constants and the two typical lengths minimising the squared log error (module docstring):
    the lengths act on disjoint runs, so each is minimised on its own at every grid point."""
    short, short_at = _group_loss([r for r in runs if r.index not in LONG_REASONING], SHORT)
    long, long_at = _group_loss([r for r in runs if r.index in LONG_REASONING], LONG)
    i, j, k = np.unravel_index(int((short + long).argmin()), short.shape)
    lengths = (SHORT[int(short_at[i, j, k])], LONG[int(long_at[i, j, k])])
    return Efficiency(round(float(MFU[i]), 2), round(float(BANDWIDTH[j]), 2), round(float(STEP[k]), 4)), lengths


def _factor(pred: float, meas: float) -> float:
    return max(pred / meas, meas / pred)


def _line(run: Run, pin: float, pout: float, eff: Efficiency, lengths: tuple[float, float]) -> str:
    return (f"{run.index}: {run.label:<48} {run.measured_seconds:>7.1f}s {pin:>7.1f}s "
            f"{_factor(pin, run.measured_seconds):>5.2f} {pout:>8.1f}s {_factor(pout, run.measured_seconds):>5.2f}  "
            f"mfu {eff.mfu:.2f} bw {eff.bandwidth_efficiency:.2f} step {eff.decode_step_seconds * 1e3:.1f} ms "
            f"lengths {lengths[0]:.0f}/{lengths[1]:.0f}")


def accuracy_lines(runs: list[Run]) -> tuple[list[str], Efficiency]:
    shipped, lengths = fit(runs)
    lines = [f"fitted on all {len(runs)}: mfu {shipped.mfu:.2f}, bandwidth_efficiency {shipped.bandwidth_efficiency:.2f}, "
             f"decode_step_seconds {shipped.decode_step_seconds:.4f}; typical longest completion {lengths[0]:.0f} "
             f"tokens (GSM8K-style), {lengths[1]:.0f} (long-reasoning notebooks, runs 4 and 6)", "",
             f"{'run':<51} {'measured':>8} {'fit-set':>8} {'x':>5} {'held-out':>9} {'x':>5}  held-out constants"]
    fit_f, held_f = [], []
    for run in runs:
        eff, held_lengths = fit([r for r in runs if r is not run])
        pin, pout = predict(run, shipped, lengths), predict(run, eff, held_lengths)
        fit_f.append(_factor(pin, run.measured_seconds))
        held_f.append(_factor(pout, run.measured_seconds))
        lines.append(_line(run, pin, pout, eff, held_lengths))
    lines += ["", "error factor = max(predicted/measured, measured/predicted)",
              f"fit-set: median {statistics.median(fit_f):.2f}, worst {max(fit_f):.2f}",
              f"held-out (leave-one-out): median {statistics.median(held_f):.2f}, worst {max(held_f):.2f}",
              f"target: every run within 2 ({'met' if max(held_f) <= 2 else 'NOT met'} held-out), "
              f"median within 1.35 ({'met' if statistics.median(held_f) <= 1.35 else 'NOT met'} held-out)",
              f"misses (held-out beyond 2): {', '.join(str(r.index) for r, f in zip(runs, held_f) if f > 2) or 'none'}"]
    return lines, shipped


EXAMPLE = ("Qwen/Qwen2.5-3B-Instruct", "L4", 1024)  # the README's first example: plan ... --max-completion-length 1024


def _row(label: str, p) -> str:
    c, t = p.config, p.step_time()
    return (f"  {label:<34} micro-batch {c['per_device_train_batch_size']:>2} x {c['gradient_accumulation_steps']:>2}, "
            f"{c['generation_batch_size']:>3} completions, {p.waves} wave(s), util {c['vllm_gpu_memory_utilization']:g}, "
            f"sleep {'on ' if c['vllm_enable_sleep_mode'] else 'off'}: peak {p.peak_bytes / 2**30:5.2f} GiB, "
            f"{t.step_seconds:6.1f} s/step, {t.completions_per_hour:6.0f} completions/h")


def example_lines() -> list[str]:
    """Where the time goes for the README's first example, and when sleep mode or a larger micro-batch
    pays (the planner's own predictions, no measurement)."""
    import planner

    model, gpu, cap = EXAMPLE
    base = {"max_completion_length": cap}
    p = planner.plan(model, gpu, pin=base)
    t = p.step_time()
    phases = ", ".join(f"{k} {v:.1f} s ({v / t.step_seconds:.0%})"
                       for k, v in sorted(t.phases.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    short = planner.plan(model, gpu, pin=base, expected_completion_length=300).step_time()
    n = p.config["generation_batch_size"]
    lines = ["## where the time goes (predicted): plan --model " f"{model} --gpu {gpu} --max-completion-length {cap}",
             f"step {t.step_seconds:.1f} s: {phases}; {t.completions_per_hour:.0f} completions per hour",
             f"with --expected-completion-length 300: step {short.step_seconds:.1f} s, "
             f"{short.completions_per_hour:.0f} completions per hour", "",
             "## when sleep mode or a larger micro-batch pays (each row a plan with these settings pinned)",
             _row("the plan", p)]
    for label, kw in (("sleep off", dict(sleep_mode="off")), ("sleep on", dict(sleep_mode="on"))):
        lines.append(_row(label + " (the solver's best)", planner.plan(model, gpu, pin=base, **kw)))
    for label, weights in (("16-bit", "bf16"), ("4-bit (nf4)", "nf4")):
        for B in (1, 8):
            q = planner.plan(model, gpu, weights=weights, pin={**base, "per_device_train_batch_size": B,
                                                               "generation_batch_size": n})
            lines.append(_row(f"{label}, micro-batch {B}", q))
    return lines


def main() -> int:
    runs = load_runs()
    lines, shipped = accuracy_lines(runs)
    text = "\n".join(["# Predicted vs measured seconds per GRPO step, Unsloth runs with progress lines",
                      f"# split: {SPLIT}", "", *lines, "", *example_lines()]) + "\n"
    print(text, end="")
    OUT.write_text(text)
    if (FITTED.mfu, FITTED.bandwidth_efficiency, FITTED.decode_step_seconds) != (
            shipped.mfu, shipped.bandwidth_efficiency, shipped.decode_step_seconds):
        print(f"planner.timing.efficiency.FITTED {FITTED} differs from this fit {shipped}: update it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
