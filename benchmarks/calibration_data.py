"""The measured H100 data in the source repository, read back and compared with the model.

Three sets, all measured with torch 2.11, transformers 5.17, peft 0.21, TRL 1.16, bitsandbytes 0.50:

- ``data/calibration/h100-trl1.16-train.jsonl``: one isolated step per shape, 90 rows (its README
  defines every field and the device-level peak a planner must predict); the few fitted numbers
  come from it.
- ``benchmarks/results/h100_heldout/``: held-out steps (calibration profiles written by
  ``plan profile --gpu auto``, benchmarks/gpu_heldout.sh): models, ranks, shapes and an allocator
  setting the calibration rows do not have.
- ``benchmarks/results/h100_run_peak/``: whole runs of 16 micro-steps (benchmarks/gpu_run_peak.py).

Beside them, ``benchmarks/results/trace_vs_analytic.txt``: the analytic activation peak against the
CPU trace of the real model code on architectures nobody measured (tracing needs torch, transformers
and about a minute per model, so the committed output is the data). :func:`margin_bands` turns all of
it into each memory model's safety margin (the constants in planner/search/margins.py).

The data is part of the source repository, not of the wheel: the paths below are the checkout's,
and a missing file raises ``FileNotFoundError`` naming it (the accuracy tests fail, never skip).
``measured_setup`` turns one measured row (these field names, also what ``plan profile --gpu auto``
writes) into the ``TrainerSetup`` it describes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from planner.search.estimation import estimate
from planner.specs.units import GIB

MIB = 1024**2
REPO = Path(__file__).resolve().parents[1]
CALIBRATION_ROWS = REPO / "data" / "calibration" / "h100-trl1.16-train.jsonl"
HELDOUT_DIR = REPO / "benchmarks" / "results" / "h100_heldout"
HELDOUT_FILES = ("fresh.json", "expandable.json", "heldout.json")
RUN_PEAK_DIR = REPO / "benchmarks" / "results" / "h100_run_peak"
REAL_GRPO_TRACE = REPO / "benchmarks" / "results" / "real_grpo_trace.jsonl"
TRACE_VS_ANALYTIC = REPO / "benchmarks" / "results" / "trace_vs_analytic.txt"
CALIBRATION_TRANSFORMERS = "5.17.0"  # the release data/calibration/README.md names
CARD = "H100-80GB"


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"measured data not found at {path}: it is part of the source repository "
                                f"(data/, benchmarks/results/), not of the installed package")
    return path


def calibration_path() -> Path:
    """The calibration rows (``$PLANNER_CALIBRATION_DATA`` replaces them, e.g. with rows measured elsewhere)."""
    return Path(os.environ.get("PLANNER_CALIBRATION_DATA", CALIBRATION_ROWS))


# -- one isolated step per shape (data/calibration) -------------------------------------------------

def load_rows(path: Path | None = None) -> list[dict]:
    """Step rows (ok and OOM) with ``measured_peak_bytes`` for the ok ones."""
    rows = []
    with open(_require(path or calibration_path())) as f:
        for line in f:
            r = json.loads(line)
            if r.get("stage") != "step":
                continue
            if r.get("ok"):
                non_torch = r["device_used_mib_after_load"] - r["reserved_mib_after_load"]
                r["measured_peak_bytes"] = int((r["peak_reserved_step_mib"] + non_torch) * MIB)
                r["measured_activation_bytes"] = int((r["peak_alloc_step_mib"] - r["before_mib"]) * MIB)
                r["measured_reserve_bytes"] = int((r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]) * MIB)
            rows.append(r)
    return rows


def env_row(path: Path | None = None) -> dict:
    with open(_require(path or calibration_path())) as f:
        for line in f:
            r = json.loads(line)
            if r.get("stage") == "env":
                return r
    return {}


def measured_setup(row: dict, **overrides):
    """The ``TrainerSetup`` of one measured step (the calibration README's field names, also what
    ``plan profile --gpu auto`` and benchmarks/gpu_run_peak.py write): one isolated step of one
    shape, the measurements' protocol. ``overrides`` replace any field (a run's accumulation, say)."""
    from planner.memory.trainer import TrainerSetup

    kw = dict(weights=row["weights"], finetune=row["mode"], lora_rank=row["rank"] or 16,
              optim=row.get("optimizer", "adamw_8bit"), gradient_checkpointing=row["grad_ckpt"],
              batch_size=row["batch"], prompt_length=row["prompt_len"], completion_length=row["completion_len"],
              logprob_head="fused", expandable_segments=row.get("expandable_segments", False),
              transformers_version=row.get("transformers", CALIBRATION_TRANSFORMERS), completion_lengths="fixed")
    return TrainerSetup(**{**kw, **overrides})


def predict_step(row: dict) -> int:
    """The analytic trainer peak (no calibration profile) of one measured step."""
    from planner.memory.trainer import trainer_memory
    from planner.specs.model import resolve_model

    return trainer_memory(resolve_model(row["model"]), measured_setup(row)).peak_bytes


def _card_bytes() -> int:
    from planner.specs.gpu import resolve_gpu

    return resolve_gpu(CARD).total_bytes


def evaluate_calibration(rows=None) -> dict:
    """Per-row errors against the calibration rows' device-level peak, and the summary the accuracy
    test asserts on. Rows that ran out of memory must be predicted above the card."""
    rows = rows if rows is not None else load_rows()
    card = _card_bytes()
    ran, oom = [], []
    for r in rows:
        pred = predict_step(r)
        if r["ok"]:
            ran.append((r, pred, (pred - r["measured_peak_bytes"]) / r["measured_peak_bytes"]))
        else:
            oom.append((r, pred, pred > card))
    errs = [e for _, _, e in ran]
    # The same rows against device_used_mib_end, the process's device-level peak as the README defines
    # it: equal to the formula above (within 4 MiB) for every model but the first of the measuring
    # process, whose non-PyTorch memory was read after load, before CUDA's lazy kernel loading added
    # ~150 MiB (every fresh process in benchmarks/results/h100_heldout shows 619 -> 767-771 MiB).
    device_errs = [(pred - r["device_used_mib_end"] * MIB) / (r["device_used_mib_end"] * MIB) for r, pred, _ in ran]
    return {
        "device_median_abs_error": statistics.median(abs(e) for e in device_errs),
        "device_max_abs_error": max(abs(e) for e in device_errs),
        "device_worst_under": min(device_errs),
        "ran": ran, "oom": oom,
        "median_abs_error": statistics.median(abs(e) for e in errs),
        "max_abs_error": max(abs(e) for e in errs),
        "worst_under": min(errs),
        "oom_predicted_above_card": all(ok for _, _, ok in oom),
        "card_bytes": card,
    }


# -- held-out steps (benchmarks/results/h100_heldout) ------------------------------------------------

def load_heldout_rows(folder: Path = HELDOUT_DIR) -> list[dict]:
    """Step rows of every held-out profile (ok and OOM), each with its transformers release."""
    rows = []
    for name in HELDOUT_FILES:
        profile = json.loads(_require(folder / name).read_text())
        for model in profile["models"]:
            steps = [r for r in model["rows"] if r.get("stage") == "step"]
            # the first step of a model also creates the optimizer state, after backward: its peak
            # lacks the state that every later step holds through backward (what is predicted)
            rows += [{**r, "transformers": profile["versions"]["transformers"], "first_step": i == 0}
                     for i, r in enumerate(steps)]
    return rows


def evaluate_heldout(rows=None) -> dict:
    """Errors against ``device_used_mib_end`` (the device-level peak of a fresh process) and against
    the calibration README's formula (reserved peak + non-PyTorch memory after load)."""
    rows = rows if rows is not None else load_heldout_rows()
    card = _card_bytes()
    ran, oom = [], []
    for r in rows:
        pred = predict_step(r)
        if not r["ok"]:
            oom.append((r, pred, pred > card))
            continue
        device = r["device_used_mib_end"] * MIB
        readme = (r["peak_reserved_step_mib"] + r["device_used_mib_after_load"] - r["reserved_mib_after_load"]) * MIB
        ran.append((r, pred, (pred - device) / device, (pred - readme) / readme))
    errs = [e for *_, e, _ in ran]
    return {"ran": ran, "oom": oom, "card_bytes": card,
            "median_abs_error": statistics.median(abs(e) for e in errs),
            "max_abs_error": max(abs(e) for e in errs), "worst_under": min(errs),
            "max_abs_error_after_first_step": max(abs(e) for r, _, e, _ in ran if not r["first_step"]),
            "readme_median_abs_error": statistics.median(abs(e) for *_, e in ran),
            "readme_max_abs_error": max(abs(e) for *_, e in ran),
            "oom_predicted_above_card": all(ok for *_, ok in oom)}


