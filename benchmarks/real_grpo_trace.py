"""Trace a real ``trl.GRPOTrainer`` run on the CPU and count the tensor bytes it holds (issue 15).

Every accuracy figure before this compared the planner with GRPO-shaped steps written here; a real
``GRPOTrainer`` also holds its rollout buffers, the optimizer ``TrainingArguments`` picks, clipping,
autocast over the dtype TRL loads, and whatever else its code keeps. This script runs the real
trainer (whatever TRL and transformers the Python running it has: a scratch venv with TRL 0.26.0
and transformers 4.57.1 is the stack of the official notebooks) for a few optimizer steps on a
randomly initialised model built from a shrunken config of a shipped architecture (real vocabulary,
so the vocabulary-sized terms are as large relative to the layers as in the real model), and
records live storage bytes with a ``TorchDispatchMode`` (every new storage once, rounded up to the
CUDA caching allocator's 512-byte blocks, dropped when it dies; autograd's in-place gradient sum
restored as in planner/profiler/trace.py), per phase of TRL's loop, and the largest live tensors at
the peak. No GPU, no network (a word-level tokenizer with the model's vocabulary size is built here).

    # measure (any venv with trl; prints one JSON line per case)
    .cache/reproduce/trl026/bin/python benchmarks/real_grpo_trace.py measure --out benchmarks/results/real_grpo_trace.jsonl
    # compare with the planner (the project's venv)
    python benchmarks/real_grpo_trace.py compare benchmarks/results/real_grpo_trace.jsonl

What a CPU run cannot show: CUDA kernels' own workspaces (cuBLAS, flash attention's backward
buffers; the CPU SDPA kernel saves what the CUDA flash kernel saves: output and log-sum-exp), the
caching allocator's reserve, bitsandbytes NF4 (the LoRA case uses a bf16 base) and vLLM.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Shrunken Qwen3 (the full fine-tuning notebook's family) and Qwen2 (the QLoRA notebook's): real
# vocabulary and tying, real head_dim/GQA ratios, few and narrow layers so a CPU runs it in seconds.
QWEN3_SMALL = dict(model_type="qwen3", vocab_size=151936, hidden_size=256, intermediate_size=768,
                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                   tie_word_embeddings=True, max_position_embeddings=4096, rms_norm_eps=1e-6,
                   rope_theta=1000000.0)
QWEN2_SMALL = dict(model_type="qwen2", vocab_size=151936, hidden_size=256, intermediate_size=768,
                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                   tie_word_embeddings=True, max_position_embeddings=4096, rms_norm_eps=1e-6,
                   rope_theta=1000000.0)

# name -> (config, finetune, dtype, lora rank, settings); the GRPO settings are the notebooks' (batch 1,
# 2 generations, steps_per_generation = accumulation, checkpointing with use_reentrant=False, bf16
# autocast on (GRPOConfig's default), the default optimizer, completion 8) at a CPU-sized length and
# accumulation (2 optimizer steps: the second has Adam's state and accumulated gradients).
SETTINGS = dict(per_device_train_batch_size=1, gradient_accumulation_steps=4, num_generations=2,
                max_completion_length=8, prompt_length=512, max_steps=2)
CASES = {
    "qwen3-full-fp32": (QWEN3_SMALL, "full", "float32", 0, SETTINGS),
    "qwen2-lora32-bf16": (QWEN2_SMALL, "lora", "bfloat16", 32, SETTINGS),
    # the full fine-tuning notebook's binding moment (the forward under autocast: every linear's bf16
    # copy cached, earlier gradients and the checkpoints alive) needs linear weights large against
    # the vocabulary, as in Qwen3-1.7B; a small vocabulary and wide MLP give that at a size this
    # CPU can run (bf16 matmuls here are ~0.3 GFLOP/s: a real 0.6B model would take hours)
    "qwen3-wide-full-fp32": (dict(QWEN3_SMALL, vocab_size=4096, intermediate_size=2048), "full", "float32", 0,
                             dict(SETTINGS, gradient_accumulation_steps=2, prompt_length=256)),
    # a real model's size (Qwen/Qwen3-0.6B's config), fp32 full fine-tuning without autocast (bf16=False:
    # fp32 matmuls are fast enough here): every layer term at full width and depth
    "qwen3-0.6b-full-fp32-noamp": (dict(QWEN3_SMALL, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                        max_position_embeddings=40960), "full", "float32", 0,
                                   dict(SETTINGS, gradient_accumulation_steps=2, prompt_length=384, bf16=False)),
}


def make_tracker():
    """planner/profiler/trace.py's live-bytes tracker on real tensors, which also keeps the phase of
    TRL's loop each storage was made in, each phase's peak and the largest live tensors at the peak."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from planner.profiler.trace import _make_tracker, _round_block

    class PhasedLiveBytes(type(_make_tracker(None))):  # type: ignore[misc]
        def __init__(self):
            super().__init__()
            self.info: dict[int, tuple] = {}  # storage -> (bytes, shape, dtype, op, phase)
            self.phase, self.op = "start", "resident"
            self.peaks: dict[str, int] = {}
            self.at_peak: list = []
            self.at_peak_phase = None
            self._next_snapshot = 0

        def register_resident(self, tensors) -> int:
            """Count what exists before the run (weights, adapters, buffers) once, so that a view
            of a weight (``t()`` in ``F.linear``) is not taken for a new storage."""
            phase, self.phase = self.phase, "resident"
            for t in tensors:
                self.track(t)
            self.phase = phase
            return self.current_bytes

        def _free(self, key, n_bytes):
            self.info.pop(key, None)
            super()._free(key, n_bytes)

        def track(self, t):
            before = len(self.live)
            super().track(t)
            if len(self.live) == before:  # not a tensor, or a storage already counted
                return
            st = t.untyped_storage()
            self.info[st._cdata] = (_round_block(st.nbytes()), tuple(t.shape), str(t.dtype).replace("torch.", ""),
                                    self.op, self.phase)
            if self.current_bytes > self.peaks.get(self.phase, 0):
                self.peaks[self.phase] = self.current_bytes
            if self.current_bytes == self.peak_bytes and self.current_bytes >= self._next_snapshot:
                self.at_peak = sorted(self.info.values(), reverse=True)[:25]  # near the peak: every +1 MiB
                self.at_peak_phase = self.phase
                self._next_snapshot = self.current_bytes + (1 << 20)

        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            self.op = func.__name__
            return super().__torch_dispatch__(func, types_, args, kwargs)

    return PhasedLiveBytes()


