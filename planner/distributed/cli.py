"""What the ``plan`` / ``plan estimate`` commands call: the topology flags, the plan from parsed
arguments, and the text output (``render``)."""

from __future__ import annotations

from ..units import format_gib
from .layout import DistributedPlan, estimate_distributed, plan_distributed
from .topology import ENGINE_LABELS, ENGINES, LAYOUTS, TRL_SERVE_DEFAULT_PORT

# -- CLI hooks (the lead's planner/commands/plan.py calls these) --------------------------------

def add_topology_arguments(parser) -> None:
    """``--num-gpus``, ``--num-nodes``, ``--layout``, ``--engine``, ``--server-gpus``,
    ``--server-host``, ``--server-port``, ``--output-dir``. ``--gpu`` may be a comma-separated list
    (GPUs of different sizes). A ``--vllm-tensor-parallel-size`` registered before this call gets
    the default None (= let the solver choose); without one, this adds it."""
    g = parser.add_argument_group("multi-GPU layout")
    g.add_argument("--num-gpus", type=int, default=1, help="GPUs per node")
    g.add_argument("--num-nodes", type=int, default=1, help="nodes (server mode on several nodes: node 0 serves)")
    g.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="vLLM colocated on the training GPUs, a `trl vllm-serve` server on GPUs of its own, or auto")
    g.add_argument("--engine", choices=("auto",) + ENGINES, default="auto",
                   help="data-parallel engine (auto: the lowest ZeRO stage that reaches the objective)")
    g.add_argument("--server-gpus", type=int, default=None, help="GPUs for the vLLM server (default: searched)")
    g.add_argument("--server-host", default=None, help="address the trainer uses to reach the server")
    g.add_argument("--server-port", type=int, default=TRL_SERVE_DEFAULT_PORT)
    g.add_argument("--output-dir", default=None,
                   help="write grpo.yaml, accelerate.yaml, deepspeed.json, launch.sh (and vllm_serve.sh) here")
    if "--vllm-tensor-parallel-size" in parser._option_string_actions:
        parser.set_defaults(vllm_tensor_parallel_size=None)
    else:
        g.add_argument("--vllm-tensor-parallel-size", type=int, default=None,
                       help="colocated vLLM TP size (default: searched)")


def _gpu_arg(gpu):
    if isinstance(gpu, str) and "," in gpu:
        return [g.strip() for g in gpu.split(",") if g.strip()]
    return gpu


def plan_from_topology_args(args, **plan_kwargs) -> DistributedPlan:
    """``plan_distributed`` from parsed arguments: ``args.model``, ``args.gpu`` and the topology
    flags; ``plan_kwargs`` are passed through (trainer and vLLM options the caller parsed)."""
    kw = dict(plan_kwargs)
    for name in ("engine", "server_gpus", "server_host", "server_port"):
        if getattr(args, name, None) is not None:
            kw.setdefault(name, getattr(args, name))
    tp = getattr(args, "vllm_tensor_parallel_size", None)
    if tp is not None:
        kw.setdefault("vllm_tensor_parallel_size", tp)
    return plan_distributed(kw.pop("model", args.model), _gpu_arg(kw.pop("gpu", args.gpu)),
                            num_gpus=getattr(args, "num_gpus", 1), num_nodes=getattr(args, "num_nodes", 1),
                            layout=getattr(args, "layout", "auto"), **kw)


def estimate_from_topology_args(args, **estimate_kwargs) -> DistributedPlan:
    """``estimate_distributed`` from ``plan estimate``'s parsed arguments plus the topology flags:
    ``--layout auto`` means colocate, ``--engine auto`` DDP, an unset TP 1, an unset
    ``--server-gpus`` 1; ``estimate_kwargs`` (trainer / vLLM options) pass through."""
    kw = dict(estimate_kwargs)
    layout = getattr(args, "layout", "auto")
    kw.setdefault("layout", "colocate" if layout == "auto" else layout)
    engine = getattr(args, "engine", "auto")
    kw.setdefault("engine", "ddp" if engine in (None, "auto") else engine)
    for name in ("vllm_tensor_parallel_size", "server_gpus", "server_host", "server_port", "batch_size",
                 "steps_per_generation", "prompt_length", "completion_length", "vllm_gpu_memory_utilization",
                 "sleep_mode", "num_generations"):
        if getattr(args, name, None) is not None:
            kw.setdefault(name, getattr(args, name))
    return estimate_distributed(kw.pop("model", args.model), _gpu_arg(kw.pop("gpu", args.gpu)),
                                num_gpus=getattr(args, "num_gpus", 1), num_nodes=getattr(args, "num_nodes", 1), **kw)