# -- whole runs (benchmarks/results/h100_run_peak) ----------------------------------------------------

def load_runs(path: Path = RUN_PEAK_DIR / "run_peak.jsonl") -> list[dict]:
    """The ``run`` rows, each with its number of micro-steps and its longest completion."""
    runs: list[dict] = []
    micro: list[dict] = []
    for line in _require(path).read_text().splitlines():
        r = json.loads(line)
        if r["stage"] == "load":
            micro = []
        elif r["stage"] == "micro":
            micro.append(r)
        elif r["stage"] == "run":
            runs.append({**r, "micro_steps": len(micro),
                         "longest_completion": max(m["completion"] for m in micro)})
    return runs


def run_setup(run: dict, run_level: bool = True):
    """The ``TrainerSetup`` of a whole run (varied lengths, its accumulation), or of one isolated
    step of its shape (``run_level=False``)."""
    return measured_setup(run, transformers_version=run["versions"]["transformers"],
                          gradient_accumulation_steps=run["accumulation"] if run_level else 1,
                          completion_lengths="varied" if run_level else "fixed")


def predict_run(run: dict, run_level: bool = True) -> int:
    """The run's peak (varied lengths, its accumulation), or one isolated step's (``run_level=False``)."""
    from planner.memory.trainer import trainer_memory
    from planner.specs.model import resolve_model

    return trainer_memory(resolve_model(run["model"]), run_setup(run, run_level)).peak_bytes


