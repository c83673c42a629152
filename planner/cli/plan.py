"""`plan` (no subcommand): solve for the GRPO + colocated vLLM configuration that fits.

    plan --model Qwen/Qwen2.5-3B-Instruct --gpu L4 --max-completion-length 1024
    plan --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB --per_device_train_batch_size 8 --num_generations 8
    plan --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB --max-completion-length 2048 --json
    plan --config grpo.yaml --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB --output run.yaml
    plan --model meta-llama/Llama-3.1-8B-Instruct --gpu A100-40GB --output grpo.yaml --plot memory.png

Pins: a TRL setting given as a flag (either spelling) or read from --config is held as given; the
solver chooses only the rest and says what stopped a larger plan (a memory phase, a cap or a pin).
"""

from __future__ import annotations

from dataclasses import replace

from ..api import ROLLOUT_TURNS_TRL_ONLY, given_values, plan_from_request
from ..errors import ConfigError, InvalidSetupError
from ..report import outputs
from ..report.changes import plan_changes, render_changes
from ..report.emit import GRPO_YAML
from ..report.next_steps import next_steps
from ..search.margins import MEMORY_MODEL_MARGIN
from ..search.request import KV_CACHE_DTYPES, SLEEP_MODES, PlanRequest, plan_request
from ..search.results import OBJECTIVE, Plan, engine_concurrency
from ..search.trl_config import trl_rule_problems
from . import _unsloth
from ._common import (
    add_config_arg,
    add_model_gpu_args,
    add_time_arguments,
    add_trainer_args,
    gib_str,
    gpu_with_reserve,
    margin_text,
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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _utilization_range(text: str, flag: str = "--utilization-range") -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.replace(":", ",").split(",")]
    except ValueError:
        raise InvalidSetupError(f"{flag} must be LO,HI (e.g. 0.3,0.7), got '{text}'") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise InvalidSetupError(f"{flag} must be LO,HI (e.g. 0.3,0.7), got '{text}'")
    return parts[0], parts[1]


def _bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise InvalidSetupError(f"expected true or false, got '{text}'")


# pins given as flags: (TRL name, type, help); each flag takes both spellings
PIN_FLAGS = (
    ("per_device_train_batch_size", int, "micro-batch per GPU (default: the solver chooses, up to --max-batch)"),
    ("gradient_accumulation_steps", int, "= steps_per_generation here (default: the solver chooses)"),
    ("steps_per_generation", int, "= gradient_accumulation_steps here (default: the solver chooses)"),
    ("generation_batch_size", int, "completions per generation, all GPUs (default: the solver chooses)"),
    ("completions_per_step", int, "the effective batch: completions per optimizer step, all GPUs "
                                  "(= generation_batch_size; default: the solver chooses)"),
    ("num_generations", int, "completions per prompt (default: the solver picks, preferring TRL's 8)"),
    ("max_completion_length", int, "completion length in tokens, held exactly (default: the installed TRL's "
                                   "default, 512 in 1.16, as a target the solver may cut)"),
    ("vllm_gpu_memory_utilization", float, "vLLM's share of the card (default: the highest in "
                                           "--utilization-range that fits)"),
    ("vllm_enable_sleep_mode", _bool, "true or false (default: --sleep-mode auto)"),
    ("vllm_max_model_length", int, "vLLM's max_model_len (default: prompt + completion length)"),
)


# the keys --rechoose may release: the settings the solver chooses when none is given
RECHOOSABLE = (*(n for n, _, _ in PIN_FLAGS), "optim", "vllm_mode")


def rechosen(args) -> tuple[str, ...]:
    """The keys ``--rechoose`` names (``all``: every re-choosable key); an unknown key is one line."""
    text = getattr(args, "rechoose", None)
    if text is None:
        return ()
    keys = tuple(k.strip() for k in str(text).split(",") if k.strip())
    if keys == ("all",):
        return RECHOOSABLE
    bad = [k for k in keys if k not in RECHOOSABLE]
    if bad or not keys:
        raise InvalidSetupError(f"--rechoose {text!r}: {', '.join(bad) or 'no key'} is not a key the planner "
                                f"re-chooses; give 'all' or some of {', '.join(RECHOOSABLE)}")
    return keys


