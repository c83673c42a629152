"""The objective: what makes one plan that fits better than another, in ONE replaceable place.

    score(Candidate(...)) -> tuple       # larger is better (lexicographic)
    OBJECTIVE                             # the same, in words (every plan's JSON states it)

Both runtimes' candidates are ranked with :func:`score` and nothing else, by the one solver loop
(planner.search.loop.solve_with; the TRL runtime in planner.search.solver, the Unsloth runtime in
planner.search.unsloth_solver; a TRL plan's layouts compare through ``results.Option.key``). To plan
for another objective (e.g. the time per step), replace :func:`score` and :data:`OBJECTIVE` here; the
loop only keeps the candidate with the largest score.

The terms, most important first:

1. the completion length (reach the requested one; cut only when it does not fit);
2. the group size, Unsloth only (the requested ``num_generations``, else the largest that fits:
   its search tries 8, 6, 4, 2 at once; the TRL search tries its group sizes one after the other,
   8 first, and ranks within one);
3. the completions per optimisation step generated in one wave (several waves only when not even
   one group fits at once: then the fewest);
4. the lowest-communication engine (DDP < ZeRO-1 < ZeRO-2 < ZeRO-3; one GPU: DDP);
5. the largest training micro-batch (fewest accumulation steps);
6. the smallest vLLM tensor parallelism;
7. no sleep mode / no standby (wake-up latency; Unsloth's default is off);
8. the memory term, runtime-specific: TRL, the highest vLLM utilisation that fits (the least
   idle memory: TRL's vLLM owns the KV cache it is given); Unsloth, in one wave the lowest
   utilisation (its vLLM share also holds the one copy of the weights, and every byte beyond one
   wave is taken from the trainer), else the most KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..specs.topology import _COMMUNICATION_RANK

OBJECTIVE = ("reach the requested completion length",
             "most completions per optimisation step generated in one wave",
             "largest training micro-batch",
             "least idle memory (highest vLLM utilisation that fits)")
UNSLOTH_OBJECTIVE = ("reach the requested completion length (max_seq_length - prompt)",
                     "the requested group size, else the largest that fits (8, 6, 4, 2)",
                     "the generation batch in one vLLM wave",
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


def score(c: Candidate) -> tuple:
    """The objective, lexicographic: larger is better (module docstring, terms 1-8)."""
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