def all_runs() -> list[dict]:
    """The six runs the run-level reserve was read off, then the two held-out runs (``heldout``)."""
    return load_runs() + [{**r, "heldout": True} for r in load_runs(RUN_PEAK_DIR / "heldout_runs.jsonl")]


def evaluate_runs(runs=None) -> dict:
    """Run peaks: the six runs the run-level reserve was read off, then the two held-out runs
    (``heldout_runs.jsonl``, predictions committed before they were measured)."""
    if runs is None:
        runs = all_runs()
    out = []
    for r in runs:
        measured = r["device_peak_mib"] * MIB
        out.append((r, predict_run(r), predict_run(r, run_level=False), measured))
    errs = [(p - m) / m for _, p, _, m in out]
    single = [(s - m) / m for _, _, s, m in out]
    held = [e for (r, *_), e in zip(out, errs) if r.get("heldout")]
    return {"runs": out, "max_abs_error": max(map(abs, errs)), "worst_under": min(errs), "heldout_errors": held,
            "single_step_worst_under": min(single)}


# -- the calibrated model: the shipped profiles on what they were not fitted on ------------------------

def shipped_calibration(model: str):
    """The shipped H100 calibration profile of ``model`` (profiles/calibration alone: a user's own
    profiles never enter an evaluation), or None."""
    from planner.memory.calibration import SHIPPED_DIR, find_calibration
    from planner.specs.gpu import resolve_gpu
    from planner.specs.model import resolve_model

    return find_calibration(resolve_model(model), resolve_gpu(CARD), versions={}, folders=[SHIPPED_DIR])


def predict_calibrated(model: str, setup) -> tuple[int, str]:
    """(trainer peak, memory-model label) with the shipped profile where it covers ``setup``, the
    analytic terms elsewhere (what a plan on the H100 uses)."""
    from planner.search.estimation import calibrated_trainer_memory
    from planner.specs.model import resolve_model

    tm, label, _ = calibrated_trainer_memory(resolve_model(model), setup, shipped_calibration(model))
    return tm.peak_bytes, label


def evaluate_calibrated(heldout_rows=None, runs=None) -> dict:
    """The shipped calibration profiles (fitted on data/calibration's steady rows alone) against
    the measurements they were not fitted on, where they apply: the held-out steps of a calibrated
    family (benchmarks/results/h100_heldout, against ``device_used_mib_end``), and, as a check, the
    whole runs of calibrated models (the profiles never saw them, but the run-level reserve they
    are raised to was read off them). ``worst_under`` is the held-out steps' worst error."""
    heldout_rows = heldout_rows if heldout_rows is not None else load_heldout_rows()
    steps = []
    for r in heldout_rows:
        if not r["ok"]:
            continue
        pred, label = predict_calibrated(r["model"], measured_setup(r))
        if label.startswith("calibrated"):
            device = r["device_used_mib_end"] * MIB
            steps.append((r, pred, (pred - device) / device))
    checked = []
    for r in runs if runs is not None else all_runs():
        pred, label = predict_calibrated(r["model"], run_setup(r))
        if label.startswith("calibrated"):
            measured = r["device_peak_mib"] * MIB
            checked.append((r, pred, (pred - measured) / measured))
    return {"steps": steps, "runs": checked, "worst_under": min(e for *_, e in steps),
            "runs_worst_under": min(e for *_, e in checked), "left_out": evaluate_left_out(),
            "card_bytes": _card_bytes()}