def add_arguments(p) -> None:
    """Every option of `plan` (shared with `plan check`)."""
    add_model_gpu_args(p, gpu_default="auto", model_required=False)
    if not p.description or "Pins:" not in p.description:
        p.description = ((p.description + "\n\n") if p.description else "") + __doc__.split("\n", 2)[2]
    add_config_arg(p, "its modelled keys become pins, the others pass through to the output config")
    add_trainer_args(p)
    pins = p.add_argument_group("pins (TRL's names, either spelling; each held as given)")
    for name, kind, text in PIN_FLAGS:
        pins.add_argument(*spellings(name), dest=name, type=kind, default=None, help=text)
    pins.add_argument("--prompt-length", *spellings("max_prompt_length"), dest="max_prompt_length", type=int,
                      default=None, help="longest prompt in tokens (default: 256; sets vllm_max_model_length)")
    p.add_argument("--no-vllm", dest="use_vllm", action="store_const", const=False, default=None,
                   help="TRL's use_vllm=False: generate with transformers' generate in the trainer (one GPU; the "
                        "generation phase holds its KV cache); default: plan vLLM, or the --config file's use_vllm")
    pins.add_argument("--typical-prompt-length", type=int, default=None,
                      help="the prompt length a batch pads to (TRL pads each batch to its longest prompt): the "
                           "trainer is planned at it, vLLM keeps the longest (default: the longest, the safe side)")
    g = p.add_argument_group("targets and caps")
    g.add_argument("--target-completion-length", type=int, default=None,
                   help="a completion length the solver may cut to fit (default: TRL's default)")
    g.add_argument("--utilization-range", default=None, help="vllm_gpu_memory_utilization searched, LO,HI "
                                                              "(default: 0.3,0.7)")
    g.add_argument("--max-batch", type=int, default=None, help="the largest micro-batch tried (default: 64)")
    g.add_argument("--max-completions-per-step", type=int, default=None,
                   help="the most completions per GPU per optimizer step (default: 512)")
    g.add_argument("--rollout-turns", type=int, default=None,
                   help="a multi-turn rollout_func that returns every turn's prompt and completion ids "
                        "concatenated (TRL's OpenEnv examples): vLLM serves one turn of prompt + completion, the "
                        "trainer trains on up to this many (default: 1)")
    add_time_arguments(g)
    g.add_argument("--margin", type=float, default=None,
                   help=f"safety margin as a fraction of the card (default: from the memory model: "
                        f"{MEMORY_MODEL_MARGIN['calibrated']:g} calibrated, {MEMORY_MODEL_MARGIN['analytic']:g} "
                        f"analytic, their measured error bands; more for setups the measurements do not cover)")
    g.add_argument("--sleep-mode", choices=SLEEP_MODES, default=None,
                   help="vLLM sleep mode while training (default: auto, the solver chooses)")
    g.add_argument("--vllm-kv-cache-dtype", choices=KV_CACHE_DTYPES, default=None, help="(default: auto)")
    g.add_argument("--vllm-version", default=None, help="vLLM release to plan for (default: installed, else the "
                                                        "newest the TRL release supports)")
    g.add_argument("--trl-version", default=None, help="TRL release to plan for (default: installed, else newest)")
    g.add_argument("--transformers-version", default=None,
                   help="transformers release to plan for (default: installed, else newest)")
    g.add_argument("--server-utilization-range", default=None,
                   help="the vLLM server's gpu_memory_utilization searched (--layout server), LO,HI "
                        "(default: 0.5,0.95)")
    g.add_argument("--rechoose", default=None, metavar="KEY[,KEY...]",
                   help="let the planner re-choose these keys the --config file (or a flag) sets, or 'all' "
                        f"(default: every key given is held; re-choosable: {', '.join(RECHOOSABLE)})")
    add_topology_arguments(p)  # --num-gpus, --num-nodes, --layout, --engine, --output-dir, ...
    o = p.add_argument_group("output")
    o.add_argument("--output", default=None, help="write the GRPOConfig as YAML TRL's parser reads")
    o.add_argument("--plot", default=None,
                   help="draw the per-phase memory picture to this .png, .pdf or .svg (no extension: .png)")
    o.add_argument("--force", action="store_true", help="replace files that exist (default: refuse)")
    o.add_argument("--top", type=int, default=None, metavar="N",
                   help="also list the N best configurations after the plan's: memory, predicted step time and "
                        "why each lost (the JSON's runners_up)")
    _unsloth.add_arguments(p)  # --runtime and the Unsloth flags


