"""`plan estimate`: evaluate one fixed setup (no solving) and print every memory term.

    plan estimate --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB --weights bf16 --lora-rank 16 \\
        --batch-size 8 --prompt-length 256 --completion-length 1792 --json
    plan estimate ... --vllm-gpu-memory-utilization 0.5      # add the colocated vLLM engine
    plan estimate --config grpo.yaml --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB   # a TRL config's run

Exit code 0 when the setup fits, 1 when it does not (or, with several GPUs, a check is an error:
then --output-dir writes nothing), 2 for a setup that cannot run at all (prompt + completion
beyond the context, --vllm-max-model-len below the sequence, int8 weights with colocated vLLM:
one line each, the request's own rules, planner.search.request.estimate_problems).

--config reads a TRL GRPO config (planner.search.trl_config, as `plan --config` does): the keys an estimate
models set its shape, trainer and vLLM options (CONFIG_ARGS), a flag wins over the file, other keys
(learning_rate, beta, ...) are ignored. As in TRL, steps_per_generation follows
generation_batch_size, else gradient_accumulation_steps, and a vLLM engine runs only with
use_vllm: true (colocated at the release's default utilisation unless the file gives one, or as a
server when vllm_mode says so). What neither sets keeps the estimate's defaults, which are not TRL's
for use_peft, dtype and optim: the output says so in one warning.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..api import ROLLOUT_TURNS_TRL_ONLY, estimate_layout
from ..errors import ConfigError, InvalidSetupError
from ..memory.trainer import COMPLETION_LENGTHS, binding_moment
from ..report.outputs import check_outputs, report_rating, write_if_ok
from ..search.estimation import TRL_DEFAULT, estimate
from ..search.results import Plan
from ..search.trl_config import (
    TRL_BATCH_DEFAULT,
    TRL_NUM_GENERATIONS_DEFAULT,
    continuous_batching_problem,
    trl_rule_problems,
)
from ..specs.versions import trl_facts
from . import _unsloth
from ._common import (
    add_config_arg,
    add_model_gpu_args,
    add_time_arguments,
    add_trainer_args,
    add_vllm_args,
    gib_str,
    model_arg,
    print_json,
    read_config,
    render_time,
    spellings,
    table,
    trainer_kwargs,
)
from ._topology import add_topology_arguments, gpu_arg
from ._topology import render as render_layout

# what neither a flag nor the --config file sets
DEFAULTS = {"batch_size": 1, "prompt_length": 256, "completion_length": 512, "gradient_accumulation_steps": 1,
            "sleep_mode": False}
# a --config file's keys (TRL's names, sorted by planner.search.trl_config) -> the estimate's arguments
CONFIG_ARGS = {
    "per_device_train_batch_size": "batch_size", "max_prompt_length": "prompt_length",
    "max_completion_length": "completion_length", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "steps_per_generation": "steps_per_generation", "num_generations": "num_generations",
    "vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization", "vllm_enable_sleep_mode": "sleep_mode",
    "vllm_max_model_length": "vllm_max_model_len", "tensor_parallel_size": "vllm_tensor_parallel_size",
    "lora_r": "lora_rank", "lora_target_modules": "lora_target_modules", "optim": "optim", "weights": "weights",
    "finetune": "finetune", "gradient_checkpointing": "gradient_checkpointing", "layout": "layout",
    "expandable_segments": "expandable_segments",  # the file's env: PYTORCH_CUDA_ALLOC_CONF
    "use_liger_kernel": "use_liger_kernel", "use_vllm": "use_vllm",
}
# with --config, what neither a flag nor the file sets takes TRL's default (TrainingArguments' batch of 8,
# GRPOConfig's 8 generations, one accumulation step, sleep mode off); the prompt length has no TRL default
CONFIG_DEFAULTS = {**DEFAULTS, "batch_size": TRL_BATCH_DEFAULT, "num_generations": TRL_NUM_GENERATIONS_DEFAULT}
# settings whose default here is not TRL's: (the file's keys, the flag, the estimate's default, the flags for TRL's)
NOT_TRL_DEFAULTS = ((("use_peft",), "finetune", "LoRA", "--finetune full"),
                    (("dtype", "torch_dtype", "load_in_4bit", "load_in_8bit"), "weights", "bf16",
                     f"--weights {TRL_DEFAULT}"),
                    (("optim",), "optim", "adamw_8bit", f"--optim {TRL_DEFAULT}"))


def add_arguments(p) -> None:
    add_model_gpu_args(p, model_required=False)
    add_config_arg(p, "the keys an estimate models set its shape, trainer and vLLM options, the others are ignored")
    add_trainer_args(p)
    # an estimate may describe the user's own run, which may name no dtype or optimizer
    for flag, what in (("--weights", "what TRL and transformers load when no dtype is given"),
                       ("--optim", "TrainingArguments' default optimizer")):
        action = p._option_string_actions[flag]
        action.choices = (*action.choices, TRL_DEFAULT)
        action.help = f"{action.help or ''} ({TRL_DEFAULT}: {what})".strip()
    g = p.add_argument_group("shape")
    g.add_argument("--batch-size", *spellings("per_device_train_batch_size"), dest="batch_size", type=int,
                   default=None, help="per_device_train_batch_size (sequences; default: 1)")
    g.add_argument("--prompt-length", *spellings("max_prompt_length"), dest="prompt_length", type=int, default=None,
                   help="prompt tokens per sequence (default: 256)")
    g.add_argument("--completion-length", *spellings("max_completion_length"), dest="completion_length", type=int,
                   default=None, help="completion tokens per sequence (default: 512)")
    g.add_argument("--typical-prompt-length", type=int, default=None,
                   help="the prompt length a batch pads to (TRL pads each batch to its longest prompt): the trainer "
                        "is estimated at it, vLLM's length keeps --prompt-length (default: --prompt-length)")
    g.add_argument(*spellings("steps_per_generation"), type=int, default=None,
                   help="(default: TRL's: a --config file's generation_batch_size / (batch x GPUs), else "
                        "gradient_accumulation_steps)")
    g.add_argument(*spellings("gradient_accumulation_steps"), type=int, default=None,
                   help="> 1: later micro-batches hold the earlier ones' gradients (default: 1)")
    g.add_argument("--rollout-turns", type=int, default=1,
                   help="a multi-turn rollout_func that returns every turn's prompt and completion ids "
                        "concatenated (TRL's OpenEnv examples): vLLM generates one turn of --prompt-length + "
                        "--completion-length at a time, the trainer trains on up to this many turns (default: 1)")
    g.add_argument("--completion-lengths", choices=COMPLETION_LENGTHS, default="varied",
                   help="varied (GRPO: the allocator's reserve of a whole run) or fixed (one isolated step)")
    g.add_argument("--transformers-version", default=None,
                   help="transformers release to model (default: installed, else newest known)")
    add_time_arguments(g)
    v = p.add_argument_group("colocated vLLM (off unless --vllm-gpu-memory-utilization is given)")
    v.add_argument(*spellings("vllm_gpu_memory_utilization"), type=float, default=None,
                   help="vLLM's share of the card (default: no vLLM)")
    v.add_argument("--no-vllm", dest="use_vllm", action="store_const", const=False, default=None,
                   help="TRL's use_vllm=False: the trainer generates batch x steps per generation completions "
                        "with transformers' generate; its generation phase is added (default: the training step "
                        "alone; with --config, as the file's use_vllm says)")
    v.add_argument("--sleep-mode", action="store_true", default=None, help="vllm_enable_sleep_mode=True")
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


def with_config(args) -> tuple[argparse.Namespace, tuple[str, ...]]:
    """The options with the --config file's values where no flag was given (a flag wins), TRL's
    vLLM engine and steps_per_generation, then the estimate's defaults; and the notes for the
    output (a file's utilisation TRL does not use; defaults of the estimate that are not TRL's)."""
    cfg = read_config(args)
    out = argparse.Namespace(**vars(args))
    out.model = model_arg(args, cfg)
    values: dict = {}
    notes: list[str] = []
    if cfg is not None:
        values, notes = _trl_vllm({**cfg.pins, **cfg.options}, cfg, args.trl_version)
    for key, dest in CONFIG_ARGS.items():
        unset = getattr(out, dest, None) == "auto" if dest == "layout" else getattr(out, dest, None) is None
        if key in values and unset:
            setattr(out, dest, values[key])
    if getattr(args, "use_vllm", None) is None and out.vllm_gpu_memory_utilization is not None:
        out.use_vllm = None  # a --vllm-gpu-memory-utilization flag adds the engine the file does not start
    if cfg is not None and out.completion_length is None:  # the TRL release's GRPOConfig default
        out.completion_length = trl_facts(args.trl_version).max_completion_length_default
    for name, default in (CONFIG_DEFAULTS if cfg is not None else DEFAULTS).items():
        if getattr(out, name) is None:
            setattr(out, name, default)
    if cfg is not None:
        trl_rules(out, values, cfg.path)
    if out.steps_per_generation is None:
        out.steps_per_generation = _steps_per_generation(out, values)
    if cfg is None:
        return out, ()
    left = [(keys[0], ours, trl) for keys, flag, ours, trl in NOT_TRL_DEFAULTS
            if not set(keys) & set(cfg.keys) and getattr(args, flag) is None]
    if left:
        notes.append(f"--config {cfg.path} sets no {', '.join(k for k, _, _ in left)}: estimated with "
                     f"{', '.join(o for _, o, _ in left)} (plan estimate's defaults); for TRL's own: "
                     f"{' '.join(f for _, _, f in left)}")
    return out, tuple(notes)


def trl_rules(args, values: dict, path: str) -> None:
    """TRL's own refusals (GRPOConfig.__post_init__, planner.search.trl_config.trl_rule_problems) of the
    setup as written: the file's values with the flags over them; one line each, exit 2."""
    given = {k: values.get(k) for k in ("generation_batch_size", "completions_per_step", "steps_per_generation",
                                        "gradient_accumulation_steps", "num_generations")}
    flags = dict(per_device_train_batch_size=args.batch_size, num_generations=args.num_generations,
                 steps_per_generation=args.steps_per_generation,
                 gradient_accumulation_steps=args.gradient_accumulation_steps)
    given.update({k: v for k, v in flags.items() if v is not None})
    world = args.num_gpus * args.num_nodes - ((args.server_gpus or 1) if args.layout == "server" else 0)
    problems = trl_rule_problems(given, path, world if world > 0 else 1)
    if problems:
        raise ConfigError("\n".join(problems))


