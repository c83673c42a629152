"""Old TRL's full-logits log-prob head: the planner vs a CPU trace of each release's real code.

    python benchmarks/old_trl_head.py            # -> benchmarks/results/old_trl_head.txt

For each TRL release, a subprocess with that release first on sys.path (``pip install --no-deps
--target .cache/reproduce/trl_X trl==X``; ``requests`` beside it in .cache/reproduce/trl_deps, as TRL's vLLM
client imports it; benchmarks/reproduce.py builds both, ``$PLANNER_REPRODUCE_CACHE`` names another cache) builds the model from its real config with one decoder layer on the meta device
(the head's memory is vocab x hidden x tokens, not depth), prepares it as the setup does
(``engine=amp``: accelerate's ``Accelerator(mixed_precision="bf16").prepare_model``, which wraps
``forward`` in autocast and ``convert_outputs_to_fp32``; ``engine=deepspeed``: the bf16 model as
is, no output conversion), and runs the release's own ``GRPOTrainer._get_per_token_logps`` /
``_get_per_token_logps_and_entropies`` (unwrapped from ``profiling_decorator``) with the
arguments ``compute_loss`` passes (no ``batch_size``; ``compute_entropy=True`` from 0.20),
then a GRPO-shaped loss and backward, under the planner's live-bytes tracker
(planner/profiler/trace.py: every storage once, 512-byte blocks, CUDA SDPA substituted).
The head's traced peak = the step's peak minus what was live when the backbone returned (its
saved activations and hidden states). The planner's figure is ``logprob_head_bytes`` for the head
``default_logprob_head(release, engine)`` picks (what ``plan estimate --trl-version`` uses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the old releases, inside the repository's ignored area (benchmarks/reproduce.py's CACHE builds them)
CACHE = Path(os.environ.get("PLANNER_REPRODUCE_CACHE", ROOT / ".cache" / "reproduce"))

RELEASES = ("0.18.0", "0.23.0", "1.1.0")
MODELS = ("Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", "google/gemma-3-1b-it")
SHAPES = ((2, 512), (16, 3584))  # the head is linear in batch x completion  # (batch, completion)
ENGINES = ("amp", "deepspeed")
PROMPT = 64
TOLERANCE = 0.05


def worker(model_id: str, batch: int, completion: int, engine: str) -> dict:
    """Run in the subprocess: trace the release's real head on one shape; returns bytes."""
    import inspect
    import types
    import warnings

    warnings.simplefilter("ignore")
    import trl.import_utils as iu

    # transformers 5's _is_package_available returns (bool, version): TRL 0.2x reads the tuple as True
    for k, v in list(vars(iu).items()):
        if k.startswith("_") and k.endswith("_available") and isinstance(v, tuple):
            setattr(iu, k, bool(v[0]))
    import torch
    import trl
    from transformers import AutoModelForCausalLM
    from trl.trainer.grpo_trainer import GRPOTrainer

    from planner.profiler import trace as T
    from planner.specs.model import resolve_model

    spec = resolve_model(model_id)
    cfg = T._hf_config(spec)
    cfg.num_hidden_layers = 1
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:1]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.model.layers[0].parameters():  # something trains; lm_head frozen as with LoRA
        p.requires_grad_(True)
    model.enable_input_require_grads()
    model.train()
    if engine == "amp":
        from accelerate import Accelerator

        model = Accelerator(mixed_precision="bf16", cpu=True).prepare_model(model, device_placement=False)
    notes: list = []
    patches = T._cuda_behaviour_patches(notes)
    method = getattr(GRPOTrainer, "_get_per_token_logps_and_entropies", None) or GRPOTrainer._get_per_token_logps
    fn = inspect.unwrap(method)
    stub = types.SimpleNamespace(temperature=1.0, _entropy_bonus_enabled=False,
                                 model_kwarg_keys={"input_ids", "attention_mask", "logits_to_keep", "use_cache"})
    tracker = T._make_tracker(lambda shape: batch * completion)
    for t in list(model.parameters()) + list(model.buffers()):
        tracker.track(t)
    tracker.reset_peak()
    mark = {}
    def backbone_done(module, args, output):
        mark["backbone"] = tracker.current_bytes  # returns None: the output is left alone

    model.model.register_forward_hook(backbone_done)
    with T._patched(patches), torch.device("meta"), tracker:
        ids = torch.randint(0, cfg.vocab_size, (batch, PROMPT + completion))
        mask = torch.ones(batch, PROMPT + completion, dtype=torch.long)
        kw = {"compute_entropy": True} if "compute_entropy" in inspect.signature(fn).parameters else {}
        out = fn(stub, model, ids, mask, completion, **kw)
        logps = out[0] if isinstance(out, tuple) else out
        del out
        forward_peak = tracker.peak_bytes
        adv = torch.randn(batch, 1)
        loss = -(torch.exp(logps - logps.detach()) * adv).mean()
        del logps
        loss.backward()
    return {"trl": trl.__version__, "peak": tracker.peak_bytes - mark["backbone"],
            "forward_peak": forward_peak - mark["backbone"], "method": method.__name__,
            "vocab": cfg.vocab_size, "hidden": cfg.hidden_size}


def trace(release: str, model_id: str, batch: int, completion: int, engine: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CACHE / f"trl_{release}"), str(CACHE / "trl_deps"), str(ROOT)]))
    out = subprocess.run([sys.executable, __file__, "--worker", model_id, str(batch), str(completion), engine],
                         env=env, capture_output=True, text=True, timeout=900, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["trl"] != release:
        raise RuntimeError(f"wanted TRL {release}, the subprocess imported {result['trl']}")
    return result


def planned(release: str, model_id: str, batch: int, completion: int, engine: str) -> tuple[str, int]:
    from planner.memory.logprob_head import logprob_head_bytes
    from planner.search.estimation import default_logprob_head
    from planner.specs.model import resolve_model

    head = default_logprob_head(release, engine)
    return head, logprob_head_bytes(resolve_model(model_id), head, batch, completion)


def main() -> int:
    lines = ["# old TRL full-logits head: planner (logprob_head_bytes for default_logprob_head(release, engine)) vs "
             "the CPU trace of the release's real _get_per_token_logps* on the accelerate-prepared model",
             f"# prompt {PROMPT}, temperature 1.0, LoRA-like (lm_head frozen); bytes; error = planner / trace - 1",
             "release engine model batch completion head planner_bytes trace_bytes error"]
    worst = 0.0
    for release in RELEASES:
        for engine in ENGINES:
            for model_id in MODELS:
                for batch, completion in SHAPES:
                    t = trace(release, model_id, batch, completion, engine)
                    head, plan = planned(release, model_id, batch, completion, engine)
                    err = plan / t["peak"] - 1
                    worst = max(worst, abs(err))
                    line = f"{release} {engine} {model_id} {batch} {completion} {head} {plan} {t['peak']} {err:+.4f}"
                    print(line, flush=True)
                    lines.append(line)
    lines.append(f"# worst |error| {worst:.4f} (tolerance {TOLERANCE})")
    (ROOT / "benchmarks" / "results" / "old_trl_head.txt").write_text("\n".join(lines) + "\n")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
        sys.exit(0)
    sys.exit(main())
