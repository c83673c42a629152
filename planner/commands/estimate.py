"""`plan estimate`: evaluate one fixed setup (no solving) and print every memory term.

    plan estimate --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB --weights bf16 --lora-rank 16 \\
        --batch-size 8 --prompt-length 256 --completion-length 1792 --json
    plan estimate ... --vllm-gpu-memory-utilization 0.5      # add the colocated vLLM engine

Exit code 0 when the setup fits, 1 when it does not (or, with several GPUs, a check is an error:
then --output-dir writes nothing), 2 for a setup that cannot run at all (prompt + completion
beyond the context, --vllm-max-model-len below the sequence, int8 weights with colocated vLLM:
one line each, the request's own rules, planner.request.estimate_problems).
"""

from __future__ import annotations

from ..api import estimate_layout
from ..estimation import TRL_DEFAULT, estimate
from ..memory.trainer import COMPLETION_LENGTHS
from ..outputs import check_outputs, report_rating, write_if_ok
from . import _unsloth
from ._common import (
    add_model_gpu_args,
    add_trainer_args,
    add_vllm_args,
    gib_str,
    print_json,
    spellings,
    table,
    trainer_kwargs,
)
from ._topology import add_topology_arguments, gpu_arg
from ._topology import render as render_layout


def add_arguments(p) -> None:
    add_model_gpu_args(p)
    add_trainer_args(p)
    # an estimate may describe the user's own run, which may name no dtype or optimizer
    for flag, what in (("--weights", "what TRL and transformers load when no dtype is given"),
                       ("--optim", "TrainingArguments' default optimizer")):
        action = p._option_string_actions[flag]
        action.choices = (*action.choices, TRL_DEFAULT)
        action.help = f"{action.help or ''} ({TRL_DEFAULT}: {what})".strip()
    g = p.add_argument_group("shape")
    g.add_argument("--batch-size", *spellings("per_device_train_batch_size"), dest="batch_size", type=int, default=1,
                   help="per_device_train_batch_size (sequences)")
    g.add_argument("--prompt-length", *spellings("max_prompt_length"), dest="prompt_length", type=int, default=256,
                   help="prompt tokens per sequence")
    g.add_argument("--completion-length", *spellings("max_completion_length"), dest="completion_length", type=int,
                   default=512, help="completion tokens per sequence")
    g.add_argument(*spellings("steps_per_generation"), type=int, default=1)
    g.add_argument(*spellings("gradient_accumulation_steps"), type=int, default=1,
                   help="> 1: later micro-batches hold the earlier ones' gradients")
    g.add_argument("--completion-lengths", choices=COMPLETION_LENGTHS, default="varied",
                   help="varied (GRPO: the allocator's reserve of a whole run) or fixed (one isolated step)")
    g.add_argument("--transformers-version", default=None,
                   help="transformers release to model (default: installed, else newest known)")
    v = p.add_argument_group("colocated vLLM (off unless --vllm-gpu-memory-utilization is given)")
    v.add_argument(*spellings("vllm_gpu_memory_utilization"), type=float, default=None,
                   help="vLLM's share of the card (default: no vLLM)")
    v.add_argument("--sleep-mode", action="store_true", help="vllm_enable_sleep_mode=True")
    add_vllm_args(p)
    g.add_argument(*spellings("num_generations"), type=int, default=None, help="group size (multi-GPU rules only)")
    add_topology_arguments(p)
    p.add_argument("--force", action="store_true", help="--output-dir: replace files that exist (default: refuse)")
    _unsloth.add_arguments(p)  # --runtime and the Unsloth flags


def add_parser(sub) -> None:
    p = sub.add_parser("estimate", help="memory of one fixed setup", description=__doc__)
    add_arguments(p)


def is_multi_gpu(args) -> bool:
    """Whether the options describe more than one GPU (or a server, or engine config files)."""
    return (args.num_gpus != 1 or args.num_nodes != 1 or "," in str(args.gpu) or args.layout == "server"
            or bool(args.output_dir))  # --num-gpus 0 goes where it is validated, not ignored


def _given(value, default):
    """The flag's value, or ``default`` when it was not given (0 is given: it is rejected, not replaced)."""
    return default if value is None else value


def run(args) -> int:
    if (rc := _unsloth.dispatch(args, "estimate")) is not None:
        return rc
    if is_multi_gpu(args):
        return _run_layout(args)
    e = estimate(args.model, args.gpu, **trainer_kwargs(args), batch_size=args.batch_size,
                 prompt_length=args.prompt_length, completion_length=args.completion_length,
                 vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                 vllm_max_model_len=args.vllm_max_model_len,
                 vllm_tensor_parallel_size=_given(args.vllm_tensor_parallel_size, 1),
                 vllm_kv_cache_dtype=args.vllm_kv_cache_dtype, vllm_quantization=args.vllm_quantization,
                 vllm_max_num_seqs=args.vllm_max_num_seqs,
                 vllm_max_num_batched_tokens=args.vllm_max_num_batched_tokens,
                 vllm_enforce_eager=args.vllm_enforce_eager, vllm_version=args.vllm_version,
                 trl_version=args.trl_version, steps_per_generation=args.steps_per_generation,
                 sleep_mode=args.sleep_mode, gradient_accumulation_steps=args.gradient_accumulation_steps,
                 completion_lengths=args.completion_lengths, transformers_version=args.transformers_version)
    if args.json:
        print_json(e.to_dict())
    else:
        print(render(e))
    return report_rating([] if e.fits else ["the setup does not fit the GPU"], False)


