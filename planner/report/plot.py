"""The per-phase memory picture: one stacked bar per phase of a colocated GRPO step.

    >>> plot_phases(planner.plan("Qwen/Qwen2.5-7B-Instruct", "H100-80GB"), "memory.png")
    >>> render_phases(plan, "svg")          # the bytes, written by planner.report.files
    plan --model ... --gpu L4 --plot memory.png     # .png, .pdf or .svg; a bare name gets .png

Bars: load, weight_sync, generation, training, stacked by component (``trainer.*`` in blues and
greens, ``vllm.*`` in oranges and reds, from ``estimate.phases[phase].components``), named for a
reader (:data:`HUMAN_NAMES`), GiB on each segment tall enough, components under 1% of the card
summed into "other", none of zero size; the title names the chosen configuration. Lines: the
card's total, the card less the plan's margin (the budget every phase must stay under) and, for a
live card (``--gpu auto``), what is free now. Numbers in GiB. matplotlib is imported here only,
with the Agg canvas (no display, no global backend switch): ``pip install 'grpo-vram-planner[plot]'``.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import InvalidSetupError, MissingDependencyError, OutputError
from ..search.margins import MEMORY_MODEL_MARGIN, label_kind
from ..specs.units import GIB

PHASE_ORDER = ("load", "weight_sync", "generation", "training")
_TRAINER_COLOURS = ("#08306b", "#2171b5", "#6baed6", "#9ecae1", "#006d2c", "#31a354", "#74c476", "#a1d99b",
                    "#c7e9c0", "#4a1486", "#807dba")
_VLLM_COLOURS = ("#7f2704", "#d94801", "#fd8d3c", "#fdae6b", "#a50f15", "#ef3b2c", "#fc9272", "#fdd0a2")
_OTHER_COLOURS = ("#525252", "#969696", "#d9d9d9")
_DARK = frozenset(_TRAINER_COLOURS[:2] + _TRAINER_COLOURS[4:6] + _TRAINER_COLOURS[9:] + _VLLM_COLOURS[:2]
                  + _VLLM_COLOURS[4:6] + _OTHER_COLOURS[:1])


# component -> the name a reader of the plot knows (the legend); unknown ones get their own name
HUMAN_NAMES = {
    "non_torch": "CUDA context, NCCL (outside PyTorch)", "cublas_workspace": "cuBLAS workspace",
    "weights": "weights", "adapters": "LoRA adapters", "optimizer_state": "optimizer state",
    "gradients": "gradients", "activations": "activations", "logprob_head": "log-prob head",
    "optimizer_step": "optimizer step (transient)", "clip_grad": "gradient clipping (norms)",
    "autocast_cache": "autocast cache",
    "rollout_buffers": "rollout buffers", "allocator_reserve": "allocator reserve",
    "merge_transient": "LoRA merge for the weight sync", "kv_cache": "KV cache",
    "activation_peak": "activations (profiling peak)", "cudagraph": "CUDA graphs", "asleep": "asleep (kept)",
    "other": "other",
}
SMALL_FRACTION = 0.01  # components under 1% of the card in every phase are drawn together as "other"


def human_name(component: str) -> str:
    """``trainer.optimizer_state`` -> ``trainer: optimizer state``; ``vllm.kv_cache`` -> ``vLLM: KV cache``."""
    side, _, name = component.partition(".")
    if not name:
        return HUMAN_NAMES.get(side, side.replace("_", " "))
    who = {"trainer": "trainer", "vllm": "vLLM"}.get(side, side)
    return f"{who}: {HUMAN_NAMES.get(name, name.replace('_', ' '))}"


def _grouped(components: dict, small: set) -> dict:
    """Components with the small ones of each side summed into ``<side>.other``."""
    out: dict = {}
    for k, v in components.items():
        key = f"{k.split('.')[0]}.other" if k in small else k
        out[key] = out.get(key, 0) + max(0, v)
    return out


def config_line(plan_or_estimate) -> str:
    """The chosen configuration in a few words (a Plan's config, or an Estimate's setup)."""
    c = getattr(plan_or_estimate, "config", None)
    if c:
        B, gbs = c["per_device_train_batch_size"], c["generation_batch_size"]
        parts = [f"batch {B} x {c['gradient_accumulation_steps']} steps", f"{gbs} completions/step",
                 f"G {c['num_generations']}", f"completion {c['max_completion_length']}"]
        if "vllm_gpu_memory_utilization" in c:
            parts.append(f"vLLM {c['vllm_gpu_memory_utilization']}")
        parts.append(c.get("optim", ""))
        return ", ".join(p for p in parts if p)
    s = plan_or_estimate.setup
    return (f"batch {s.batch_size}, {s.prompt_length} + {s.completion_length} tokens, {s.weights} {s.finetune}, "
            f"{s.optim}")


def _colours(names: list[str]) -> dict:
    pools = {"trainer": list(_TRAINER_COLOURS), "vllm": list(_VLLM_COLOURS)}
    out, other = {}, list(_OTHER_COLOURS)
    for n in names:
        pool = pools.get(n.split(".")[0], other)
        out[n] = pool.pop(0) if pool else "#bdbdbd"
    return out


def _text(value) -> str:
    """User text for a label: one line, and ``$`` escaped (matplotlib reads ``$...$`` as mathtext)."""
    from .emit import one_line

    return one_line(value).replace("$", r"\$")


def _phases_of(plan_or_estimate):
    """(phases, binding phase, sleep mode, card, model) of a Plan or an Estimate (a plan whose vLLM
    runs as a server elsewhere: its training rank's); InvalidSetupError when nothing is per phase."""
    x = plan_or_estimate
    if x.phases is not None:
        return x.phases.phases, x.phases.binding_phase, x.phases.sleep_mode, x.gpu, x.model
    roles = getattr(x, "roles", None) or {}
    if "training_rank" in roles:
        role = roles["training_rank"]
        return role.phases, role.binding_phase, role.sleep_mode, x.gpu, x.model
    raise InvalidSetupError("nothing to plot: the estimate has no colocated phases "
                            "(give it a vllm_gpu_memory_utilization)")


def budget_margin(plan_or_estimate) -> float:
    """The margin the budget line is drawn at: a plan's own, else (an Estimate keeps no margin) the
    default a plan with its memory model would have (planner.search.margins.MEMORY_MODEL_MARGIN)."""
    margin = getattr(plan_or_estimate, "margin", None)
    if margin is not None:
        return margin
    return MEMORY_MODEL_MARGIN[label_kind(plan_or_estimate.memory_model)]


def plot_phases(plan_or_estimate, path, *, title: str | None = None, margin: float | None = None,
                force: bool = False) -> Path:
    """Draw the stacked per-phase memory of a Plan (or a colocated Estimate) to ``path`` (.png,
    .pdf or .svg; a name without extension gets .png), atomically; an existing file is refused
    unless ``force``. Returns the path written.

    ``margin``: for the budget line; default the plan's margin, for a bare Estimate (which keeps
    none) its memory model's band (:func:`budget_margin`).
    """
    from .files import plot_format, plot_path, write_file

    target = plot_path(path)
    data = render_phases(plan_or_estimate, plot_format(target), title=title, margin=margin)
    return write_file(target, data, force=force)


def render_phases(plan_or_estimate, fmt: str = "png", *, title: str | None = None,
                  margin: float | None = None) -> bytes:
    """The picture :func:`plot_phases` draws, as the bytes of a ``fmt`` file (png, pdf, svg)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("plotting needs matplotlib: pip install 'grpo-vram-planner[plot]'") from None
    from .files import PLOT_FORMATS

    if fmt not in PLOT_FORMATS:
        raise OutputError(f"cannot draw the plot as '{fmt}': supported formats are {', '.join(PLOT_FORMATS)}")
    if margin is None:
        margin = budget_margin(plan_or_estimate)
    phase_list, binding, sleep_mode, gpu, model = _phases_of(plan_or_estimate)
    present = {p.name: p for p in phase_list}
    order = [n for n in PHASE_ORDER if n in present] + [n for n in present if n not in PHASE_ORDER]
    largest: dict = {}
    for n in order:
        for k, v in present[n].components.items():
            largest[k] = max(largest.get(k, 0), v)
    small = {k for k, v in largest.items() if v < SMALL_FRACTION * gpu.total_bytes}
    parts = {n: _grouped(present[n].components, small) for n in order}
    names: list[str] = []
    for n in order:
        for k, v in parts[n].items():
            if k not in names and v > 0:  # no zero-size entries
                names.append(k)
    names.sort(key=lambda k: (not k.startswith("trainer."), not k.startswith("vllm.")))  # stable: trainer first
    colour = _colours(names)
    total = gpu.total_bytes / GIB

    fig = Figure(figsize=(9, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(order))
    bottoms = [0.0] * len(order)
    for k in names:
        heights = [parts[n].get(k, 0) / GIB for n in order]
        ax.bar(x, heights, bottom=bottoms, color=colour[k], label=human_name(k), width=0.6, edgecolor="white",
               linewidth=0.5)
        for i, h in enumerate(heights):
            if h >= total * 0.04:  # GiB on each segment tall enough to hold it
                ax.text(i, bottoms[i] + h / 2, f"{h:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if colour[k] in _DARK else "black")
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, n in enumerate(order):
        ax.text(i, bottoms[i] + total * 0.01, f"{present[n].peak_bytes / GIB:.2f} GiB", ha="center", va="bottom",
                fontsize=9, fontweight="bold" if n == binding else "normal")
    ax.axhline(total, color="black", linewidth=1.2, label=f"{_text(gpu.name)} total {total:.2f} GiB")
    budget = total * (1 - margin)
    ax.axhline(budget, color="black", linestyle="--", linewidth=1,
               label=f"budget: total - {margin:.0%} = {budget:.2f} GiB")
    if gpu.free_bytes is not None and gpu.free_bytes < gpu.total_bytes:
        free = gpu.free_bytes / GIB
        ax.axhline(free, color="#a50f15", linestyle=":", linewidth=1.2, label=f"free now {free:.2f} GiB")
    ax.set_xticks(list(x))
    ax.set_xticklabels([n.replace("_", " ") for n in order])
    ax.set_ylabel("GiB")
    ax.set_ylim(0, max(total, max(bottoms)) * 1.08)
    ax.set_xlim(-0.5, len(order) - 0.5)
    generating = any(n.startswith("generate.") for n in names)  # no vLLM: transformers' generate
    sleep = "no vLLM" if generating else f"sleep mode {'on' if sleep_mode else 'off'}"
    ax.set_title(_text(title) if title else f"{_text(model.model_id)} on {_text(gpu.name)}: memory per phase "
                 f"({sleep}, GiB)\n{_text(config_line(plan_or_estimate))}", fontsize=10)
    by_label = dict(zip(*reversed(ax.get_legend_handles_labels())))
    stack = [human_name(k) for k in names]
    labels = [lb for lb in by_label if lb not in stack] + stack[::-1]  # lines, then the stack top-down
    ax.legend([by_label[lb] for lb in labels], labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight")
    return buf.getvalue()