def _trl_vllm(values: dict, cfg, trl_version: str | None) -> tuple[dict, list[str]]:
    """The file's settings with vLLM as TRL runs it: no engine unless ``use_vllm: true``; with it,
    ``vllm_mode`` and (colocated) ``vllm_gpu_memory_utilization`` default to the TRL release's."""
    values = dict(values)
    if cfg.use_vllm is not True:
        for key in ("layout", "vllm_enable_sleep_mode"):
            values.pop(key, None)
        values["use_vllm"] = False  # TRL's default: transformers' generate (a --vllm-gpu-memory-utilization flag wins)
        if line := continuous_batching_problem(dict(cfg.passthrough), cfg.path):
            raise ConfigError(line)
        if values.pop("vllm_gpu_memory_utilization", None) is None:
            return values, []
        return values, [f"--config {cfg.path} does not set use_vllm: true, so TRL starts no vLLM engine and its "
                        f"vllm_gpu_memory_utilization is not used (--vllm-gpu-memory-utilization adds one)"]
    facts = trl_facts(trl_version)
    values.setdefault("layout", facts.vllm_mode_default)
    if values["layout"] == "colocate":
        values.setdefault("vllm_gpu_memory_utilization", facts.vllm_gpu_memory_utilization_default)
    return values, []