def request_from_args(args) -> PlanRequest:
    """The one request the options describe (validated: every problem at once): the --config
    file's pins and options, then the flags (a flag wins over the file)."""
    cfg = read_config(args)
    pins: dict = dict(cfg.pins) if cfg else {}
    sources = {k: "config file" for k in pins}
    options: dict = dict(cfg.options) if cfg else {}
    if cfg is not None and cfg.use_vllm is False:  # said in the file: TRL generates with transformers
        options["use_vllm"] = False
    trainer = trainer_kwargs(args)
    for flag, pin in (("lora_r", "lora_r"), ("lora_target_modules", "lora_target_modules"), ("optim", "optim")):
        if trainer.get(flag) is not None:
            pins[pin] = trainer.pop(flag)
            sources[pin] = "pinned"
    options.update({k: v for k, v in trainer.items() if v is not None or k not in options})  # the file's env:
    for name in [n for n, _, _ in PIN_FLAGS] + ["max_prompt_length"]:
        value = getattr(args, name, None)
        if value is not None:
            pins[name] = value
            sources[name] = "pinned"
    released = rechosen(args)
    for key in released:  # the planner re-chooses these (--rechoose)
        pins.pop(key, None)
        sources.pop(key, None)
    if "vllm_mode" in released:
        options.pop("layout", None)
    if cfg is not None:  # TRL's own refusals of what the file and the flags set (the solver chooses the rest)
        world = args.num_gpus * args.num_nodes - ((args.server_gpus or 1) if args.layout == "server" else 0)
        if problems := trl_rule_problems(pins, cfg.path, max(world, 1), fill_defaults=False):
            raise ConfigError("\n".join(problems))
    given = dict(max_completion_length=args.target_completion_length, margin=args.margin,
                 sleep_mode=args.sleep_mode, vllm_version=args.vllm_version, trl_version=args.trl_version,
                 kv_cache_dtype=args.vllm_kv_cache_dtype, tensor_parallel_size=args.vllm_tensor_parallel_size,
                 max_batch=args.max_batch, max_completions_per_step=args.max_completions_per_step,
                 rollout_turns=args.rollout_turns, transformers_version=args.transformers_version,
                 server_gpus=args.server_gpus, server_host=args.server_host,
                 typical_prompt_length=args.typical_prompt_length, use_vllm=args.use_vllm,
                 expected_completion_length=args.expected_completion_length,
                 reward_seconds_per_completion=args.reward_seconds_per_completion)
    for name in ("utilization_range", "server_utilization_range"):
        if getattr(args, name) is not None:
            given[name] = _utilization_range(getattr(args, name), _flag(name))
    options.update({k: v for k, v in given.items() if v is not None})
    options.update(num_gpus=args.num_gpus, num_nodes=args.num_nodes, server_port=args.server_port)
    for name in ("layout", "engine"):  # the file's vllm_mode unless the flag says otherwise
        if getattr(args, name) != "auto" or name not in options:
            options[name] = getattr(args, name)
    return plan_request(model_arg(args, cfg), gpu_with_reserve(args, gpu_arg(args.gpu)), pin=pins,
                        sources=tuple(sources.items()), passthrough=dict(cfg.passthrough) if cfg else {}, **options)