# -- text output ----------------------------------------------------------------------------

def layouts_table(plan: DistributedPlan) -> list[str]:
    """The layout comparison as markdown-style table lines."""
    head = ["| layout | engine | fits | per-rank peak | server GPU peak | completions/step in one wave | "
            "micro-batch | utilisation | |",
            "|---|---|---|---|---|---|---|---|---|"]
    out = []
    for row in plan.layouts:
        t, o = row.topology, row.option
        eng = "-" if t.world_size == 1 else ENGINE_LABELS[t.engine]
        if o is None:
            out.append(f"| {t.label} | {eng} | no: {row.why} | | | | | | |")
        else:
            sp = format_gib(o.server_peak_bytes) if o.server_peak_bytes else ""
            out.append(f"| {t.label} | {eng} | yes | {format_gib(o.peak_bytes)} | {sp} | {o.one_wave} | {o.batch_size} | "
                       f"{o.utilization:.2f}{' +sleep' if o.sleep else ''} | {'**chosen**' if row.chosen else ''} |")
    return head + out


def render(plan: DistributedPlan) -> str:
    """Human-readable plan: layout, config, per-role memory by phase, layouts compared, reasons."""
    t, spec = plan.topology, plan.model
    cards = sorted({g.name for g in plan.gpus})
    out = [f"{spec.model_id} ({spec.n_params / 1e9:.2f} B params) on {t.total_gpus} x {'/'.join(cards)}"
           f" ({t.num_nodes} node{'s' if t.num_nodes > 1 else ''}); planned for {plan.gpu.name} "
           f"({format_gib(plan.gpu.total_bytes)}), margin {plan.margin:.0%}; memory model: {plan.memory_model}"]
    eng = "single process" if t.world_size == 1 else ENGINE_LABELS[t.engine]
    if t.vllm_mode == "colocate":
        out.append(f"layout: colocate, {t.world_size} training rank(s), {eng}, vLLM TP {t.vllm_tensor_parallel_size} "
                   f"({t.num_engines} engine(s))")
    else:
        sv = plan.server
        out.append(f"layout: server, `trl vllm-serve` on GPU(s) {t.server_devices}"
                   + (" of node 0" if t.num_nodes > 1 else "")
                   + f" (TP {sv['tensor_parallel_size']}, DP {sv['data_parallel_size']}, utilisation "
                   f"{sv['gpu_memory_utilization']}); {t.world_size} training rank(s) on "
                   + (f"GPUs {t.training_devices}" if t.num_nodes == 1 else f"nodes 1-{t.num_nodes - 1}")
                   + f", {eng}")
    out.append("GRPOConfig: " + ", ".join(f"{k}={v}" for k, v in plan.config.items()))
    for name, role in plan.roles.items():
        title = "training rank (rank 0, the worst)" if name == "training_rank" else "server GPU"
        out.append(f"{title} x {role.count}: peak {format_gib(role.peak_bytes)} of {format_gib(role.budget_bytes)} budget "
                   f"(binding phase {role.binding_phase}, headroom {format_gib(role.headroom_bytes)})")
        binding = max(role.phases, key=lambda p: p.peak_bytes)
        width = max(len(k) for k in binding.components)
        for k, v in binding.components.items():
            if v:
                out.append(f"    {k:<{width}}  {format_gib(v):>11}")
        out.append("  phases: " + ", ".join(f"{p.name} {format_gib(p.peak_bytes)}" for p in role.phases))
    out.append("layouts considered:")
    out += ["  " + line for line in layouts_table(plan)]
    out.append("why:")
    out += [f"  - {r}" for r in plan.reasons]
    for c in plan.checks:
        if c.severity != "info":
            out.append(f"{c.severity}: {c.id}: {c.message}" + (f" (fix: {c.fix})" if c.fix else ""))
    out += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(out)