def _steps_per_generation(args, values: dict):
    """TRL's rule (GRPOConfig): generation_batch_size / (per-device batch x training GPUs) when the
    file gives a generation batch, else gradient_accumulation_steps."""
    n = values.get("generation_batch_size") or values.get("completions_per_step")
    B, world = args.batch_size, args.num_gpus * args.num_nodes
    if args.layout == "server":
        world -= args.server_gpus or 1
    if n is None or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (n, B, world)):
        ga = args.gradient_accumulation_steps  # 1 where it is itself bad input (reported once, as itself)
        return ga if isinstance(ga, int) and ga > 0 else 1
    if n % (B * world):
        raise InvalidSetupError(f"--config {args.config}: generation_batch_size {n} is not a multiple of "
                                f"per_device_train_batch_size {B} x {world} training GPU(s) (TRL's rule)")
    return n // (B * world)


def run(args) -> int:
    if args.rollout_turns != 1 and getattr(args, "runtime", "trl") != "trl":
        raise InvalidSetupError(ROLLOUT_TURNS_TRL_ONLY)
    if (rc := _unsloth.dispatch(args, "estimate")) is not None:
        return rc
    accumulation_flag = args.gradient_accumulation_steps  # given on the command line (a layout checks it)
    if args.use_vllm is False and is_multi_gpu(args):
        raise InvalidSetupError("--no-vllm is modelled on one GPU: drop --num-gpus, --num-nodes and --layout, or "
                                "keep vLLM")
    args, notes = with_config(args)
    if is_multi_gpu(args):
        return _run_layout(args, notes, accumulation_flag)
    e = estimate(args.model, args.gpu, **trainer_kwargs(args), **fixed_kwargs(args),
                 gradient_accumulation_steps=args.gradient_accumulation_steps,
                 vllm_max_model_length=args.vllm_max_model_len, vllm_quantization=args.vllm_quantization,
                 vllm_max_num_seqs=args.vllm_max_num_seqs, vllm_max_num_batched_tokens=args.vllm_max_num_batched_tokens,
                 vllm_enforce_eager=args.vllm_enforce_eager, completion_lengths=args.completion_lengths,
                 vllm_tensor_parallel_size=_given(args.vllm_tensor_parallel_size, 1),
                 vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization, reserve_gib=args.reserve,
                 use_vllm=args.use_vllm)
    e = replace(e, warnings=e.warnings + notes, timing_inputs={**e.timing_inputs, **timing_inputs(args)})
    if args.json:
        print_json(e.to_dict())
    else:
        print("\n".join(x for x in (render(e), render_time(e.step_time())) if x))
    return report_rating([] if e.fits else ["the setup does not fit the GPU"], False)