def _tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(vocab_size - 4)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>", padding_side="left",
                                   model_input_names=["input_ids", "attention_mask"])


def _phase(tracker, name, fn):
    def wrapped(*a, **k):
        before = tracker.phase
        tracker.phase = name
        try:
            return fn(*a, **k)
        finally:
            tracker.phase = before
    return wrapped


def measure(case: str) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    cfg, finetune, dtype, rank, s = CASES[case]
    torch.manual_seed(0)
    config = AutoConfig.for_model(**{**cfg, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3})
    model = AutoModelForCausalLM.from_config(config, torch_dtype=getattr(torch, dtype), attn_implementation="sdpa")
    tokenizer = _tokenizer(cfg["vocab_size"])
    words = [f"w{i}" for i in range(4, 4 + 997)]
    n_prompts = 64
    prompts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(s["prompt_length"])) for i in range(n_prompts)]
    peft_config = None
    if finetune == "lora":
        from peft import LoraConfig
        peft_config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"])

    def reward(completions, **kwargs):
        return [float(len(c)) for c in completions]

    out_dir = tempfile.mkdtemp()
    args = GRPOConfig(output_dir=out_dir, per_device_train_batch_size=s["per_device_train_batch_size"],
                      gradient_accumulation_steps=s["gradient_accumulation_steps"],
                      num_generations=s["num_generations"], max_completion_length=s["max_completion_length"],
                      max_steps=s["max_steps"], gradient_checkpointing=True,
                      gradient_checkpointing_kwargs={"use_reentrant": False}, use_cpu=True, bf16=s.get("bf16", True),
                      report_to="none", save_strategy="no", logging_steps=1, use_vllm=False,
                      generation_kwargs={"min_new_tokens": s["max_completion_length"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                              peft_config=peft_config)
    tracker = make_tracker()
    resident = tracker.register_resident([*trainer.model.parameters(), *trainer.model.buffers()])
    trainer._generate_and_score_completions = _phase(tracker, "rollout", trainer._generate_and_score_completions)
    trainer.compute_loss = _phase(tracker, "forward", trainer.compute_loss)
    acc = trainer.accelerator
    acc.backward = _phase(tracker, "backward", acc.backward)
    orig_create = trainer.create_optimizer

    def create_optimizer(*a, **k):
        opt = orig_create(*a, **k)
        opt.register_step_pre_hook(lambda *_: setattr(tracker, "phase", "optimizer_step"))
        opt.register_step_post_hook(lambda *_: setattr(tracker, "phase", "between"))
        return opt
    trainer.create_optimizer = create_optimizer
    acc.clip_grad_norm_ = _phase(tracker, "clip_grad_norm", acc.clip_grad_norm_)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracker:
            trainer.train()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return dict(case=case, config=cfg, finetune=finetune, dtype=dtype, lora_rank=rank, settings=s,
                versions=dict(trl=trl.__version__, transformers=transformers.__version__, torch=torch.__version__),
                optim=str(trainer.args.optim), optimizer=type(trainer.optimizer.optimizer
                                                              if hasattr(trainer.optimizer, "optimizer")
                                                              else trainer.optimizer).__name__,
                mixed_precision=str(acc.mixed_precision), resident_bytes=resident, trainable_params=trainable,
                peak_bytes=tracker.peak_bytes, peak_phase=tracker.at_peak_phase, phase_peaks=tracker.peaks,
                largest_at_peak=[list(x) for x in tracker.at_peak], seconds=round(time.perf_counter() - t0, 1))


def compare(path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from calibration_data import TRACE_TENSOR_TERMS, evaluate_real_grpo_trace, training_peak

    gib = 2**30
    for row, comp, predicted, forward in evaluate_real_grpo_trace(path):
        measured = training_peak(row)  # absolute: the resident weights are counted from the start
        print(f"{row['case']} (trl {row['versions']['trl']}, transformers {row['versions']['transformers']}, "
              f"{row['optimizer']}, autocast {row['mixed_precision']}): training peak {measured / gib:.4f} GiB, "
              f"planner {predicted / gib:.4f} GiB ({predicted / measured - 1:+.1%}); the run's peak "
              f"{row['peak_bytes'] / gib:.4f} GiB in {row['peak_phase']}")
        if forward is not None:
            fwd = row["phase_peaks"]["forward"]
            print(f"  forward under autocast (a later micro-batch): measured {fwd / 2**20:.1f} MiB, planner "
                  f"{forward / 2**20:.1f} MiB ({forward / fwd - 1:+.1%})")
        print("  planner terms (MiB): " + ", ".join(f"{k} {comp[k] / 2**20:.1f}" for k in TRACE_TENSOR_TERMS))
        print("  measured phase peaks (MiB): "
              + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in row["phase_peaks"].items()))
        print("  largest live tensors at the peak: " + "; ".join(
            f"{n / 2**20:.1f} MiB {dt}{shape} ({op}, {ph})" for n, shape, dt, op, ph in row["largest_at_peak"][:8]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--case", choices=sorted(CASES), action="append")
    m.add_argument("--out", type=Path, required=True, help="JSON lines, one per case, appended")
    c = sub.add_parser("compare")
    c.add_argument("path", type=Path)
    a = ap.parse_args()
    if a.cmd == "measure":
        for case in a.case or CASES:
            row = json.dumps(measure(case))  # the trainer logs to stdout: results go to --out
            with a.out.open("a") as f:
                f.write(row + "\n")
    else:
        compare(a.path)


if __name__ == "__main__":
    main()