def with_file_changes(p: Plan, req: PlanRequest, args) -> Plan:
    """The plan with its ``changes`` read against the --config file's values too (a key ``--rechoose``
    released: from the file's value, not TRL's default)."""
    if p.runtime != "trl" or not getattr(args, "config", None):
        return p
    from ..search.trl_config import read_grpo_config

    cfg = read_grpo_config(args.config, trl_version=args.trl_version)
    given = given_values(req, cfg.trl_values())
    return replace(p, changes=plan_changes(p, given, req.vllm.trl_version, req.trainer.transformers_version))


def plan_from_args(args) -> Plan:
    """The `Plan` the options ask for (used by `plan` and `plan check`), for 1..N GPUs."""
    return plan_from_request(request_from_args(args))


def _outputs(args) -> dict:
    return dict(output=getattr(args, "output", None), plot=getattr(args, "plot", None),
                output_dir=getattr(args, "output_dir", None), force=bool(getattr(args, "force", False)))


def written_roles(args, written) -> dict:
    """What was written, by the file's role (``grpo.yaml``, ``launch.sh``, ...): ``--output`` is the
    grpo.yaml (whatever its name), ``--output-dir``'s files keep theirs (its grpo.yaml wins for a
    layout: launch.sh reads that one)."""
    from pathlib import Path

    out = {}
    paths = {str(p) for p in written}
    if args.output is not None and str(args.output) in paths:
        out[GRPO_YAML] = str(args.output)
    folder = getattr(args, "output_dir", None)
    for path in written:
        if folder is not None and Path(path).parent == Path(folder):
            out[Path(path).name] = str(path)
    return out


def check_outputs(args) -> None:
    """Before any planning: the --plot format, the packages the writers need, existing targets."""
    outputs.check_outputs(**_outputs(args))


def run(args) -> int:
    if args.rollout_turns not in (None, 1) and getattr(args, "runtime", "trl") != "trl":
        raise InvalidSetupError(ROLLOUT_TURNS_TRL_ONLY)
    if (rc := _unsloth.dispatch(args, "plan", request_from_args)) is not None:
        return rc
    check_outputs(args)
    req = request_from_args(args)
    p = with_file_changes(plan_from_request(req, top=args.top or 0), req, args)
    written, errors = outputs.write_if_ok(p, **_outputs(args))
    files = written_roles(args, written)
    p = replace(p, next_steps=next_steps(p, files, request=req, outputs=_outputs(args),
                                         config=getattr(args, "config", None)))
    if args.json:
        d = p.to_dict()
        if written:
            d["written"] = {path.name: str(path) for path in written}
        print_json(d)
    else:
        print(render(p))
        if runners := render_runners_up(p):
            print(runners)
        print(render_next_steps(p))
        for path in written:
            print(f"wrote {path}")
    return outputs.report_rating(errors, any(v for k, v in _outputs(args).items() if k != "force"))


def _value(v) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def render_assumptions(p: Plan) -> str:
    """The assumptions as an aligned table: key, value, source, note."""
    rows = []
    for key, a in p.assumptions.items():
        value = _value(a["value"])
        if "installed" in a:
            value += f" (installed: {a['installed'] or 'none'})"
        note = a.get("note") or a.get("expected_error") or ""
        rows.append((key, value, a["source"], note))
    if not rows:
        return ""
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    out = ["assumptions:"]
    out += [f"  {k:<{w[0]}}  {v:<{w[1]}}  {src:<{w[2]}}  {note}".rstrip() for k, v, src, note in rows]
    return "\n".join(out)


def render_binding(p: Plan) -> str:
    b = p.binding
    if not b:
        return ""
    kind = {"memory": "memory phase", "cap": "cap", "pin": "pin", "rule": "TRL rule", "target": "target"}
    out = [f"binding: {kind.get(b['constraint'], b['constraint'])} {b['name']}: {b['detail']}"]
    for name, lim in b.get("limits", {}).items():
        out.append(f"  {name:<28} {kind.get(lim['constraint'], lim['constraint']):<12} {lim['detail']}")
    return "\n".join(out)


