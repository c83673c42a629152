"""A runtime as the one solver sees it: what differs between TRL and Unsloth, and nothing else.

The solver's loop (:func:`solve_with`; planner.search.solver.solve runs it with the request's
runtime) is the same for every runtime: for each stage the
runtime tries in order (TRL: its completion lengths, longest first, times its group sizes; Unsloth:
one stage, its whole grid), for each part it plans (a layout: TRL's topologies, Unsloth's one GPU),
it walks the runtime's candidates, keeps those whose peak stays under the budget (the card less the
one margin), ranks them with planner.search.objective.ranked (its order, with the predicted step time
against the fastest) and keeps the best (:class:`Best`); the parts' bests compare the same way. The
first stage in which something fits ends the search; the best part's best candidate becomes the
Plan, or, when nothing fits, the runtime's error names what breaks (and the closest plan).

What a runtime supplies (:class:`SolverRuntime`): its search state (the request validated and
resolved, the margin, the budget, its caches), its stages, its parts, its candidates (the settings
it searches and the ones it rewrites, each evaluated through its own memory/phase blocks: TRL's
planner.memory.phases via planner.search.estimation, Unsloth's planner.runtimes.unsloth.unsloth_estimate),
its Plan and its infeasible message, and its hand-off: the checks (``checked``), the releases the
assumptions read (``installed``), the next steps, and whether the request is completed from the
environment first (``reads_environment``: TRL's defaults; planner.api.plan_from_request).

The runtimes: planner.search.solver.TRL_RUNTIME and planner.search.unsloth_solver.UNSLOTH_RUNTIME.
When nothing fits with pins, each runtime's message names each pin's nearest value that fits
(:func:`nearest_pins`: released, then checked by solving with it pinned, before it is printed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..errors import InfeasibleError, InvalidSetupError
from ..specs.topology import Topology
from .objective import PREFIX, Candidate, ranked, score, why_lost
from .request import PlanRequest
from .results import Plan


@dataclass(frozen=True)
class Scored:
    """A configuration the runtime evaluated: what the objective reads of it, its peak (the largest
    phase, held under the budget by the solver), and how to build its option (called only when the
    candidate improves the best so far, e.g. TRL's exact evaluation)."""

    candidate: Candidate
    peak_bytes: int
    make: Callable[..., Any]
    # the predicted seconds per optimizer step, computed only for the candidates it can decide between
    # (those that tie on the objective's terms before time: planner.search.objective.ranked)
    seconds: Callable[[], float] | None = None


@dataclass
class Walk:
    """What a walk over one part's candidates leaves behind: why nothing fits (the runtime's words),
    set when it yielded no candidate."""

    why: str = ""


@dataclass(frozen=True)
class Found:
    """One part's best option at one stage (the objective's ``key``), and the best per sleep setting
    (for the reasons), or why nothing fits."""

    option: Any | None
    why: str = ""
    by_sleep: tuple[tuple[bool, Any], ...] = ()
    key: tuple = ()
    candidate: Candidate | None = None  # what the objective read of the option (parts compare by it)


@dataclass
class Best:
    """The best option so far by the objective, and the best per sleep setting; an option is built
    (``make``) only when it improves one of them. Ties keep the first."""

    key: tuple | None = None
    option: Any | None = None
    by_sleep: dict[bool, tuple[tuple, Any]] = field(default_factory=dict)
    candidate: Candidate | None = None

    def consider(self, k: tuple, sleep: bool, make: Callable[[], Any], candidate: Candidate | None = None) -> None:
        better = self.key is None or k > self.key
        other = self.by_sleep.get(sleep)
        if better or other is None or k > other[0]:
            opt = make()
            if better:
                self.key, self.option, self.candidate = k, opt, candidate
            if other is None or k > other[0]:
                self.by_sleep[sleep] = (k, opt)

    def found(self, why: str = "") -> Found:
        if self.option is None or self.key is None:
            return Found(None, why)
        return Found(self.option, "", tuple((sl, o) for sl, (_, o) in self.by_sleep.items()), self.key,
                     self.candidate)


class SolverRuntime(Protocol):
    """What one runtime supplies to the one solver and to planner.api.plan_from_request."""

    name: str
    reads_environment: bool  # the request is completed from the environment first (planner.api.complete_request)
    installed: tuple[str, ...]  # the packages whose installed releases the assumptions report

    def prepare(self, req: PlanRequest) -> Any:
        """The search state: the request validated (one line per problem) and resolved, the margin,
        the budget, the caches."""

    def budget(self, s: Any) -> int:
        """What every phase must stay under: the card less the margin."""

    def stages(self, s: Any) -> Iterable[Any]:
        """The stages, tried in order until one has a candidate that fits."""

    def parts(self, s: Any) -> tuple[list[Topology], list[tuple[Topology, str]]]:
        """The parts searched at every stage, and those rejected up front as ``(part, why)``."""

    def candidates(self, s: Any, stage: Any, part: Topology, walk: Walk) -> Iterator[Scored]:
        """The part's candidates at this stage, evaluated (the runtime may stop early where its
        physics says larger ones only grow); ``walk.why`` says why when none is yielded."""

    def build(self, s: Any, stage: Any, chosen: Topology, found: dict[Topology, Found],
              rejected: list[tuple[Topology, str]]) -> Plan:
        """The Plan of the chosen part's best option."""

    def infeasible(self, s: Any, found: dict[Topology, Found], rejected: list[tuple[Topology, str]]) -> InfeasibleError:
        """The error when nothing fits: what breaks, and the closest plan where the runtime finds one."""

    def checked(self, p: Plan, for_training: bool | None, strict: bool) -> Plan:
        """The plan with its checks."""

    def next_steps(self, p: Plan) -> dict[str, Any] | None:
        """What to run next, or None for planner.report.next_steps."""


def solve_with(rt: SolverRuntime, req: PlanRequest) -> Plan:
    """The one solver loop (module docstring): the runtime's stages in order, every part's best
    candidate under the budget by objective.score, the first stage where something fits; the best
    part's Plan, or the runtime's error. (It lives here, beside the interface, so that each runtime's
    module and planner.search.solver, which picks the runtime, import it without a cycle.)"""
    s = rt.prepare(req)
    parts, rejected = rt.parts(s)
    found: dict[Topology, Found] = {}
    stage = None
    for stage in rt.stages(s):
        found = {part: _best_of(rt, s, stage, part) for part in parts}
        if any(f.option is not None for f in found.values()):
            break
    fitting = {part: f for part, f in found.items() if f.option is not None}
    if not fitting:
        raise rt.infeasible(s, found, rejected)
    parts_ = list(fitting)
    cands = [fitting[p].candidate for p in parts_]
    keys = [k for _, _, k in ranked([c for c in cands if c is not None])] if None not in cands \
        else [fitting[p].key for p in parts_]
    chosen = parts_[max(range(len(parts_)), key=lambda i: keys[i])]  # ties keep the first
    return rt.build(s, stage, chosen, found, rejected)


def _best_of(rt: SolverRuntime, s: Any, stage: Any, part: Topology) -> Found:
    """One part's best candidate at one stage: those under the budget, ranked by objective.ranked."""
    walk, best, budget = Walk(), Best(), rt.budget(s)
    tops: dict[bool, tuple[tuple, list[Scored]]] = {}  # per sleep setting: the best terms 1-4 and who ties
    for c in rt.candidates(s, stage, part, walk):
        if c.peak_bytes > budget:
            continue
        p = score(c.candidate)[:PREFIX]
        top = tops.get(c.candidate.sleep)
        if top is None or p > top[0]:
            tops[c.candidate.sleep] = (p, [c])
        elif p == top[0]:
            top[1].append(c)
    fitting = [c for _, group in tops.values() for c in group]  # the contenders (objective.ranked)
    for i, cand, k in ranked([c.candidate for c in fitting], [c.seconds for c in fitting], contenders_only=True):
        best.consider(k, cand.sleep, fitting[i].make, cand)
    return best.found(walk.why)


def runners_up(rt: SolverRuntime, req: PlanRequest, n: int) -> list[dict[str, Any]]:
    """The ``n`` best configurations after the plan's, at the stage where something fits (the plan's),
    across its parts: each with its layout, settings, peak (the search's bound), predicted step time and
    why it lost (the objective's first worse term, planner.search.objective.why_lost). Settings that
    differ only in vLLM's share are shown once (its best)."""
    s = rt.prepare(req)
    parts, _ = rt.parts(s)
    rows: list[tuple[Topology, Scored]] = []
    for stage in rt.stages(s):
        rows = [(part, c) for part in parts for c in rt.candidates(s, stage, part, Walk())
                if c.peak_bytes <= rt.budget(s)]
        if rows:
            break
    cands, keys = [], []
    for _, cand, k in ranked([c.candidate for _, c in rows], [c.seconds for _, c in rows]):
        cands.append(cand)
        keys.append(k)
    order = sorted(range(len(rows)), key=lambda i: keys[i], reverse=True)
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for i in order:
        part, c = rows[i]
        cand = cands[i]
        shown = (part.label, part.engine, cand.completion_length, cand.num_generations, cand.completions,
                 cand.batch_size, cand.tensor_parallel_size, cand.sleep)
        if shown in seen:
            continue
        seen.add(shown)
        secs = cand.step_seconds or (c.seconds() if c.seconds is not None else 0.0)
        out.append({"layout": part.label, "engine": part.engine, "completion_length": cand.completion_length,
                    "num_generations": cand.num_generations or None, "completions_per_step": cand.completions,
                    "waves": cand.waves, "micro_batch": cand.batch_size, "utilization": cand.utilization,
                    "sleep": cand.sleep, "vllm_tensor_parallel_size": cand.tensor_parallel_size,
                    "peak_bytes": c.peak_bytes, "step_seconds": round(secs, 2),
                    "why_lost": "chosen" if not out else why_lost(keys[order[0]], keys[i])})
        if len(out) > n:
            break
    return out


def nearest_pins(req: PlanRequest, solve: Callable[[PlanRequest], Plan]) -> tuple[list[str], Plan | None]:
    """For each pin, the value the solver chooses with that pin released (the others held), checked
    by solving with that value pinned before it is named: the nearest change that fits. A released
    ``max_completion_length`` becomes a target (cut only as far as needed). The first checked value is
    the closest plan. ``req``: the request as asked (its pins not yet written into its sections);
    ``solve``: the runtime's solve (each runtime's infeasible message uses it)."""
    out: list[str] = []
    closest = None
    for name, value in req.pins.items():
        changes: dict[str, Any] = {"pins": replace(req.pins, **{name: None}), "relax": False}
        if name == "max_completion_length":
            changes["max_completion_length"] = value
        p = _solved(solve, req.with_options(**changes))
        got = p.pin_value(name) if p is not None else None
        if p is not None and got is None:  # the plan runs a vLLM server, where the setting does not apply
            out.append(f"{name} {show_value(value)}: it fits without it (a `trl vllm-serve` server, which does not "
                       f"read it; with the other pins held)")
            closest = closest or replace(p, extra={**p.extra, "relaxation": f"{name} released"})
            continue
        checked = _solved(solve, req.with_options(pins=replace(req.pins, **{name: got}), relax=False)) \
            if p is not None else None
        if checked is None:
            out.append(f"{name} {show_value(value)}: nothing fits even with it released")
            continue
        out.append(f"{name} {show_value(value)} -> {show_value(got)} fits (with the other pins held)")
        if closest is None:
            closest = replace(checked, extra={**checked.extra, "relaxation": f"{name} released: {show_value(got)}"})
    return out, closest


def _solved(solve: Callable[[PlanRequest], Plan], req: PlanRequest) -> Plan | None:
    """The plan of ``req``, or None when nothing fits or the request is invalid."""
    try:
        return solve(req)
    except (InfeasibleError, InvalidSetupError):
        return None


def show_value(v: Any) -> str:
    """A pin's value as the messages print it (a list of modules comma-separated)."""
    return ",".join(v) if isinstance(v, (list, tuple)) else str(v)
