"""The multi-GPU flags of ``plan`` / ``plan estimate`` and the text output of a plan with more than
one GPU (``render``)."""

from __future__ import annotations

from ..search.results import Plan
from ..specs.topology import ENGINE_LABELS, ENGINES, LAYOUTS, TRL_SERVE_DEFAULT_PORT
from ..specs.units import format_gib
from ._columns import columns
from ._common import margin_text


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


def gpu_arg(gpu: str) -> str | list[str]:
    """``--gpu A,B`` (GPUs of different sizes) as a list, else the name."""
    if "," in gpu:
        return [g.strip() for g in gpu.split(",") if g.strip()]
    return gpu


# -- text output ----------------------------------------------------------------------------

def layouts_table(plan: Plan) -> list[str]:
    """The layout comparison as an aligned table (a header, a rule, one row per layout), then why
    each layout that does not fit does not."""
    headers = ("layout", "engine", "fits", "per-rank peak", "server GPU peak", "in one wave", "micro-batch",
               "utilisation", "chosen")
    rows, why_not = [], []
    for row in plan.layouts:
        t, o = row.topology, row.option
        eng = "-" if t.world_size == 1 else ENGINE_LABELS[t.engine]
        if o is None:
            rows.append((t.label, eng, "no", "", "", "", "", "", ""))
            why_not.append(f"{t.label}, {eng}: {row.why}")
        else:
            sp = format_gib(o.server_peak_bytes) if o.server_peak_bytes else ""
            rows.append((t.label, eng, "yes" if row.fits else "no", format_gib(o.peak_bytes), sp, str(o.one_wave),
                         str(o.batch_size), f"{o.utilization:.2f}{' +sleep' if o.sleep else ''}",
                         "chosen" if row.chosen else ""))
            if not row.fits:  # a setup as given (plan estimate) over a GPU's budget, or vLLM not starting
                why_not.append(f"{t.label}, {eng}: {row.why or 'over the budget'}")
    out = columns(headers, rows, right=frozenset({3, 4, 5, 6})).split("\n")
    return out + [f"not fitting: {w}" for w in why_not]


def render(plan: Plan) -> str:
    """Human-readable plan: layout, config, per-role memory by phase, layouts compared, reasons."""
    t, spec = plan.topology, plan.model
    cards = sorted({g.name for g in plan.gpus})
    out = [f"{spec.model_id} ({spec.n_params / 1e9:.2f} B params) on {t.total_gpus} x {'/'.join(cards)}"
           f" ({t.num_nodes} node{'s' if t.num_nodes > 1 else ''}); planned for {plan.gpu.name} "
           f"({format_gib(plan.gpu.total_bytes)}); {margin_text(plan)}; memory model: {plan.memory_model}"]
    eng = "single process" if t.world_size == 1 else ENGINE_LABELS[t.engine]
    if t.vllm_mode == "colocate":
        out.append(f"layout: colocate, {t.world_size} training rank(s), {eng}, vLLM TP {t.vllm_tensor_parallel_size} "
                   f"({t.num_engines} engine(s))")
    else:
        sv = plan.server or {}
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
        if role.rank is not None and role.rank.moments:
            out.append("  trainer step moments: " + ", ".join(
                f"{m} {format_gib(v)}" + (" (binding)" if m == role.rank.binding_moment else "")
                for m, v in role.rank.moments.items()))
    out.append("layouts considered:")
    out += ["  " + line for line in layouts_table(plan)]
    out.append("why:")
    out += [f"  - {r}" for r in plan.reasons]
    for c in plan.checks:
        if c.severity != "info":
            out.append(f"{c.severity}: {c.id}: {c.message}" + (f" (fix: {c.fix})" if c.fix else ""))
    out += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(out)
