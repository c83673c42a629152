"""The objective: what makes one plan that fits better than another, in ONE replaceable place.

    score(Candidate(...)) -> tuple       # larger is better (lexicographic)
    OBJECTIVE                             # the same, in words (every plan's JSON states it)

Both runtimes' candidates are ranked with :func:`score` and nothing else, by the one solver loop
(planner.search.loop.solve_with; the TRL runtime in planner.search.solver, the Unsloth runtime in
planner.search.unsloth_solver; a TRL plan's layouts compare through ``results.Option.key``). To plan
for another objective (e.g. the time per step), replace :func:`score` and :data:`OBJECTIVE` here; the
loop only keeps the candidate with the largest score.

The design (issue 25: "maximise completions per hour at the requested effective batch"): the
effective batch, the completions generated per optimizer step, is a training setting, not a speed
knob (it changes the gradient's noise and the steps an epoch takes), so the objective FIXES it before
time is looked at, and time decides only HOW that batch runs:

- fixed first, in this order: the completion length (term 1), the group size (term 2, Unsloth), the
  completions per step generated in one wave (term 3: the requested one when pinned, i.e.
  ``generation_batch_size`` / ``per_device_train_batch_size`` x accumulation, else the largest that
  fits in one wave up to ``max_completions_per_step``), and the engine (term 4). A candidate with fewer
  completions per step loses on term 3 even when its completions per hour are higher: a smaller
  batch is never bought with speed;
- then time (term T): among the candidates that tie on terms 1-4, the least predicted seconds per
  optimizer step. At a fixed number of completions per step, least seconds per step IS most
  completions per hour, so term T is issue 25's "most completions per hour at that batch"; it cannot
  pick a slower configuration at equal completions per step;
- what time decides between: sleep mode on or off, the micro-batch (and so the accumulation), vLLM's
  share and tensor parallelism, where they change the predicted time by more than
  :data:`TIME_TOLERANCE`; within it the proxies below decide (larger micro-batch, smaller TP, no
  sleep, least idle memory). Example (tests/test_plan_time.py, ``plan --top 5``): Qwen2.5-7B on an
  A100-40GB, prompt 128, completion 256, ``--generation-batch-size 32``: without time the larger
  micro-batch (32, with sleep mode) would win; sleep's wake-up costs more than 2% of that short step,
  so the plan runs micro-batch 8 without sleep mode, and the sleeping micro-batch 32 is listed as
  "slower".

The terms, most important first:

1. the completion length (reach the requested one; cut only when it does not fit);
2. the group size, Unsloth only (the requested ``num_generations``, else the largest that fits:
   its search tries 8, 6, 4, 2 at once; the TRL search tries its group sizes one after the other,
   8 first, and ranks within one);
3. the completions per optimisation step generated in one wave (several waves only when not even
   one group fits at once: then the fewest);
4. the lowest-communication engine (DDP < ZeRO-1 < ZeRO-2 < ZeRO-3; one GPU: DDP);
T. the least predicted time per optimizer step (planner.search.timing.option_time): with the
   completions per step fixed by term 3, the most completions per hour at that effective batch.
   Measured from the fastest candidate that ties on terms 1-4, in steps of :data:`TIME_TOLERANCE`:
   every candidate within 2% of the fastest ties with it (the model's error is larger: a 2%
   difference is no evidence), and the terms below decide, as they did before time was modelled
   (:func:`ranked`; :func:`score` alone is the order without time);
5. the largest training micro-batch (fewest accumulation steps);
6. the smallest vLLM tensor parallelism;
7. no sleep mode / no standby (wake-up latency; Unsloth's default is off);
8. the memory term, runtime-specific: TRL, the highest vLLM utilisation that fits (the least
   idle memory: TRL's vLLM owns the KV cache it is given); Unsloth, in one wave the lowest
   utilisation (its vLLM share also holds the one copy of the weights, and every byte beyond one
   wave is taken from the trainer), else the most KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..specs.topology import _COMMUNICATION_RANK

TIME_TOLERANCE = 0.02  # step times closer than this (relative) tie
TIME_TERM = ("then, at those completions per step, the least predicted seconds per optimizer step (= the most "
             "completions per hour at that effective batch; within 2% a tie): sleep mode, micro-batch, vLLM's share "
             "and TP are chosen by time")
OBJECTIVE = ("reach the requested completion length",
             "most completions per optimisation step generated in one wave (the effective batch: fixed before "
             "time, never traded for speed)",
             "the lowest-communication engine",
             TIME_TERM,
             "largest training micro-batch",
             "least idle memory (highest vLLM utilisation that fits)")
UNSLOTH_OBJECTIVE = ("reach the requested completion length (max_seq_length - prompt)",
                     "the requested group size, else the largest that fits (8, 6, 4, 2)",
                     "the generation batch in one vLLM wave (the effective batch: fixed before time)",
                     TIME_TERM,
                     "largest training micro-batch (fewest accumulation steps)",
                     "standby off unless it does better (Unsloth's default)",
                     "one wave at the lowest utilisation, else the most KV cache")


def objective_lines(runtime: str = "trl") -> tuple[str, ...]:
    """:data:`OBJECTIVE` as stated for ``runtime`` (the Unsloth search adds its group-size and memory terms)."""
    return UNSLOTH_OBJECTIVE if runtime == "unsloth" else OBJECTIVE


@dataclass(frozen=True)
class Candidate:
    """What the objective reads of a configuration that fits."""

    completion_length: int
    completions: int  # per optimisation step, all GPUs
    waves: int  # generation rounds for them (0: vLLM holds no full sequence)
    batch_size: int
    utilization: float  # vLLM's share asked (colocated) or the server's
    sleep: bool  # vLLM sleep mode (TRL) or standby (Unsloth)
    engine: str = "ddp"
    tensor_parallel_size: int = 1
    runtime: str = "trl"
    preferred_group: bool = True  # Unsloth: num_generations is the requested (else Unsloth's default 8)
    num_generations: int = 0  # Unsloth: ranked (the TRL search fixes it per round)
    kv_cache_bytes: int = 0  # Unsloth: the memory term when it needs several waves
    step_seconds: float = 0.0  # predicted seconds per optimizer step (0: not predicted, every time ties)


def time_term(seconds: float, fastest: float) -> int:
    """The time term: 0 within :data:`TIME_TOLERANCE` of ``fastest``, then -1, -2, ... per further
    step of that width (larger is faster); 0 when either time is unknown."""
    if not (seconds > 0 and fastest > 0 and math.isfinite(seconds)):
        return 0
    return -math.floor(math.log(seconds / fastest) / math.log1p(TIME_TOLERANCE))


def ranked(cands: Sequence[Candidate], seconds: Sequence[Callable[[], float] | None] | None = None,
           contenders_only: bool = False) -> list[tuple[int, Candidate, tuple]]:
    """``(index, candidate, key)`` per candidate (larger key is better; keys compare only within one
    call): :func:`score`'s terms 1-4, the time term against the fastest candidate sharing those terms,
    then terms 5-8.

    ``seconds`` (one callable or None per candidate) fills in the predicted step time only where it can
    decide: the contenders, the candidates that tie on terms 1-4 with the best of all or with the best
    of their sleep setting (the solver keeps both); the others lose on those terms whatever their time.
    ``contenders_only``: leave the others out (the solver's walk; the runners-up list keeps them)."""
    scores = [score(c) for c in cands]
    prefixes = [k[:PREFIX] for k in scores]
    top: dict[bool, tuple] = {}
    for c, p in zip(cands, prefixes, strict=True):
        if c.sleep not in top or p > top[c.sleep]:
            top[c.sleep] = p
    best = max(top.values(), default=None)
    kept: list[tuple[int, Candidate]] = []
    fastest: dict[tuple, float] = {}
    for i, (c, p) in enumerate(zip(cands, prefixes, strict=True)):
        contender = p == best or p == top[c.sleep]
        if contenders_only and not contender:
            continue
        fn = seconds[i] if seconds is not None else None
        if fn is not None and contender:
            c = replace(c, step_seconds=fn())
        if c.step_seconds > 0:
            fastest[p] = min(fastest.get(p, math.inf), c.step_seconds)
        kept.append((i, c))
    return [(i, c, prefixes[i] + (time_term(c.step_seconds, fastest.get(prefixes[i], 0.0)),) + scores[i][PREFIX:])
            for i, c in kept]


def score(c: Candidate) -> tuple:
    """The objective without time, lexicographic: larger is better (module docstring, terms 1-8;
    :func:`ranked` inserts the time term T after the first :data:`PREFIX` values)."""
    single = c.waves == 1
    if c.runtime == "unsloth":
        memory: float = -c.utilization if single else c.kv_cache_bytes
    else:
        memory = c.utilization
    return (c.completion_length,
            c.preferred_group, c.num_generations,
            single, c.completions if single else -c.waves,
            -_COMMUNICATION_RANK[c.engine],
            c.batch_size,
            -c.tensor_parallel_size,
            not c.sleep,
            memory)


PREFIX = 6  # score()'s values for terms 1-4 (completion length, group x 2, one wave x 2, engine)
# what each value of a ranked() key says, in order (why a runner-up lost: the first that differs)
KEY_TERMS = ("a shorter completion length", "not the requested group size", "a smaller group size",
             "needs more than one generation wave", "fewer completions per step (or more waves)",
             "a higher-communication engine", "slower (predicted step time beyond 2% of the fastest)",
             "a smaller micro-batch", "a larger vLLM tensor parallelism", "sleep mode / standby on",
             "the memory term (vLLM's share)")


def why_lost(winner: tuple, other: tuple) -> str:
    """The objective's first term on which ``other`` (a ranked() key) is worse than ``winner``."""
    for i, (a, b) in enumerate(zip(winner, other, strict=True)):
        if a != b:
            return KEY_TERMS[i] if i < len(KEY_TERMS) else f"term {i + 1}"
    return "a tie (the first found is kept)"
