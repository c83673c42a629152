"""Fit per-model coefficients of the trainer memory model from measured training steps.

Input rows have the fields of data/calibration/h100-trl1.16-train.jsonl (and of what
``planner.profiler.measure`` writes): ``stage == "step"`` rows with ``grad_ckpt``, ``batch``,
``prompt_len``, ``completion_len``, ``before_mib``, ``peak_alloc_step_mib``,
``peak_reserved_step_mib``, ``device_used_mib_end`` ...; OOM rows (``ok`` false) are skipped.

For one model, weight format, fine-tuning mode and LoRA rank, and separately with and without
gradient checkpointing, it fits by ordinary least squares (pure Python):

    activation bytes = slope * tokens + intercept       tokens = batch x (prompt + completion)
        activation bytes = (peak_alloc_step - before) : the step's peak above the resident
        bytes (weights, adapters, optimizer state); includes the LM head and the gradients
        alive at the peak, as the allocator sees them.
    reserve bytes = reserve_base + reserve_ratio * activation bytes
        reserve bytes = peak_reserved_step - peak_alloc_step : what the caching allocator holds
        beyond live tensors at the peak (fragmentation, rounding).

plus the non-PyTorch bytes of the process (``device_used_end - peak_reserved_step``: CUDA context,
kernel modules, library handles; median over rows) and the measured resident terms.

A model's first measured step creates the optimizer state inside the step (its ``before`` is
lower than the later rows' by that much), and the first step of a process also allocates one-time
buffers (cuBLAS workspaces); such rows are left out of the fits: a row is used when its
``before_mib`` is within ``FIRST_STEP_TOLERANCE_MIB`` of the group's largest ``before_mib``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..specs.units import MIB

FIRST_STEP_TOLERANCE_MIB = 1.0  # rows whose before_mib is lower than this under the group's max


@dataclass(frozen=True)
class LinearFit:
    """``y = slope * x + intercept`` by least squares over ``n`` points; ``x_min``/``x_max`` is the
    measured range (outside it the fit extrapolates). ``max_rel_residual``: worst |y - fit| / y."""

    slope: float
    intercept: float
    n: int
    x_min: int
    x_max: int
    max_rel_residual: float

    def __call__(self, x: float) -> float:
        return self.slope * x + self.intercept

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LinearFit:
        return cls(slope=float(d["slope"]), intercept=float(d["intercept"]), n=int(d["n"]),
                   x_min=int(d["x_min"]), x_max=int(d["x_max"]),
                   max_rel_residual=float(d.get("max_rel_residual", 0.0)))


def least_squares(xs, ys) -> tuple[float, float]:
    """Slope and intercept of the ordinary least-squares line through ``(xs, ys)``.

    One point (or all x equal): the line through the origin and their mean (slope = y/x).
    """
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    if not xs or len(xs) != len(ys):
        raise ValueError("least_squares needs as many x as y values, at least one")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0.0:
        return (my / mx if mx else 0.0), 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def fit_line(xs, ys, nonnegative_intercept: bool = False) -> LinearFit:
    """:func:`least_squares` with its residuals; with ``nonnegative_intercept`` a negative intercept
    is replaced by the least-squares line through the origin."""
    slope, intercept = least_squares(xs, ys)
    if nonnegative_intercept and intercept < 0:
        sxx = sum(float(x) ** 2 for x in xs)
        slope = sum(float(x) * float(y) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
        intercept = 0.0
    rel = [abs(y - (slope * x + intercept)) / y for x, y in zip(xs, ys) if y]
    return LinearFit(slope=slope, intercept=intercept, n=len(xs), x_min=int(min(xs)), x_max=int(max(xs)),
                     max_rel_residual=max(rel, default=0.0))


@dataclass(frozen=True)
class ModelFit:
    """Fitted coefficients for one (model, weights, finetune, rank) family on one GPU.

    ``activation[gc]`` maps tokens per micro-batch to the step's peak bytes above the resident
    ones; ``reserve[gc]`` maps those activation bytes to the allocator's reserve at the peak.
    Keys of both: "gc" (gradient checkpointing on) and "no_gc".
    """

    model: str
    weights: str
    finetune: str
    lora_rank: int | None
    activation: dict = field(default_factory=dict)  # "gc"/"no_gc" -> LinearFit (tokens -> bytes)
    reserve: dict = field(default_factory=dict)  # "gc"/"no_gc" -> LinearFit (activation bytes -> bytes)
    non_torch_bytes: int = 0
    weights_bytes: int = 0
    adapter_bytes: int = 0
    optimizer_state_bytes: int = 0
    rows_used: int = 0
    rows_skipped: int = 0

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": self.weights, "finetune": self.finetune,
                "lora_rank": self.lora_rank,
                "activation": {k: v.to_dict() for k, v in self.activation.items()},
                "reserve": {k: v.to_dict() for k, v in self.reserve.items()},
                "non_torch_bytes": self.non_torch_bytes, "weights_bytes": self.weights_bytes,
                "adapter_bytes": self.adapter_bytes, "optimizer_state_bytes": self.optimizer_state_bytes,
                "rows_used": self.rows_used, "rows_skipped": self.rows_skipped}

    @classmethod
    def from_dict(cls, d: dict) -> ModelFit:
        return cls(model=d["model"], weights=d["weights"], finetune=d["finetune"],
                   lora_rank=d.get("lora_rank"),
                   activation={k: LinearFit.from_dict(v) for k, v in d.get("activation", {}).items()},
                   reserve={k: LinearFit.from_dict(v) for k, v in d.get("reserve", {}).items()},
                   non_torch_bytes=int(d.get("non_torch_bytes", 0)), weights_bytes=int(d.get("weights_bytes", 0)),
                   adapter_bytes=int(d.get("adapter_bytes", 0)),
                   optimizer_state_bytes=int(d.get("optimizer_state_bytes", 0)),
                   rows_used=int(d.get("rows_used", 0)), rows_skipped=int(d.get("rows_skipped", 0)))


def gc_key(gradient_checkpointing: bool) -> str:
    return "gc" if gradient_checkpointing else "no_gc"


def family_key(row: dict) -> tuple:
    """(model, weights, finetune, lora rank) of a measured row (rank None for full fine-tuning)."""
    return (row["model"], row["weights"], row["mode"], row.get("rank") if row["mode"] == "lora" else None)


def row_tokens(row: dict) -> int:
    return int(row["batch"]) * (int(row["prompt_len"]) + int(row["completion_len"]))


def steady_rows(rows: list[dict]) -> tuple[list[dict], int]:
    """The ok step rows measured with the optimizer state already resident, and how many were not."""
    ok = [r for r in rows if r.get("stage") == "step" and r.get("ok")]
    if not ok:
        return [], 0
    top = max(r["before_mib"] for r in ok)
    steady = [r for r in ok if r["before_mib"] >= top - FIRST_STEP_TOLERANCE_MIB]
    return steady, len(ok) - len(steady)


def fit_family(rows: list[dict]) -> ModelFit:
    """Fit one family's rows (all with the same :func:`family_key`)."""
    keys = {family_key(r) for r in rows if r.get("stage") == "step"}
    if len(keys) != 1:
        raise ValueError(f"fit_family needs the rows of one family, got {sorted(map(str, keys))}")
    model, weights, finetune, rank = keys.pop()
    steady, skipped = steady_rows(rows)
    activation, reserve = {}, {}
    for gc in (True, False):
        sel = [r for r in steady if bool(r["grad_ckpt"]) == gc]
        if not sel:
            continue
        tokens = [row_tokens(r) for r in sel]
        act = [(r["peak_alloc_step_mib"] - r["before_mib"]) * MIB for r in sel]
        res = [(r["peak_reserved_step_mib"] - r["peak_alloc_step_mib"]) * MIB for r in sel]
        activation[gc_key(gc)] = fit_line(tokens, act)
        reserve[gc_key(gc)] = fit_line(act, res, nonnegative_intercept=True)
    non_torch = [(r["device_used_mib_end"] - r["peak_reserved_step_mib"]) * MIB
                 for r in steady if "device_used_mib_end" in r]
    step_rows = [r for r in rows if r.get("stage") == "step" and r.get("ok")]
    first = step_rows[0] if step_rows else {}
    return ModelFit(model=model, weights=weights, finetune=finetune, lora_rank=rank,
                    activation=activation, reserve=reserve,
                    non_torch_bytes=int(_median(non_torch)) if non_torch else 0,
                    weights_bytes=int(first.get("weights_mib", 0) * MIB),
                    adapter_bytes=int(first.get("adapter_mib", 0) * MIB),
                    optimizer_state_bytes=int(first.get("opt_state_mib", 0) * MIB),
                    rows_used=len(steady), rows_skipped=skipped)


def fit_rows(rows: list[dict]) -> list[ModelFit]:
    """Fit every family in ``rows`` (in the order they first appear); families with no ok step
    row are left out."""
    order: list[tuple] = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("stage") != "step":
            continue
        k = family_key(r)
        if k not in groups:
            order.append(k)
            groups[k] = []
        groups[k].append(r)
    fits = []
    for k in order:
        if any(r.get("ok") for r in groups[k]):
            fits.append(fit_family(groups[k]))
    return fits


def _median(values: list) -> float:
    """``statistics.median`` (not imported: it costs a plan 5 ms)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
