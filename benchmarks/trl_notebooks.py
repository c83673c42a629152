"""The two official TRL colocate notebooks (issue 15), predicted from their stated settings alone.

Both ran on an A100-SXM4-40GB with vLLM 0.10.2 and TRL from git main in November 2025 (between the
0.25.0 release of 5 Nov and 0.26.0 of 9 Dec: 0.26.0.dev0, modelled as 0.26.0; 0.25.x gives the same
dtype and optimizer), with the transformers of that month (4.57.x) and the torch vLLM 0.10.2 pins
(2.8.0). What those releases imply is not typed here but asked of planner.versions:

- the policy dtype when only a model id is given: ``trl_default_model_dtype`` (float32: TRL passes no
  dtype and transformers 4.x loads float32);
- the optimizer: ``default_optimizer`` (``adamw_torch_fused`` with torch 2.8);
- the log-prob head: ``trl_facts(...).fused_lm_head`` (no fused head before TRL 1.15: full logits);
- ``steps_per_generation`` = gradient accumulation (TRL's default), so the generation batch TRL keeps
  between generation and training is 1 x 64 sequences.

The vLLM side: vLLM 0.10.2 is modelled by planner.vllm if ``vllm_facts("0.10.2")`` exists; until then
the oldest modelled release (0.19.0, whose CUDA graphs also land outside the budget, as the QLoRA
notebook's log shows for 0.10.2) is used and the output says so. ``max_model_len`` is passed as prompt
+ completion (1408): the notebooks' vLLM started, and the KV cache a 0.1 utilisation leaves is far
below the models' own contexts, so ``vllm_max_model_length`` must have been at most that.

Compared: the reported ``torch.cuda.max_memory_reserved`` with the predicted peak less the
predicted non-PyTorch memory (trainer CUDA context + kernels, vLLM's non-torch growth): the
notebooks did not report device-level memory. Target (issue 15): within -2% / +10%.

    python benchmarks/trl_notebooks.py      # prints the table, writes benchmarks/results/trl_notebooks.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.errors import VersionError
from planner.estimation import colocated_vllm
from planner.gpu_spec import resolve_gpu
from planner.memory.trainer import TrainerSetup, trainer_memory
from planner.model_spec import resolve_model
from planner.phases import colocated_phases, merge_transient_bytes, trainer_blocks, vllm_blocks
from planner.units import GIB
from planner.versions import (
    VLLM_OLDEST_KNOWN,
    VLLM_TORCH_PINS,
    default_optimizer,
    default_weights_format,
    trl_facts,
    vllm_facts,
)

GPU = "A100-40GB"
TRL = "0.26.0"  # git main, November 2025 (0.26.0.dev0)
TRANSFORMERS = "4.57.1"  # the transformers release of that month
VLLM = "0.10.2"
TORCH = VLLM_TORCH_PINS[VLLM]
LOWER, UPPER = -0.02, 0.10

# Stated settings of each notebook, and what it reported (GiB, torch.cuda.*_memory_reserved).
NOTEBOOKS = {
    "openenv_wordle_grpo (Qwen3-1.7B full FT, dtype not given)": dict(
        model="Qwen/Qwen3-1.7B", finetune="full", quantized=False,
        reported_init_gib=10.516, reported_peak_gib=36.68),
    "openenv_wordle_grpo_qlora (Qwen2.5-0.5B NF4, LoRA r=32)": dict(
        model="Qwen/Qwen2.5-0.5B-Instruct", finetune="lora", quantized=True, lora_rank=32,
        reported_init_gib=4.57, reported_peak_gib=6.387),
}
COMMON = dict(batch_size=1, gradient_accumulation_steps=64, num_generations=2, prompt_length=1400,
              completion_length=8, vllm_gpu_memory_utilization=0.1, gradient_checkpointing=True)


def vllm_release() -> tuple[str, str]:
    """(release to model, note): 0.10.2 when planner.vllm knows it, else the oldest modelled one."""
    try:
        vllm_facts(VLLM)
        return VLLM, f"vLLM {VLLM} modelled"
    except VersionError:
        return VLLM_OLDEST_KNOWN, f"ASSUMED: vLLM {VLLM} is not modelled yet; vLLM {VLLM_OLDEST_KNOWN}'s arithmetic used"


def predict(name: str) -> dict:
    nb = NOTEBOOKS[name]
    spec = resolve_model(nb["model"])
    card = resolve_gpu(GPU)
    trl = trl_facts(TRL)
    weights = "nf4" if nb["quantized"] else default_weights_format(TRL, TRANSFORMERS, spec.dtype)
    optim = default_optimizer(TRANSFORMERS, TORCH)
    steps_per_generation = COMMON["gradient_accumulation_steps"]  # TRL's default
    setup = TrainerSetup(weights=weights, finetune=nb["finetune"], lora_rank=nb.get("lora_rank", 16),
                         optim=optim, gradient_checkpointing=COMMON["gradient_checkpointing"],
                         batch_size=COMMON["batch_size"], prompt_length=COMMON["prompt_length"],
                         completion_length=COMMON["completion_length"],
                         logprob_head="fused" if trl.fused_lm_head else "plain",
                         gradient_accumulation_steps=COMMON["gradient_accumulation_steps"],
                         transformers_version=TRANSFORMERS,
                         rollout_sequences=COMMON["batch_size"] * steps_per_generation)
    trainer = trainer_memory(spec, setup)
    version, note = vllm_release()
    capacity = colocated_vllm(spec, card, trainer.load_bytes, COMMON["vllm_gpu_memory_utilization"],
                              weights=weights, max_model_len=COMMON["prompt_length"] + COMMON["completion_length"],
                              max_num_seqs=COMMON["batch_size"] * steps_per_generation,
                              vllm_version=version, trl_version=TRL)
    blocks = {**trainer_blocks(trainer.components, {"merge_transient": merge_transient_bytes(spec, setup)}),
              **vllm_blocks(capacity)}
    phases = colocated_phases(blocks, sleep_mode=False)
    by_name = {p.name: p for p in phases.phases}
    peak_device = phases.peak_bytes
    non_torch = trainer.components["non_torch"] + capacity.non_torch_bytes
    peak_reserved = peak_device - non_torch
    init_reserved = by_name["load"].peak_bytes - non_torch
    err = peak_reserved / (nb["reported_peak_gib"] * GIB) - 1
    return dict(name=name, setup=setup, trainer=trainer, capacity=capacity, note=note, weights=weights,
                optim=optim, peak_reserved=peak_reserved, init_reserved=init_reserved,
                peak_device=peak_device, error=err, within=LOWER <= err <= UPPER,
                reported_peak=nb["reported_peak_gib"], reported_init=nb["reported_init_gib"])


def report() -> str:
    lines = [f"TRL {TRL} (git main, Nov 2025), transformers {TRANSFORMERS}, torch {TORCH} (pinned by vLLM {VLLM}), "
             f"{GPU}; target {LOWER:+.0%} / {UPPER:+.0%} on peak reserved"]
    for name in NOTEBOOKS:
        r = predict(name)
        c = r["trainer"].components
        lines += ["", name,
                  f"  implied: weights {r['weights']}, optim {r['optim']}, head {r['setup'].logprob_head}, "
                  f"rollout {r['setup'].rollout_sequences} sequences; {r['note']}",
                  "  trainer terms (GiB): " + ", ".join(f"{k} {v / GIB:.3f}" for k, v in c.items()),
                  f"  vLLM (GiB): weights {r['capacity'].weights_bytes / GIB:.2f}, activation "
                  f"{r['capacity'].activation_peak_bytes / GIB:.2f}, graphs {r['capacity'].cudagraph_bytes / GIB:.2f}, "
                  f"KV {r['capacity'].kv_cache_bytes / GIB:.2f}, starts {r['capacity'].startup_ok}",
                  f"  reserved after init: predicted {r['init_reserved'] / GIB:.2f} GiB, reported {r['reported_init']:.2f}",
                  f"  peak reserved: predicted {r['peak_reserved'] / GIB:.2f} GiB, reported {r['reported_peak']:.2f} "
                  f"-> {r['error']:+.1%} ({'within' if r['within'] else 'OUTSIDE'} {LOWER:+.0%}/{UPPER:+.0%}); "
                  f"device-level {r['peak_device'] / GIB:.2f} GiB"]
    return "\n".join(lines)


if __name__ == "__main__":
    text = report()
    print(text)
    out = Path(__file__).resolve().parent / "results" / "trl_notebooks.txt"
    out.write_text(text + "\n")