def evaluate_left_out(rows=None) -> list[tuple[dict, int, float]]:
    """The calibration rows each shipped profile's fit left out (planner.memory.fit.steady_rows:
    each family's first step, which also creates the optimizer state), predicted with the profile:
    (row, prediction, error against the calibration README's device-level peak)."""
    from planner.memory.fit import family_key, steady_rows

    rows = rows if rows is not None else load_rows()
    families: dict[tuple, list[dict]] = {}
    for r in rows:
        families.setdefault(family_key(r), []).append(r)
    out = []
    for fam in families.values():
        steady, _ = steady_rows(fam)
        for r in fam:
            if r["ok"] and not any(r is x for x in steady):
                pred, label = predict_calibrated(r["model"], measured_setup(r))
                if label.startswith("calibrated"):
                    out.append((r, pred, (pred - r["measured_peak_bytes"]) / r["measured_peak_bytes"]))
    return out


# -- the analytic activation peak against the trace (benchmarks/results/trace_vs_analytic.txt) ------

def load_trace_vs_analytic(path: Path = TRACE_VS_ANALYTIC) -> list[dict]:
    """The rows benchmarks/trace_vs_analytic.py wrote: model, LoRA rank, shape, traced and analytic MiB."""
    rows = []
    for line in _require(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[1].isdigit():
            rows.append({"model": parts[0], "rank": int(parts[1]), "batch": int(parts[2]),
                         "prompt_len": int(parts[3]), "completion_len": int(parts[4]),
                         "traced_mib": float(parts[5]), "analytic_mib": float(parts[6])})
    return rows


def evaluate_trace_vs_analytic(rows=None) -> dict:
    """The analytic activation peak's error against the trace, per row and at worst."""
    rows = rows if rows is not None else load_trace_vs_analytic()
    errs = [(r["analytic_mib"] - r["traced_mib"]) / r["traced_mib"] for r in rows]
    return {"rows": list(zip(rows, errs)), "max_abs_error": max(map(abs, errs)), "worst_under": min(errs)}


# -- each memory model's safety margin (planner/search/margins.py, MEMORY_MODEL_MARGIN) --------------------

def ceil_percent(fraction: float) -> float:
    """``fraction`` rounded up to a whole percent (0.0299 -> 0.03, 0.0331 -> 0.04)."""
    return math.ceil(round(fraction * 100, 6)) / 100


def sample_allowance(n: int) -> float:
    """The small-sample factor of the band rule: the worst of ``n`` held-out errors is only the
    n/(n+1) quantile a new error falls inside, so it is widened by (n + 1) / n."""
    return (n + 1) / n


def heldout_band(errors, allowance: float = 0.0) -> dict:
    """The band rule (planner/search/margins.py): the worst held-out under-prediction times
    :func:`sample_allowance` of how many errors there are, plus ``allowance``, rounded up to a whole
    percent. Returns the band and its parts."""
    errors = list(errors)
    n = len(errors)
    under = max(0.0, -min(errors))
    widened = under * sample_allowance(n)
    return {"band": ceil_percent(widened + allowance), "n": n, "worst_under": -under, "widened": widened,
            "allowance": allowance}


def margin_bands() -> dict:
    """Each memory model's margin from its held-out errors, by the rule planner/search/margins.py
    states (:func:`heldout_band`): a plan that fits must not run out of memory, so what counts is the
    worst under-prediction on data the model's numbers were not fitted on, widened for the sample size.

    - calibrated: the shipped profiles on the held-out steps of a calibrated family
      (:func:`evaluate_calibrated`);
    - analytic: the held-out steps and runs (:func:`evaluate_heldout`, :func:`evaluate_runs`) and the
      calibration rows, each family predicted by constants refitted without it (heldout_fits.lofo),
      plus the widest disagreement of the analytic activation peak with the trace of the real model
      code on architectures nobody measured (:func:`evaluate_trace_vs_analytic`, either direction);
    - fp32_autocast: the allocator replay of fp32 full fine-tuning under autocast (a simulation of the
      allocator on TRL's loop, not a measurement; :func:`evaluate_allocator_replay`).
    """
    from heldout_fits import lofo_heldout_errors

    cal = evaluate_calibrated()
    held, runs, trace = evaluate_heldout(), evaluate_runs(), evaluate_trace_vs_analytic()
    lofo = lofo_heldout_errors()
    replay = [e for r, _, e in evaluate_allocator_replay()["rows"] if r["weights"] == "fp32"]
    steps = [e for *_, e, _ in held["ran"]]
    analytic = heldout_band(steps + list(runs["heldout_errors"]) + lofo, trace["max_abs_error"])
    return {
        "calibrated": {**heldout_band([e for *_, e in cal["steps"]]), "runs_worst_under": cal["runs_worst_under"]},
        "analytic": {**analytic, "heldout_steps": len(steps), "heldout_steps_worst_under": held["worst_under"],
                     "heldout_runs": runs["heldout_errors"], "lofo_rows": len(lofo), "lofo_worst_under": min(lofo),
                     "trace_max_abs_error": trace["max_abs_error"], "trace_rows": len(trace["rows"])},
        "fp32_autocast": heldout_band(replay),
    }


# -- the two official TRL colocate notebooks (issue 15) -------------------------------------------
# Both ran on an A100-SXM4-40GB with vLLM 0.10.2 and TRL from git main in November 2025 (0.26.0.dev0,
# modelled as 0.26.0) with that month's transformers (4.57.1); reported figures are
# torch.cuda.memory_reserved after init and torch.cuda.max_memory_reserved (GiB). Only what the
# notebooks state is given: the dtype and the optimizer are left to the releases ("trl-default").
NOTEBOOK_STACK = {"gpu": "A100-40GB", "trl_version": "0.26.0", "transformers_version": "4.57.1",
                  "vllm_version": "0.10.2"}
TRL_NOTEBOOKS: dict[str, dict[str, Any]] = {
    "openenv_wordle_grpo (Qwen3-1.7B full FT, dtype not given)": dict(
        model="Qwen/Qwen3-1.7B", finetune="full", weights="trl-default",
        reported_init_gib=10.516, reported_peak_gib=36.68),
    "openenv_wordle_grpo_qlora (Qwen2.5-0.5B NF4, LoRA r=32)": dict(
        model="Qwen/Qwen2.5-0.5B-Instruct", finetune="lora", weights="nf4", lora_rank=32,
        reported_init_gib=4.57, reported_peak_gib=6.387),
}
# The settings each notebook states per turn: max_prompt_length=1400 is a cap (TRL passes
# max_prompt_length + max_completion_length = 1408 to colocated vLLM as max_model_len), not a prompt's size.
NOTEBOOK_SETTINGS: dict[str, Any] = dict(
    batch_size=1, gradient_accumulation_steps=64, steps_per_generation=64, num_generations=2,
    max_prompt_length=1400, completion_length=8, vllm_gpu_memory_utilization=0.1)
# The settled reading of the rollout (issue "honest numbers"), read from the notebooks, not tuned:
# - both notebooks' rollout_func calls rollout_once(..., max_turns=6), which stops after 6 turns;
# - each turn builds a fresh prompt (system prompt + game state) and extends the episode's prompt_ids and
#   completion_ids with that turn's; the notebook's own comment puts one turn's prompt at about 1296 tokens;
# - TRL lays the episode out as all prompts then all completions and does not truncate it, so the trainer
#   trains on 6 x 1296 prompt + 6 x 8 completion tokens while vLLM serves one turn at a time.
NOTEBOOK_TURNS = 6  # rollout_once(..., max_turns=6): the loop stops at 6
NOTEBOOK_PROMPT_TOKENS_PER_TURN = 1296  # the notebook's comment: one turn's prompt is about 1296 tokens


def predict_notebook(name: str, turns: int = NOTEBOOK_TURNS) -> dict:
    """One notebook predicted by ``planner.estimate`` from its stated settings: the estimate, the
    predicted reserved memory after init and at the peak (device-level less the predicted
    non-PyTorch memory: the notebooks reported the allocator's figures), and the error at the peak.

    ``turns``: ``estimate``'s ``rollout_turns``, the trained sequence as ``turns`` prompts of
    :data:`NOTEBOOK_PROMPT_TOKENS_PER_TURN` and completions of the stated length; vLLM serves one turn
    with the notebook's max_model_len (1400 + 8). The default is the notebooks' own 6; ``turns=1`` is the
    rejected one-turn reading, kept only to show what it predicted."""
    nb = TRL_NOTEBOOKS[name]
    s = dict(NOTEBOOK_SETTINGS)
    e = estimate(nb["model"], NOTEBOOK_STACK["gpu"], weights=nb["weights"], optim="trl-default",
                 finetune=nb["finetune"], lora_rank=nb.get("lora_rank", 16), batch_size=s["batch_size"],
                 prompt_length=NOTEBOOK_PROMPT_TOKENS_PER_TURN, completion_length=s["completion_length"],
                 gradient_accumulation_steps=s["gradient_accumulation_steps"],
                 steps_per_generation=s["steps_per_generation"],
                 vllm_gpu_memory_utilization=s["vllm_gpu_memory_utilization"],
                 vllm_max_model_len=s["max_prompt_length"] + s["completion_length"], rollout_turns=turns,
                 trl_version=NOTEBOOK_STACK["trl_version"], vllm_version=NOTEBOOK_STACK["vllm_version"],
                 transformers_version=NOTEBOOK_STACK["transformers_version"])
    assert e.phases is not None and e.vllm is not None
    non_torch = e.trainer.components["non_torch"] + e.vllm.non_torch_bytes
    peak_reserved = e.peak_bytes - non_torch
    init_reserved = e.phases["load"].peak_bytes - non_torch
    # the margin's rule (planner/search/margins.py): the reported peak reserved plus the predicted
    # non-PyTorch memory, against the predicted device-level peak (> 0: the run held more than predicted)
    excess = (nb["reported_peak_gib"] * GIB + non_torch) / e.peak_bytes - 1
    return dict(name=name, estimate=e, init_reserved=init_reserved, peak_reserved=peak_reserved,
                reported_init=nb["reported_init_gib"], reported_peak=nb["reported_peak_gib"],
                error=peak_reserved / (nb["reported_peak_gib"] * GIB) - 1, excess=excess)


def old_trl_miss() -> float:
    """``OLD_TRL_MISS`` by its rule: the worst notebook's excess under the settled reading, rounded up
    to a whole percent; 0.0 when both are over-predicted. Two runs: its fit set and its only evidence."""
    worst = max(predict_notebook(name)["excess"] for name in TRL_NOTEBOOKS)
    return ceil_percent(worst) if worst > 0 else 0.0


# -- a real TRL GRPOTrainer run traced on the CPU (benchmarks/real_grpo_trace.py) ----------------
# The planner's tensor terms: what a live-bytes count can see (no CUDA context, cuBLAS workspace or
# allocator reserve).
TRACE_TENSOR_TERMS = ("weights", "adapters", "optimizer_state", "gradients", "activations", "logprob_head",
                      "optimizer_step", "autocast_cache", "rollout_buffers")


def predict_real_grpo_trace(row: dict) -> tuple[dict, int, int | None]:
    """The planner for one traced run (its model config, optimizer, head and versions): its trainer
    terms, their tensor sum, and, for fp32 full fine-tuning under autocast, the forward moment of a
    later micro-batch (resident state, earlier micro-batches' gradients, the saved checkpoints and
    autocast's cached 16-bit weight copies: memory/trainer.py's ``forward``)."""
    from planner.memory.trainer import TrainerSetup, trainer_memory
    from planner.specs.model import spec_from_config

    s = row["settings"]
    spec = spec_from_config(row["config"], model_id=row["case"], source="real_grpo_trace")
    setup = TrainerSetup(weights={"float32": "fp32", "bfloat16": "bf16"}[row["dtype"]], finetune=row["finetune"],
                         lora_rank=row["lora_rank"] or 16, optim=row["optim"].replace("OptimizerNames.", "").lower(),
                         batch_size=s["per_device_train_batch_size"], prompt_length=s["prompt_length"],
                         completion_length=s["max_completion_length"], logprob_head="plain",
                         gradient_accumulation_steps=s["gradient_accumulation_steps"], completion_lengths="fixed",
                         mixed_precision=row["mixed_precision"],
                         rollout_sequences=s["per_device_train_batch_size"] * s["gradient_accumulation_steps"],
                         transformers_version=row["versions"]["transformers"])
    mem = trainer_memory(spec, setup)
    c = mem.components
    forward = None
    if setup.finetune == "full" and setup.weights == "fp32" and setup.mixed_precision != "no":
        forward = c["weights"] + c["optimizer_state"] + mem.forward_bytes
    return c, sum(c[k] for k in TRACE_TENSOR_TERMS), forward


TRAINING_PHASES = ("forward", "backward", "clip_grad_norm", "optimizer_step")


def training_peak(row: dict) -> int:
    """A traced run's peak over TRL's training phases. Its rollout phase is left out: on the CPU it
    generates with transformers (a KV cache, the whole model's decode), which colocated vLLM does
    instead on a GPU; the rest of the rollout (old log-probs, no grad) stays below the training peak."""
    return max(row["phase_peaks"][p] for p in TRAINING_PHASES)


def evaluate_real_grpo_trace(path: Path = REAL_GRPO_TRACE) -> list[tuple[dict, dict, int, int | None]]:
    """(row, planner terms, planner tensor peak, planner forward moment or None) per traced run."""
    rows = [json.loads(line) for line in _require(path).read_text().splitlines() if line.strip()]
    return [(r, *predict_real_grpo_trace(r)) for r in rows]


# -- the caching allocator replayed on fp32 full fine-tuning under autocast (benchmarks/allocator_notebook.py)
ALLOCATOR_REPLAY = REPO / "benchmarks" / "results" / "allocator_notebook.jsonl"
REPLAY_EXCLUDED = ("non_torch", "cublas_workspace")  # what a replay of the tensors' allocations cannot hold


def evaluate_allocator_replay(path: Path = ALLOCATOR_REPLAY) -> dict:
    """The planner's trainer against each replayed run: its tensors against the replayed peak allocated,
    its tensors plus ``allocator_reserve`` against the replayed peak reserved (fp32 weights, full
    fine-tuning, bf16 autocast, ``adamw_torch_fused``, TRL's plain head, the run's accumulation, fixed
    lengths). Returns ``rows`` (row, allocated error, reserved error), ``worst_under`` (the most negative
    reserved error of the fp32-under-autocast runs) and a ``text`` table."""
    from planner.memory.trainer import TrainerSetup, trainer_memory
    from planner.specs.model import resolve_model

    rows = [json.loads(line) for line in _require(path).read_text().splitlines() if line.strip()]
    out, lines = [], ["full fine-tuning, fp32 weights under bf16 autocast (bf16: a bf16 model, nothing to cast), "
                      "adamw_torch_fused, plain head, checkpointing; replayed through the caching allocator "
                      "(benchmarks/allocator_notebook.py) vs the planner",
                      f"{'model':<34} {'w':<4} {'tokens':>11} {'replay alloc':>12} {'planner':>8} {'replay resv':>11} "
                      f"{'planner':>8} {'error':>7}"]
    for r in rows:
        setup = TrainerSetup(weights=r["weights"], finetune="full", optim="adamw_torch_fused",
                             logprob_head="plain",
                             batch_size=1, prompt_length=r["prompt"], completion_length=r["completion"],
                             gradient_accumulation_steps=r["accumulation"], completion_lengths="fixed")
        c = trainer_memory(resolve_model(r["model"]), setup).components
        reserved = sum(v for k, v in c.items() if k not in REPLAY_EXCLUDED)
        tensors = reserved - c["allocator_reserve"]
        e_alloc = tensors / r["peak_allocated"] - 1
        e_res = reserved / r["peak_reserved"] - 1
        out.append((r, e_alloc, e_res))
        lines.append(f"{r['model']:<34} {r['weights']:<4} {r['prompt']:>5}+{r['completion']:<5} "
                     f"{r['peak_allocated'] / GIB:>12.2f} "
                     f"{tensors / GIB:>8.2f} {r['peak_reserved'] / GIB:>11.2f} {reserved / GIB:>8.2f} {e_res:>+7.1%}")
    worst = min(e for r, _, e in out if r["weights"] == "fp32")
    lines.append(f"peak reserved: planner {min(e for _, _, e in out):+.1%} to {max(e for _, _, e in out):+.1%} of the "
                 f"replay; tensors {min(e for _, e, _ in out):+.1%} to {max(e for _, e, _ in out):+.1%} of its "
                 f"peak allocated")
    return {"rows": out, "worst_under": worst, "text": "\n".join(lines)}