def render_next_steps(p: Plan) -> str:
    n = p.next_steps
    if not n:
        return ""
    out = ["next:"]
    if n.get("write_first"):
        out.append(f"  # write the files first: {n['write_first']}")
    if n.get("unflagged"):
        out.append(f"  # no flag carries {', '.join(n['unflagged'])}: the Python call below does")
    out += [f"  {line}" for line in n["command"].split("\n")]
    out.append("  # or in Python:")
    out += [f"  {line}" for line in n["python"].split("\n")]
    return "\n".join(out)


def budget_label(p: Plan) -> str:
    """The budget line's name: the card less the margin, and less the reserve when one is kept."""
    reserve = p.gpu.reserve_bytes
    return f"budget (card - margin - {reserve / 2**30:g} GiB reserve)" if reserve else "budget (card - margin)"


def render_runners_up(p: Plan) -> str:
    """`plan --top N`: the plan and its runners-up, one line each."""
    rows = p.extra.get("runners_up")
    if not rows:
        return ""
    out = ["runners-up (peak is the search's bound):"]
    for r in rows:
        tp = f" TP {r['vllm_tensor_parallel_size']}" if r["vllm_tensor_parallel_size"] > 1 else ""
        out.append(f"  {r['layout']} {r['engine']}{tp}: {r['completions_per_step']} completions x {r['completion_length']}"
                   f" tokens, micro-batch {r['micro_batch']}, util {r['utilization']:g}"
                   f"{', sleep' if r['sleep'] else ''}; peak {gib_str(r['peak_bytes']).strip()}, "
                   f"{r['step_seconds']:.1f} s/step: {r['why_lost']}")
    return "\n".join(out)


def render(p: Plan) -> str:
    if p.multi_gpu:
        return "\n".join(x for x in (render_layout(p), render_time(p.step_time()), render_binding(p),
                                     render_assumptions(p)) if x)
    cfg = p.config
    role = p.training_rank
    pinned = set(p.pinned)
    out = [f"{p.model.model_id} on {p.gpu.name} ({p.gpu.total_bytes / 2**30:.2f} GiB); {margin_text(p)}; "
           f"memory model: {p.memory_model}",
           table([(k, _value(v) + ("  (pinned)" if k in pinned else "")) for k, v in cfg.items()], "GRPOConfig:")]
    phase_rows = [(ph.name, gib_str(ph.peak_bytes)) for ph in role.phases]
    phase_rows.append((budget_label(p), gib_str(p.budget_bytes)))
    phase_rows.append(("headroom", gib_str(p.headroom_bytes)))
    out.append(table(phase_rows, "peak per phase:"))
    v = p.vllm
    if v is not None:
        out.append(table([("KV cache", gib_str(v.kv_cache_bytes)), ("KV tokens", f"{v.kv_cache_tokens:,}"),
                          ("max concurrency", f"{v.max_concurrency:.2f}x at {v.max_model_len} tokens (KV cache)"),
                          ("sequences at once", f"{engine_concurrency(v)} (max_num_seqs {v.max_num_seqs})"),
                          ("generation waves", str(p.waves))], "vLLM:"))
    out.append(render_time(p.step_time()))
    out.append(render_changes(p.changes))
    out.append("objective: " + " > ".join(OBJECTIVE))
    out += [x for x in (render_binding(p), render_assumptions(p)) if x]
    out.append("why:\n" + "\n".join(f"  - {r}" for r in p.reasons))
    flagged = [c for c in p.checks if c.severity != "info"]
    # a warning that is also a flagged check (an unmodelled architecture) is printed once, as the check
    out += [f"warning: {w}" for w in p.warnings if not any(w.startswith(c.message) for c in flagged)]
    if flagged:
        out.append("pre-flight (`plan check` for all):")
        out += [f"  {c.severity}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in flagged]
    return "\n".join(out)