def _run_layout(args) -> int:
    """One fixed multi-GPU setup: ``--layout auto`` means colocate, ``--engine auto`` DDP, an unset
    TP 1, an unset ``--server-gpus`` 1."""
    check_outputs(output_dir=args.output_dir, force=args.force)
    kw = dict(trainer_kwargs(args), vllm_version=args.vllm_version, trl_version=args.trl_version,
              kv_cache_dtype=args.vllm_kv_cache_dtype)
    for name in ("server_gpus", "server_host"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    d = estimate_layout(args.model, gpu_arg(args.gpu), num_gpus=args.num_gpus, num_nodes=args.num_nodes,
                        layout="colocate" if args.layout == "auto" else args.layout,
                        engine="ddp" if args.engine == "auto" else args.engine,
                        vllm_tensor_parallel_size=_given(args.vllm_tensor_parallel_size, 1),
                        batch_size=args.batch_size, steps_per_generation=args.steps_per_generation,
                        num_generations=args.num_generations or 8, prompt_length=args.prompt_length,
                        completion_length=args.completion_length,
                        vllm_gpu_memory_utilization=_given(args.vllm_gpu_memory_utilization, 0.3),
                        sleep_mode=args.sleep_mode, server_port=args.server_port, **kw)
    written, errors = write_if_ok(d, output_dir=args.output_dir, force=args.force)
    if args.json:
        print_json(d.to_dict())
    else:
        print(render_layout(d))
        for path in written:
            print(f"wrote {path}")
    return report_rating(errors, bool(args.output_dir))


def verdict(e) -> str:
    """"fits" or "does not fit", with the reason in the same direction as the numbers."""
    usable = e.gpu.usable_bytes
    spare = usable - e.peak_bytes
    if e.fits:
        return f"fits, {gib_str(spare).strip()} to spare"
    if spare < 0:
        where = "the card" if usable == e.gpu.total_bytes else "the free memory"
        return f"does not fit, {gib_str(-spare).strip()} over {where}"
    return "does not fit: vLLM does not start (" + "; ".join(e.vllm.errors) + ")" if e.vllm is not None \
        else "does not fit"


def render(e) -> str:
    t = e.trainer
    s = e.setup
    head = (f"{e.model.model_id} ({e.model.n_params / 1e9:.2f} B params) on {e.gpu.name} "
            f"({e.gpu.total_bytes / 2**30:.2f} GiB)\n"
            f"{s.weights} {s.finetune}{f' r={s.lora_rank}' if s.finetune == 'lora' else ''}, {s.optim}, "
            f"batch {s.batch_size} x ({s.prompt_length} + {s.completion_length}) tokens, "
            f"checkpointing {'on' if s.gradient_checkpointing else 'off'}, {s.logprob_head} log-prob head, "
            f"{s.completion_lengths} completion lengths"
            f"{f', {s.gradient_accumulation_steps} accumulation steps' if s.gradient_accumulation_steps > 1 else ''}; "
            f"memory model: {e.memory_model}")
    rows = [(name, gib_str(v)) for name, v in t.components.items()]
    rows += [("= trainer peak (device level)", gib_str(t.peak_bytes)),
             ("  trainer steady (between steps)", gib_str(t.steady_bytes))]
    what = ("a run's peak" if s.completion_lengths == "varied" or s.gradient_accumulation_steps > 1
            else "one isolated step")
    out = [head, table(rows, f"trainer ({what}):")]
    if e.phases is not None:
        v = e.vllm
        out.append(table([("budget (ceil(total x util))", gib_str(v.budget_bytes)),
                          ("weights", gib_str(v.weights_bytes)),
                          ("activation peak", gib_str(v.activation_peak_bytes)),
                          ("non-torch", gib_str(v.non_torch_bytes)),
                          ("CUDA graphs", gib_str(v.cudagraph_bytes)),
                          ("KV cache", gib_str(v.kv_cache_bytes)),
                          ("KV cache tokens", f"{v.kv_cache_tokens:,}"),
                          ("max concurrency", f"{v.max_concurrency:.2f}x"),
                          ("starts", "yes" if v.startup_ok else "NO: " + "; ".join(v.errors))],
                         "colocated vLLM:"))
        out.append(table([(p.name, gib_str(p.peak_bytes)) for p in e.phases.phases],
                         f"phases (sleep mode {'on' if e.phases.sleep_mode else 'off'}):"))
    out.append(f"peak {gib_str(e.peak_bytes).strip()} of {gib_str(e.gpu.total_bytes).strip()}: {verdict(e)}")
    out += [f"assumed: {k} {a['value']} ({a['source']})" for k, a in e.extra.get("assumptions", {}).items()]
    out += [f"warning: {w}" for w in e.warnings]
    return "\n".join(out)