def timing_inputs(args) -> dict:
    """The step time's inputs the flags give (planner.search.timing)."""
    return {"expected_completion_length": args.expected_completion_length,
            "reward_seconds_per_completion": args.reward_seconds_per_completion or 0.0}


def fixed_kwargs(args) -> dict:
    """The settings one GPU and a layout take alike, under the Python API's names (TRL's)."""
    return dict(per_device_train_batch_size=args.batch_size, max_prompt_length=args.prompt_length,
                max_completion_length=args.completion_length, steps_per_generation=args.steps_per_generation,
                vllm_enable_sleep_mode=args.sleep_mode, vllm_kv_cache_dtype=args.vllm_kv_cache_dtype,
                vllm_version=args.vllm_version, trl_version=args.trl_version,
                transformers_version=args.transformers_version, rollout_turns=args.rollout_turns,
                **({"typical_prompt_length": args.typical_prompt_length}
                   if getattr(args, "typical_prompt_length", None) is not None else {}))


def layout_estimate(args, *, gradient_accumulation_steps: int | None = None,
                    vllm_max_model_length: int | None = None) -> Plan:
    """:func:`planner.estimate_layout` of an estimate's options (`plan estimate`'s, or `plan check`'s
    as written): ``--layout auto`` means colocate, ``--engine auto`` DDP, an unset TP 1, an unset
    ``--server-gpus`` 1, an unset utilisation 0.3. Every flag goes to it, and it refuses those a
    layout does not model (the same lines as from Python)."""
    kw = dict(trainer_kwargs(args), **fixed_kwargs(args))
    for name in ("server_gpus", "server_host"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return estimate_layout(args.model, gpu_arg(args.gpu), num_gpus=args.num_gpus, num_nodes=args.num_nodes,
                           layout="colocate" if args.layout == "auto" else args.layout,
                           engine="ddp" if args.engine == "auto" else args.engine,
                           vllm_tensor_parallel_size=_given(args.vllm_tensor_parallel_size, 1),
                           num_generations=args.num_generations or 8,
                           vllm_gpu_memory_utilization=_given(args.vllm_gpu_memory_utilization, 0.3),
                           server_port=args.server_port, gradient_accumulation_steps=gradient_accumulation_steps,
                           vllm_max_model_length=vllm_max_model_length, vllm_quantization=args.vllm_quantization,
                           vllm_max_num_seqs=args.vllm_max_num_seqs,
                           vllm_max_num_batched_tokens=args.vllm_max_num_batched_tokens,
                           vllm_enforce_eager=args.vllm_enforce_eager, completion_lengths=args.completion_lengths,
                           reserve_gib=args.reserve, **kw)


def _run_layout(args, notes: tuple[str, ...] = (), accumulation_flag: int | None = None) -> int:
    """One fixed multi-GPU setup (:func:`layout_estimate`), printed and written."""
    check_outputs(output_dir=args.output_dir, force=args.force)
    d = layout_estimate(args, gradient_accumulation_steps=accumulation_flag,
                        vllm_max_model_length=args.vllm_max_model_len)
    d = replace(d, warnings=d.warnings + notes, timing_inputs={**d.timing_inputs, **timing_inputs(args)})
    written, errors = write_if_ok(d, output_dir=args.output_dir, force=args.force)
    if args.json:
        print_json(d.to_dict())
    else:
        print("\n".join(x for x in (render_layout(d), render_time(d.step_time())) if x))
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
        where = ("the card" if usable == e.gpu.total_bytes else
                 "the card less the reserve" if e.gpu.free_bytes is None else "the free memory")
        return f"does not fit, {gib_str(-spare).strip()} over {where}"
    return "does not fit: vLLM does not start (" + "; ".join(e.vllm.errors) + ")" if e.vllm is not None \
        else "does not fit"


def moment_rows(moments: dict[str, int]) -> list[tuple[str, str]]:
    """One row per moment of the step, the binding one marked."""
    bind = binding_moment(moments)
    return [(name, gib_str(v) + ("  <- binding" if name == bind else "")) for name, v in moments.items()]


def render(e) -> str:
    t = e.trainer
    s = e.setup
    r = e.extra.get("rollout")
    shape = (f"({s.prompt_length} + {s.completion_length}) tokens" if r is None else
             f"({r['turns']} turns x ({r['turn_prompt_length']} + {r['turn_completion_length']}) = "
             f"{s.prompt_length} + {s.completion_length}) tokens")
    head = (f"{e.model.model_id} ({e.model.n_params / 1e9:.2f} B params) on {e.gpu.name} "
            f"({e.gpu.total_bytes / 2**30:.2f} GiB)\n"
            f"{s.weights} {s.finetune}{f' r={s.lora_rank}' if s.finetune == 'lora' else ''}, {s.optim}, "
            f"batch {s.batch_size} x {shape}, "
            f"checkpointing {'on' if s.gradient_checkpointing else 'off'}, {s.logprob_head} log-prob head, "
            f"{s.completion_lengths} completion lengths"
            f"{f', {s.gradient_accumulation_steps} accumulation steps' if s.gradient_accumulation_steps > 1 else ''}; "
            f"memory model: {e.memory_model}")
    rows = [(name, gib_str(v)) for name, v in t.components.items()]
    rows += [("= trainer peak (device level)", gib_str(t.peak_bytes)),
             ("  trainer steady (between steps)", gib_str(t.steady_bytes))]
    what = ("a run's peak" if s.completion_lengths == "varied" or s.gradient_accumulation_steps > 1
            else "one isolated step")
    out = [head, table(rows, f"trainer ({what}, at its {t.binding_moment} moment):" if t.binding_moment
                       else f"trainer ({what}):")]
    if t.moment_components:
        out.append(table(moment_rows(t.moments), "trainer step, moment by moment (the peak is the largest):"))
    if e.phases is not None and e.vllm is None:  # no vLLM: transformers' generate in the trainer
        gen = {k: b for k, b in e.phases["generation"].components.items() if k.startswith("generate.")}
        out.append(table([(k.split(".", 1)[1], gib_str(b)) for k, b in gen.items()],
                         "generation without vLLM (transformers' generate):"))
        out.append(table([(p.name, gib_str(p.peak_bytes)) for p in e.phases.phases], "phases:"))
    elif e.phases is not None:
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
    reserve = (f" less {gib_str(e.gpu.reserve_bytes).strip()} reserve = {gib_str(e.gpu.usable_bytes).strip()}"
               if e.gpu.reserve_bytes else "")
    out.append(f"peak {gib_str(e.peak_bytes).strip()} of {gib_str(e.gpu.total_bytes).strip()}{reserve}: {verdict(e)}")
    out += [f"assumed: {k} {a['value']} ({a['source']})" for k, a in e.extra.get("assumptions", {}).items()]
    out += [f"warning: {w}" for w in e.warnings]
    return "\n".join(out)
