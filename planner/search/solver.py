"""The solver, for 1..N GPUs: pick the layout, vLLM's share of the card, batch, accumulation,
generations and completion length so that every phase of every GPU fits with a safety margin.

One GPU is the one-GPU colocate layout of the same search. TRL is one runtime (:data:`TRL_RUNTIME`) of
the one solver loop (planner.search.loop.solve_with), Unsloth the other; :func:`solve` picks the
request's and runs the loop. :func:`solve` is pure: it reads no
installed package and no environment (``planner.api.plan`` fills those defaults into the request
first) and returns a :class:`~planner.search.results.Plan`.

Decision variables: the layout (vLLM colocated with TP t, or a ``trl vllm-serve`` server on k
GPUs), the data-parallel engine (DDP, ZeRO-1/2/3, FSDP on request), ``vllm_gpu_memory_utilization``
(the user's range, step 0.01), ``per_device_train_batch_size`` B, ``steps_per_generation`` S (=
gradient accumulation), ``num_generations`` G (fixed or chosen), ``max_completion_length`` C (up to
the target), ``vllm_max_model_length`` (= prompt + C) and sleep mode.

Constraints: every phase of every GPU under the card less the margin (planner.memory.phases); vLLM starts
(free memory at its start >= its budget); one full-length sequence fits the KV cache; TRL's rules:
the generation batch ``B x S x world`` is divisible by G, G >= 2.

Objective, lexicographic (planner.search.objective: ``score``, the one function both runtimes'
searches rank with, and OBJECTIVE, stated in every plan): 1. reach the requested
completion length; 2. the most completions per optimisation step generated in one wave (several
waves only when not even one group fits at once: then the fewest); then the lowest-communication
engine (DDP < ZeRO-1 < ZeRO-2 < ZeRO-3); 3. the largest micro-batch; the smallest vLLM TP; no sleep
mode (it costs wake-up latency); 4. the least idle memory (the highest utilisation that fits).

Search: the trainer's terms depend on (B, C) and vLLM's capacity on (utilisation, C), so both are
tabulated once per completion length and combined. Feasibility is judged with upper bounds (the
accumulating trainer, the engine sized for ``max_completions_per_step`` sequences); a candidate
that improves the objective is then evaluated exactly, as it will run (its own accumulation and
the ``max_num_seqs = B x S x TP`` TRL passes), and that exact evaluation is what the plan reports:
the search's peak and the reported phases come from the same blocks (planner.memory.phases).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import Any

from ..checks.layout import _check, topology_checks, tp_problem
from ..checks.preflight import architecture_warnings, with_checks
from ..errors import InfeasibleError, InvalidSetupError
from ..memory.generate import GenerationShape, generation_components, largest_projection_params
from ..memory.phases import block_totals, phase_peak_bytes, vllm_blocks
from ..memory.process import NCCL_BUFFER_BYTES_PER_RANK
from ..memory.sharding import (
    RankMemory,
    largest_parameter_params,
    rank_trainer_memory,
    server_gpu_components,
)
from ..memory.trainer import TrainerMemory, TrainerSetup
from ..memory.vllm import VllmCapacity, baseline_bytes, startup_error, vllm_capacity
from ..specs.engines import accelerate_settings, deepspeed_settings
from ..specs.gpu import GpuSpec, margin_budget_bytes
from ..specs.model import ModelSpec
from ..specs.topology import (
    _COMMUNICATION_RANK,
    AUTO_ENGINES,
    ENGINE_LABELS,
    TRL_SERVE_DEFAULT_HOST,
    TRL_SERVE_DEFAULT_UTILIZATION,
    Topology,
)
from ..specs.units import GIB
from ..specs.versions import trl_facts, trl_max_num_seqs
from .estimation import calibrated_trainer_memory, colocated_vllm, resolve_request
from .loop import Found, Scored, SolverRuntime, Walk, nearest_pins, show_value, solve_with
from .objective import OBJECTIVE, Candidate
from .request import PlanRequest, apply_pins, model_problems
from .results import LayoutResult, Option, Plan, RoleMemory, engine_concurrency, rollout_summary, waves_for
from .timing import option_time

__all__ = ["OBJECTIVE", "GENERATION_CHOICES", "solve", "evaluate", "candidate_topologies", "completion_ladder",
           "utilizations", "generation_step"]

DEFAULT_OPTIM = "adamw_8bit"  # the best optimizer when the machine that trains is not this one
GENERATION_CHOICES = (8, 16, 4, 2)  # num_generations the solver may pick when the user does not


def completion_ladder(target: int) -> list[int]:
    """Completion lengths to try, longest first: the target, then shrinking by ~1/8 to 64."""
    out, c = [], target
    while c >= 64:
        out.append(c)
        c = int(c * 7 / 8) // 32 * 32
    return out or [target]


def utilizations(lo: float, hi: float) -> list[float]:
    """The utilisation grid, highest first, step 0.01."""
    n = int(round((hi - lo) / 0.01))
    return [round(hi - i * 0.01, 2) for i in range(n + 1)]


def generation_step(B: int, G: int, world: int) -> int:
    """Completions per device must be a multiple of B and make ``B x S x world`` a multiple of G."""
    g = G // math.gcd(G, world)
    return B * g // math.gcd(B, g)


def colocate_only_settings(req: PlanRequest) -> list[str]:
    """The settings the request fixes that only colocated vLLM reads (GRPOConfig's ``vllm_*`` engine
    settings; a ``trl vllm-serve`` server takes its own flags): fixing one rules the server layouts out."""
    names = [k for k in ("vllm_gpu_memory_utilization", "vllm_enable_sleep_mode", "vllm_max_model_length")
             if getattr(req.pins, k) is not None]
    return names + (["vllm_tensor_parallel_size"] if req.vllm.tensor_parallel_size is not None else [])


def candidate_topologies(spec: ModelSpec, req: PlanRequest) -> tuple[list[Topology], list[tuple[Topology, str]]]:
    """Every layout to evaluate, and those the rules reject up front as ``(Topology, why)``.

    Colocate: TP in the divisors of the GPUs per node (TP groups stay on one node; one GPU: TP 1
    unless the user set it). Server: on one node, ``k = 1 .. num_gpus - 1`` server GPUs; on
    several nodes, node 0 serves. The server runs TP = k (dense models: ``trl vllm-serve``
    refuses DP > 1), or TP x DP = k for MoE models. Settings only colocated vLLM reads
    (:func:`colocate_only_settings`) rule the server out (InvalidSetupError with ``layout="server"``),
    and a TP the user fixed that cannot run is an InvalidSetupError, not a rejected layout."""
    o = req.topology
    num_gpus, num_nodes, total = o.num_gpus, o.num_nodes, o.num_gpus * o.num_nodes
    out: list[Topology] = []
    rejected: list[tuple[Topology, str]] = []

    def engines(world: int) -> list[str]:
        if world == 1:
            return ["ddp"]
        return list(AUTO_ENGINES) if o.engine == "auto" else [o.engine]

    if o.use_vllm is False:  # transformers' generate in the trainer: one layout, nothing of vLLM's to choose
        return [Topology(num_gpus, num_nodes, "ddp", "generate")], []
    colocated_settings = colocate_only_settings(req)
    if o.layout == "server" and colocated_settings:
        raise InvalidSetupError(f"{', '.join(colocated_settings)} configure{'s' * (len(colocated_settings) == 1)} "
                                f"colocated vLLM (vllm_mode='colocate'): with --layout server TRL does not read "
                                f"{'it' if len(colocated_settings) == 1 else 'them'} (the server takes `trl vllm-serve`'s "
                                f"flags); drop {'it' if len(colocated_settings) == 1 else 'them'} or use --layout colocate")
    if o.layout in ("auto", "colocate"):
        fixed = req.vllm.tensor_parallel_size
        tps = [fixed] if fixed else [t for t in range(1, num_gpus + 1) if num_gpus % t == 0]
        for t in tps:
            why = tp_problem(spec, t)
            if why is None and num_gpus % t:
                why = f"TP {t} groups would span nodes of {num_gpus} GPUs"
            if why and fixed:  # the user's TP cannot run: bad input, not a search that found nothing
                raise InvalidSetupError(f"--vllm-tensor-parallel-size {t}: {why}" if num_gpus % t == 0 else
                                        f"--vllm-tensor-parallel-size {t} does not divide the {num_gpus} GPUs per "
                                        f"node (TRL's rule: tensor_parallel_size must divide the world size, and "
                                        f"a TP group stays on one node); use a divisor of {num_gpus}")
            for e in engines(total):
                topo = Topology(num_gpus, num_nodes, e, "colocate", vllm_tensor_parallel_size=t)
                (rejected.append((topo, why)) if why else out.append(topo))
    if o.layout in ("auto", "server") and total > 1 and not colocated_settings:
        k_fixed = o.server_gpus
        if num_nodes > 1:
            ks = [k_fixed] if k_fixed else [num_gpus]
        else:
            ks = [k_fixed] if k_fixed else list(range(1, num_gpus))
        for k in ks:
            if not 1 <= k <= num_gpus or (num_nodes == 1 and k >= num_gpus):
                raise InvalidSetupError(f"--server-gpus {k} leaves no training GPU on a node of {num_gpus}"
                                        if num_nodes == 1 else f"--server-gpus {k} must be at most {num_gpus}")
            splits = [(t, k // t) for t in range(1, k + 1) if k % t == 0] if spec.is_moe else [(k, 1)]
            for t, d in splits:
                why = tp_problem(spec, t)
                probe = Topology(num_gpus, num_nodes, "ddp", "server", server_gpus=k,
                                 server_tensor_parallel_size=t, server_data_parallel_size=d)
                for e in engines(probe.world_size):
                    topo = replace(probe, engine=e)
                    (rejected.append((topo, why)) if why else out.append(topo))
    return out, rejected


# -- the search ---------------------------------------------------------------------------------

class Search:
    """One solve's caches: trainer terms per (B, C, accumulation), rank memory per topology,
    vLLM capacities per (TP, utilisation, C, max_num_seqs), the server's best utilisation."""

    def __init__(self, req: PlanRequest, spec: ModelSpec, card: GpuSpec, asked: PlanRequest | None = None):
        self.req, self.spec, self.card = req, spec, card
        # the request as the user gave it (before apply_pins wrote the pins into its sections): what a
        # pin released means, for the infeasible message (nearest_pins)
        self.asked = asked if asked is not None else req
        t, g = req.trainer, req.targets
        self.P = g.prompt_length
        # what the trainer trains on: the length a batch pads to (TRL pads to its longest prompt), else the bound
        self.P_trained = g.typical_prompt_length or g.prompt_length
        self.turns = g.rollout_turns  # the trainer trains on up to this many turns of P + C
        self.pins = req.pins
        if g.margin is None:
            raise InvalidSetupError("margin must be set (planner.plan fills the memory model's band)")
        self.margin: float = g.margin
        self.budget = margin_budget_bytes(card, g.margin)
        # vLLM's sleep mode (CuMem allocator) refuses PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
        sleep_ok = not t.expandable_segments
        self.sleeps = {"auto": [False, True] if sleep_ok else [False], "on": [True], "off": [False]}[g.sleep_mode]
        self.G_options = [g.num_generations] if g.num_generations else list(GENERATION_CHOICES)
        self.utils = utilizations(*g.utilization_range)
        self.calibration = resolve_request(req).calibration
        self.base: dict[str, Any] = dict(
            weights=t.weights, finetune=t.finetune, lora_rank=t.lora_rank, lora_target_modules=t.lora_target_modules,
            optim=t.optim or DEFAULT_OPTIM, gradient_checkpointing=t.gradient_checkpointing,
            logprob_head=t.logprob_head or "fused", expandable_segments=bool(t.expandable_segments),
            transformers_version=t.transformers_version)
        self.cards: tuple[GpuSpec, ...] = (card,)
        self.topos: list[Topology] = []  # the layouts searched, and those rejected up front (TRL_RUNTIME.prepare)
        self.rejected: list[tuple[Topology, str]] = []
        self.labels: list[str] = []
        self.warnings: dict[tuple, list[str]] = {}  # per trainer setup tried: the plan reports its own
        self._tm: dict = {}
        self._rank: dict = {}
        self._rows: dict = {}
        self._cap: dict = {}
        self._server: dict = {}
        self._seconds: dict = {}

    # trainer side
    def model_len(self, C: int) -> int:
        """vLLM's max_model_len: a pinned ``vllm_max_model_length``, else prompt + completion."""
        return self.pins.vllm_max_model_length or self.P + C

    @property
    def batch_limit(self) -> int:
        """The largest micro-batch tried: the cap, or a pinned batch above it (given, or implied by
        pinned completions per step and accumulation)."""
        pins = self.pins
        implied = pins.completions // pins.accumulation if pins.completions and pins.accumulation else 0
        return max(self.req.targets.max_batch, pins.per_device_train_batch_size or 0, implied)

    def setup(self, B: int, C: int, ga: int = 2, world: int = 1) -> TrainerSetup:
        """The trainer setup for micro-batch B of P + C tokens (``rollout_turns`` of them one after the
        other). ``ga`` 2 stands for any accumulation (later micro-batches hold the earlier ones'
        gradients; more steps add nothing more)."""
        return TrainerSetup(**self.base, batch_size=B, prompt_length=self.P_trained * self.turns,
                            completion_length=C * self.turns, gradient_accumulation_steps=ga, world_size=world)

    def seconds(self, topo: Topology, B: int, C: int, n: int, conc: int, sleep: bool,
                cap: VllmCapacity | None) -> float:
        """The predicted seconds per optimizer step of a candidate (planner.search.timing.option_time),
        cached: beyond the sequences generated, more concurrency changes nothing, vLLM's share changes
        only the concurrency (its weights are the same at every share), and the micro-batch only the
        per-micro-batch weight reads."""
        conc = min(conc, n * topo.world_size * max(1, topo.vllm_tensor_parallel_size))
        # the micro-batch counts only where each one re-reads the weights (4-bit dequantisation, ZeRO-3)
        per_micro_batch = self.base["weights"] == "nf4" or topo.engine in ("zero3", "fsdp")
        key = (topo, B if per_micro_batch else 0, C, n, conc, sleep)
        if key not in self._seconds:
            self._seconds[key] = self._step_seconds(topo, B, C, n, conc, sleep, cap)
        return self._seconds[key]

    def _step_seconds(self, topo: Topology, B: int, C: int, n: int, conc: int, sleep: bool,
                      cap: VllmCapacity | None) -> float:
        if cap is None and topo.vllm_mode == "server":
            got = self.server(topo.server_tensor_parallel_size, topo.server_data_parallel_size, C)
            cap = got[1] if got[0] is not None else None
        return option_time(self.spec, self.card, self.setup(B, C), topo, n, conc, sleep, cap, "trl",
                           **self.req.targets.timing_inputs(), trl_version=self.req.vllm.trl_version).step_seconds

    def trainer(self, B: int, C: int, ga: int = 2) -> TrainerMemory:
        """One process's trainer terms, calibrated where a profile covers the setup."""
        key = (B, C, ga)
        if key not in self._tm:
            tm, label, warnings = calibrated_trainer_memory(self.spec, self.setup(B, C, ga), self.calibration)
            if label not in self.labels:
                self.labels.append(label)
            self.warnings[key] = list(warnings)
            self._tm[key] = tm
        return self._tm[key]

    def rank(self, topo: Topology, B: int, C: int, ga: int = 2) -> RankMemory:
        key = (topo.engine, topo.world_size, topo.vllm_mode, B, C, ga)
        if key not in self._rank:
            self._rank[key] = rank_trainer_memory(self.spec, self.setup(B, C, ga, topo.world_size), topo,
                                                  trainer=self.trainer(B, C, ga))
        return self._rank[key]

    def rows(self, topo: Topology, C: int) -> list[dict[str, int]]:
        """Block totals of a training rank (accumulating) for B = 1, 2, ... while its own step and
        weight sync fit the budget."""
        key = (topo.engine, topo.world_size, topo.vllm_mode, C)
        if key not in self._rows:
            rows = []
            for B in range(1, self.batch_limit + 1):
                tot = block_totals(self.rank(topo, B, C).blocks())
                if max(tot["step"], tot["resident"] + tot["sync"]) > self.budget:
                    break
                rows.append(tot)
            self._rows[key] = rows
        return self._rows[key]

    # transformers' generate (no vLLM)
    def generate_block(self, B: int, C: int, S: int) -> dict[str, int]:
        """transformers' ``generate`` of the ``B x S`` completions of one generation (planner.memory.generate)."""
        setup = self.setup(B, C)
        shape = GenerationShape(B * S, setup.prompt_length, setup.completion_length, setup.compute_bytes)
        return generation_components(self.spec, shape, quantized=setup.weights in ("nf4", "int8"),
                                     largest_matrix_params=largest_projection_params(self.spec))

    # vLLM side
    def capacity(self, tp: int, u: float, C: int, max_num_seqs: int, trainer_load: int = 0) -> VllmCapacity:
        """The engine TRL builds (estimation.colocated_vllm); ``trainer_load`` only moves the
        start-up check (the search checks start-up itself)."""
        key = (tp, u, C, max_num_seqs, trainer_load)
        if key not in self._cap:
            v = self.req.vllm
            self._cap[key] = colocated_vllm(self.spec, self.card, trainer_load, u, weights=self.base["weights"],
                                            max_model_len=self.model_len(C), max_num_seqs=max_num_seqs,
                                            tensor_parallel_size=tp, kv_cache_dtype=v.kv_cache_dtype,
                                            vllm_version=v.vllm_version, trl_version=v.trl_version)
        return self._cap[key]

    def probe(self, tp: int, u: float, C: int) -> tuple[VllmCapacity, dict[str, int]]:
        """The engine sized for the most sequences a plan may send (an upper bound of the footprint)."""
        cap = self.capacity(tp, u, C, self.req.targets.max_completions_per_step)
        return cap, block_totals(vllm_blocks(cap))

    def exact_blocks(self, topo: Topology, B: int, C: int, S: int, u: float) -> tuple[dict, VllmCapacity | None]:
        """The blocks of the configuration as it will run: its own accumulation, and (colocated)
        the engine with ``max_num_seqs = B x S x TP`` as TRL passes it."""
        rank = self.rank(topo, B, C, min(S, 2))
        blocks = dict(rank.blocks())
        if topo.vllm_mode == "generate":
            blocks["generate"] = self.generate_block(B, C, S)
            return blocks, None
        if topo.vllm_mode != "colocate":
            return blocks, None
        tp = topo.vllm_tensor_parallel_size
        cap = self.capacity(tp, u, C, trl_max_num_seqs(B, S, tp), trainer_load=rank.vllm_start_bytes)
        blocks.update(vllm_blocks(cap))
        return blocks, cap

    def server(self, t: int, d: int, C: int) -> tuple:
        """The server's best utilisation at completion length C: (u, capacity, concurrency, GPU peak) or
        (None, why). The highest utilisation in the server range whose footprint fits the budget."""
        key = (t, d, C)
        if key in self._server:
            return self._server[key]
        lo, hi = self.req.topology.server_utilization_range
        spec, card, v = self.spec, self.card, self.req.vllm
        extra = NCCL_BUFFER_BYTES_PER_RANK + largest_parameter_params(spec) * 2
        ceiling = (self.budget - baseline_bytes(t, v.vllm_version) - extra) / card.total_bytes
        u = min(hi, math.floor(ceiling * 100) / 100)
        result: tuple = (None, f"the server's weights and buffers leave no room at utilisation >= {lo}")
        while u >= lo - 1e-9:
            cap = vllm_capacity(spec, card, gpu_memory_utilization=round(u, 2), max_model_len=self.model_len(C),
                                tensor_parallel_size=t, kv_cache_dtype=v.kv_cache_dtype,
                                vllm_version=v.vllm_version, usage_context="OPENAI_API_SERVER")
            peak = sum(server_gpu_components(cap, spec).values())
            if peak <= self.budget:
                if cap.startup_ok and cap.max_concurrency >= 1:
                    conc = d * min(int(cap.max_concurrency), cap.max_num_seqs)
                    result = (round(u, 2), cap, conc, peak)
                else:
                    result = (None, "vLLM server: " + "; ".join(cap.errors or ("no full-length sequence fits",)))
                break
            u -= 0.01
        self._server[key] = result
        return result


def _first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".")


def _exact_option(s: Search, topo: Topology, C: int, B: int, n: int, u: float, sleep: bool, conc: int,
                  server_peak: int = 0) -> Option:
    """The option as it will run: its exact phases and, colocated, the concurrency of the engines TRL
    builds with this config (``max_num_seqs = B x S x TP``, planner.specs.versions.trl_max_num_seqs),
    whatever ``conc`` the search's bound had; ``conc`` is a server's (all its replicas)."""
    blocks, cap = s.exact_blocks(topo, B, C, n // B, u)
    peak = phase_peak_bytes(block_totals(blocks), _placement(topo), sleep)
    if cap is not None:
        conc = engine_concurrency(cap) * topo.num_engines
    return Option(topo, C, B, n, u, sleep, conc, peak, server_peak, s.seconds(topo, B, C, n, conc, sleep, cap))


def _placement(topo: Topology) -> str:
    """The training rank's placement (planner.memory.phases.PLACEMENTS) of a layout."""
    return {"colocate": "colocate", "generate": "generate"}.get(topo.vllm_mode, "none")


def _completions(s: Search, B: int, step: int, n_cap: int, N: int) -> int | None:
    """Completions per device at micro-batch B: fixed by a pinned accumulation or completions per
    step (a pin beats the cap), else the most up to the cap; None when the pins exclude B or TRL's
    rules (whole micro-batches, whole groups) reject the pinned numbers."""
    pins = s.pins
    if pins.per_device_train_batch_size is not None and B != pins.per_device_train_batch_size:
        return None
    if pins.accumulation is not None:
        n = B * pins.accumulation
        if pins.completions is not None and n * N != pins.completions:
            return None  # all three pinned: B x S x world must be the pinned completions
    elif pins.completions is not None:
        if pins.completions % N:
            return None
        n = pins.completions // N
    else:
        return max(step, n_cap // step * step)
    return n if n % step == 0 else None


def _pin_rule_why(s: Search, G: int | tuple[int, ...], N: int | tuple[int, ...]) -> str:
    """Why the pinned batch numbers break TRL's rules on ``N`` training GPU(s) with groups of ``G``
    (one value, or every one the search may take), naming the rule."""
    pins = s.pins
    B, S, n = pins.per_device_train_batch_size, pins.accumulation, pins.completions
    Gs, Ns = (G,) if isinstance(G, int) else G, (N,) if isinstance(N, int) else N
    parts = [f"{k} {v}" for k, v in (("per_device_train_batch_size", B), ("gradient_accumulation_steps", S),
                                     ("generation_batch_size", n)) if v is not None]
    on = f"on {' or '.join(map(str, Ns))} training GPU(s)"
    if B is not None and S is not None and n is not None:
        return (f"pinned {', '.join(parts)} {on}: TRL's generation_batch_size = per_device_train_batch_size x "
                f"steps_per_generation x world size, with steps_per_generation = gradient_accumulation_steps "
                f"here (one generation per optimizer step): {B} x {S} x {' or '.join(map(str, Ns))} is not {n}; "
                f"pin two of the three")
    groups = " or ".join(map(str, Gs))
    return (f"pinned {', '.join(parts)} {on}: TRL's rules need generation_batch_size divisible by "
            f"per_device_train_batch_size x world size (whole micro-batches on every GPU) and by "
            f"num_generations {groups} (whole groups)")


def _fixed_batch(s: Search, N: int) -> int | None:
    """The micro-batch the pins fix on N training GPUs: pinned, or implied by pinned completions per
    step and accumulation (None: free, or no whole micro-batch, which TRL's rules reject)."""
    pins = s.pins
    if pins.per_device_train_batch_size is not None:
        return pins.per_device_train_batch_size
    if pins.completions is not None and pins.accumulation is not None:
        q, r = divmod(pins.completions, N * pins.accumulation)
        return q if q >= 1 and not r else None
    return None


def _batch_label(s: Search, B: int, N: int) -> str:
    """``per_device_train_batch_size B (pinned)``, or where the pins imply it from."""
    pins = s.pins
    if pins.per_device_train_batch_size is not None:
        return f"per_device_train_batch_size {B} (pinned)"
    return (f"per_device_train_batch_size {B} (generation_batch_size {pins.completions} / gradient_accumulation_steps "
            f"{pins.accumulation} / {N} training GPU(s), pinned)")


def _rules_admit(s: Search, N: int, G: int) -> bool:
    """Whether some micro-batch meets TRL's rules with the pinned batch numbers on N training GPUs
    with groups of G (memory aside)."""
    B_pin = s.pins.per_device_train_batch_size
    batches = [B_pin] if B_pin is not None else range(1, s.batch_limit + 1)
    return any(_completions(s, B, generation_step(B, G, N), 1 << 30, N) is not None for B in batches)


def pin_rule_problem(s: Search) -> str | None:
    """The line naming TRL's rule when the pinned batch numbers meet it on no layout searched with no
    group size tried (they contradict each other or the rule, whatever the memory); None otherwise."""
    pins = s.pins
    if pins.per_device_train_batch_size is None and pins.accumulation is None and pins.completions is None:
        return None
    worlds = sorted({t.world_size for t in s.topos})
    if not worlds or any(_rules_admit(s, N, G) for N in worlds for G in s.G_options):
        return None
    return _pin_rule_why(s, tuple(s.G_options), tuple(worlds))


def _trl_candidates(s: Search, stage: tuple[int, int], topo: Topology, walk: Walk) -> Iterator[Scored]:
    """One layout's candidates at completion length C and group size G (``stage``), or why none
    fits: the training step alone first, then vLLM's side (a server, or the colocated engine)."""
    C, G = stage
    rows = s.rows(topo, C)
    walk.why = _trainer_why(s, topo, C, rows)
    if walk.why:
        return
    if topo.vllm_mode == "server":
        yield from _server_candidates(s, topo, C, G, rows, walk)
    elif topo.vllm_mode == "generate":
        yield from _generate_candidates(s, topo, C, G, rows, walk)
    else:
        yield from _colocated_candidates(s, topo, C, G, rows, walk)


def _trainer_why(s: Search, topo: Topology, C: int, rows: list[dict[str, int]]) -> str:
    """Why the training step alone rules the layout out (a pinned micro-batch whose step does not
    fit, the weight sync, or batch 1 over the budget), or "" when some micro-batch's step fits."""
    budget = s.budget
    B_pin = _fixed_batch(s, topo.world_size)
    per = " per rank" if topo.world_size > 1 else ""
    if rows and B_pin is not None and B_pin > len(rows):
        r = s.rank(topo, B_pin, C)
        need = max(r.peak_bytes, r.steady_bytes + r.sync_bytes)
        return (f"{_batch_label(s, B_pin, topo.world_size)}: the training step needs {need / GIB:.1f} GiB{per} "
                f"before vLLM's share, over the {budget / GIB:.1f} GiB budget; micro-batch {len(rows)} is the "
                f"largest whose step fits")
    if rows:
        return ""
    r = s.rank(topo, 1, C)
    c = r.components
    big = max(c, key=lambda k: c[k])
    if r.steady_bytes + r.sync_bytes > budget and r.sync_bytes > r.peak_bytes - r.steady_bytes:
        return (f"the weight sync allocates {r.sync_bytes / GIB:.1f} GiB per rank on top of "
                f"{r.steady_bytes / GIB:.1f} GiB resident (budget {budget / GIB:.1f} GiB)")
    return (f"the trainer alone needs {r.peak_bytes / GIB:.1f} GiB{per} at batch 1 (largest term: {big} "
            f"{c[big] / GIB:.1f} GiB) but {s.card.name} allows {budget / GIB:.1f} GiB with a {s.margin:.0%} margin")


def _server_candidates(s: Search, topo: Topology, C: int, G: int, rows: list[dict[str, int]],
                       walk: Walk) -> Iterator[Scored]:
    """A ``trl vllm-serve`` layout: the server's best utilisation (Search.server), then every
    micro-batch whose training rank fits with the weight sync (its exact option built on demand)."""
    got = s.server(topo.server_tensor_parallel_size, topo.server_data_parallel_size, C)
    if got[0] is None:
        walk.why = got[1]
        return
    u, cap, conc, server_peak = got
    N = topo.world_size
    n_cap = min(s.req.targets.max_completions_per_step, conc // N)
    yielded = False
    for B, tot in enumerate(rows, start=1):
        peak = phase_peak_bytes(tot, "none", False)
        if peak > s.budget:
            break
        n = _completions(s, B, generation_step(B, G, N), n_cap, N)
        if n is None:
            continue
        yielded = True
        yield Scored(Candidate(C, n * N, waves_for(topo, n, conc), B, u, False, topo.engine,
                               topo.server_tensor_parallel_size), peak,
                     lambda B=B, n=n: _exact_option(s, topo, C, B, n, u, False, conc, server_peak),
                     partial(s.seconds, topo, B, C, n, conc, False, cap))
    if not yielded:
        walk.why = _pin_rule_why(s, G, N) if s.pins.items() else "no micro-batch fits beside the weight sync"


def _generate_candidates(s: Search, topo: Topology, C: int, G: int, rows: list[dict[str, int]],
                         walk: Walk) -> Iterator[Scored]:
    """No vLLM (``use_vllm=False``): every micro-batch whose step fits, with the most completions per
    step whose generation (transformers' ``generate`` of all of them at once) fits too; one wave."""
    N = topo.world_size
    n_cap = s.req.targets.max_completions_per_step
    yielded = ruled_out = False
    for B, tot in enumerate(rows, start=1):
        step = generation_step(B, G, N)
        n = _completions(s, B, step, n_cap, N)
        if n is None:
            ruled_out = True
            continue
        pinned = s.pins.accumulation is not None or s.pins.completions is not None
        peak = _generate_peak(s, tot, B, C, n)
        while peak > s.budget and not pinned and n - step >= step:
            n -= step  # fewer completions per generation: a smaller generation batch
            peak = _generate_peak(s, tot, B, C, n)
        if peak > s.budget:
            continue
        yielded = True
        yield Scored(Candidate(C, n * N, 1, B, 0.0, False, topo.engine, 1), peak,
                     lambda B=B, n=n: _exact_option(s, topo, C, B, n, 0.0, False, n * N),
                     partial(s.seconds, topo, B, C, n, n * N, False, None))
    if not yielded:
        walk.why = _pin_rule_why(s, G, N) if ruled_out and s.pins.items() else \
            "no micro-batch's generation (transformers' generate of its completions) fits beside the trainer"


def _generate_peak(s: Search, tot: dict[str, int], B: int, C: int, n: int) -> int:
    return phase_peak_bytes({**tot, "generate": sum(s.generate_block(B, C, n // B).values())}, "generate", False)


def _engine_problem(s: Search, cap: VllmCapacity, u: float, tp: int, start_bytes: int) -> tuple[str, str]:
    """Whether the colocated engine runs at utilisation u: ``("start", why)`` when vLLM cannot start
    beside the trainer's loaded weights, ``("kv", why)`` when it holds no full-length sequence,
    ``("", "")`` when it runs."""
    err = startup_error(s.card.usable_bytes - start_bytes - cap.baseline_bytes, s.card.total_bytes, u,
                        cap.budget_bytes)
    if err:
        return "start", (f"vLLM cannot start beside the trainer's {start_bytes / GIB:.1f} GiB of loaded weights "
                         f"even at utilisation {u}: {_first_sentence(err)}")
    if not cap.startup_ok or cap.max_concurrency < 1:
        return "kv", (f"vLLM at utilisation {u} (TP {tp}, weights {cap.weights_bytes / GIB:.1f} GiB per GPU): "
                      + _first_sentence("; ".join(cap.errors) or "no full-length sequence fits"))
    return "", ""


def _colocated_candidates(s: Search, topo: Topology, C: int, G: int, rows: list[dict[str, int]],
                          walk: Walk) -> Iterator[Scored]:
    """A colocated layout: every utilisation at which vLLM runs, every sleep setting and every
    micro-batch whose phases fit beside it (upper bounds; the exact option built on demand)."""
    tp, N = topo.vllm_tensor_parallel_size, topo.world_size
    B_pin = _fixed_batch(s, N)
    cap_n = s.req.targets.max_completions_per_step
    start_bytes = s.rank(topo, 1, C).vllm_start_bytes
    yielded = False
    kv_why = start_why = ""
    ruled_out = False  # a micro-batch fitted but the pinned batch numbers broke TRL's rules
    lowest_started = None  # the lowest utilisation at which vLLM starts: the phases' best chance
    for u in s.utils:
        cap, vtot = s.probe(tp, u, C)
        kind, why = _engine_problem(s, cap, u, tp, start_bytes)
        if kind == "start":
            start_why = why
            continue
        if kind == "kv":
            kv_why = kv_why or why
            continue
        lowest_started = u
        conc_engine = int(cap.max_concurrency)
        conc = conc_engine * topo.num_engines
        n_cap = min(cap_n, conc_engine) // tp
        for sleep in s.sleeps:
            for B, tot in enumerate(rows, start=1):
                peak = phase_peak_bytes({**tot, **vtot}, "colocate", sleep)
                if peak > s.budget:
                    break  # larger B only grows
                n = _completions(s, B, generation_step(B, G, N), n_cap, N)
                if n is None:
                    ruled_out = ruled_out or B_pin is None or B == B_pin
                    continue
                yielded = True
                yield Scored(Candidate(C, n * N, waves_for(topo, n, conc), B, u, sleep, topo.engine, tp), peak,
                             lambda B=B, n=n, u=u, sleep=sleep, conc=conc:
                             _exact_option(s, topo, C, B, n, u, sleep, conc),
                             partial(s.seconds, topo, B, C, n, conc, sleep, cap))
    if yielded:
        return
    if ruled_out:
        walk.why = _pin_rule_why(s, G, N)
    elif lowest_started is not None:
        walk.why = _colocated_over_budget(s, topo, C, rows, lowest_started)
    else:  # vLLM not starting even at the lowest utilisation says the most; else the KV cache's reason
        walk.why = start_why if f"even at utilisation {s.utils[-1]}:" in start_why else kv_why or start_why


def _colocated_over_budget(s: Search, topo: Topology, C: int, rows: list[dict[str, int]], u: float) -> str:
    """Why nothing fits although vLLM starts: the smallest process (batch 1, or the pinned batch)
    beside vLLM at the lowest utilisation at which it starts, against the budget."""
    B_pin = _fixed_batch(s, topo.world_size)
    _, vtot = s.probe(topo.vllm_tensor_parallel_size, u, C)
    B0 = B_pin or 1
    need = min(phase_peak_bytes({**rows[B0 - 1], **vtot}, "colocate", sl) for sl in s.sleeps)
    per = "a training rank needs" if topo.world_size > 1 else "the process needs"
    at = _batch_label(s, B0, topo.world_size) if B_pin else "batch 1"
    return (f"{per} {need / GIB:.1f} GiB at {at} with vLLM at utilisation {u} "
            f"({vtot['vllm_awake'] / GIB:.1f} GiB), over the {s.budget / GIB:.1f} GiB budget")


# -- solve --------------------------------------------------------------------------------------

def _resolve(req: PlanRequest) -> tuple[ModelSpec, GpuSpec, tuple[GpuSpec, ...]]:
    r = resolve_request(req)
    spec, card, cards = r.model, r.card, r.cards
    problems = model_problems(req, spec)
    if problems:
        raise InvalidSetupError("\n".join(problems))
    return spec, card, cards


def solve(req: PlanRequest) -> Plan:
    """The configuration that fits and makes the most of the GPUs (module docstring), for the
    request's runtime (``req.runtime``: :func:`runtime_of`), by the one loop of every runtime
    (planner.search.loop.solve_with). A TRL request must be complete: ``max_completion_length``
    set (planner.api.plan fills the defaults). Pinned settings (``req.pins``) are held; the search
    chooses only the rest."""
    return solve_with(runtime_of(req), req)


def runtime_of(req: PlanRequest) -> SolverRuntime:
    """The runtime the request plans for (``req.runtime``)."""
    if req.runtime == "unsloth":
        from .unsloth_solver import UNSLOTH_RUNTIME  # a TRL plan does not load the Unsloth runtime

        return UNSLOTH_RUNTIME
    return TRL_RUNTIME


class TrlSolverRuntime:
    """TRL's GRPOTrainer with vLLM (colocated, or a ``trl vllm-serve`` server) on 1..N GPUs, as the
    one solver sees it (planner.search.loop.SolverRuntime): the layouts are its parts, the
    completion ladder x the group sizes its stages, the blocks of planner.memory.phases its memory."""

    name: str = "trl"
    reads_environment: bool = True
    installed: tuple[str, ...] = ("trl", "vllm", "transformers", "bitsandbytes")

    def prepare(self, req: PlanRequest) -> Search:
        asked = replace(req, resolved=resolve_request(req))  # resolved once: `--gpu auto` reads the card once
        req = apply_pins(asked)
        if req.targets.max_completion_length is None:
            raise InvalidSetupError("max_completion_length must be set (planner.plan fills TRL's default)")
        if req.targets.sleep_mode == "on" and req.trainer.expandable_segments:
            raise InvalidSetupError("--sleep-mode on cannot run with expandable_segments:True: vLLM's CuMem "
                                    "allocator refuses it ('Expandable segments are not compatible with memory "
                                    "pool.'); unset expandable_segments or use --sleep-mode off or auto")
        spec, card, cards = _resolve(req)
        s = Search(req, spec, card, asked)
        s.cards = cards
        s.topos, s.rejected = candidate_topologies(spec, req)
        why = pin_rule_problem(s)
        if why:
            raise InvalidSetupError(why)
        return s

    def budget(self, s: Search) -> int:
        return s.budget

    def stages(self, s: Search) -> Iterator[tuple[int, int]]:
        """(C, G): the completion ladder, longest first; per length the user's G, else TRL's default
        8 first, other group sizes only if 8 fits nowhere."""
        target = s.req.targets.max_completion_length
        assert target is not None  # prepare checked it
        ladder = [target] if s.pins.max_completion_length is not None else completion_ladder(target)
        for C in ladder:
            for G in s.G_options:
                yield C, G

    def parts(self, s: Search) -> tuple[list[Topology], list[tuple[Topology, str]]]:
        return s.topos, s.rejected

    def candidates(self, s: Search, stage: tuple[int, int], part: Topology, walk: Walk) -> Iterator[Scored]:
        return _trl_candidates(s, stage, part, walk)

    def build(self, s: Search, stage: tuple[int, int], chosen: Topology, found: dict[Topology, Found],
              rejected: list[tuple[Topology, str]]) -> Plan:
        results = _layout_results(found, rejected, chosen)
        best = found[chosen]
        assert best.option is not None  # the solver builds a part that fits
        return build_plan(s, best.option, results, s.cards, stage[1], dict(best.by_sleep))

    def infeasible(self, s: Search, found: dict[Topology, Found],
                   rejected: list[tuple[Topology, str]]) -> InfeasibleError:
        return _infeasible(s.asked, s, list(_layout_results(found, rejected)))

    def checked(self, p: Plan, for_training: bool | None, strict: bool) -> Plan:
        """The layout's own checks, then every pre-flight check (planner.checks.preflight); an
        unmodelled architecture as a warning."""
        checked = with_checks(p, for_training=for_training, strict=strict)
        warnings = tuple(w for w in architecture_warnings(p.model) if w not in p.warnings)
        return replace(checked, checks=tuple(p.checks) + tuple(checked.checks), warnings=tuple(p.warnings) + warnings)

    def next_steps(self, p: Plan) -> None:
        return None  # planner.report.next_steps


TRL_RUNTIME = TrlSolverRuntime()


def _layout_results(found: dict[Topology, Found], rejected: list[tuple[Topology, str]],
                    chosen: Topology | None = None) -> tuple[LayoutResult, ...]:
    """The layout comparison: each layout searched (its best option or why none fits), then those
    rejected up front."""
    return (tuple(LayoutResult(t, f.option, f.why, chosen=t == chosen) for t, f in found.items())
            + tuple(LayoutResult(t, None, why) for t, why in rejected))


def _infeasible(req: PlanRequest, s: Search, results: list[LayoutResult]) -> InfeasibleError:
    """Name what breaks the budget and find the closest plan that fits, keeping every other setting
    the user made (the request is relaxed with dataclasses.replace)."""
    spec, card = s.spec, s.card
    if req.multi_gpu or len(results) > 1:
        shown = "; ".join(f"{r.topology.label} {ENGINE_LABELS[r.topology.engine]}: {r.why}" for r in results[:6])
        msg = f"no layout fits {spec.model_id} on {req.topology.num_gpus * req.topology.num_nodes} x {card.name}: {shown}"
    else:
        msg = f"no configuration fits: {results[0].why}" if results else "no configuration fits"
    closest = None
    tried = []
    if req.relax and req.pins.items():
        nearest, closest = nearest_pins(req, solve)
        msg += "; " + "; ".join(nearest)
    if req.relax and closest is None:
        t, g = req.trainer, req.targets
        relaxations: list[tuple[str, dict[str, Any]]] = []
        if t.weights in ("bf16", "fp16", "fp32") and t.finetune == "lora":
            relaxations.append(("4-bit weights (--weights nf4)", dict(weights="nf4")))
        if t.finetune == "lora" and t.lora_rank > 8:
            relaxations.append(("LoRA rank 8", dict(lora_rank=8)))
        if g.utilization_range[0] > 0.1 or g.utilization_range[1] < 0.9:
            relaxations.append(("utilisation range 0.1-0.9 (--utilization-range 0.1,0.9)",
                                dict(utilization_range=(min(0.1, g.utilization_range[0]),
                                                        max(0.9, g.utilization_range[1])))))
        for label, change in relaxations:
            tried.append(label)
            try:
                closest = solve(req.with_options(**change, relax=False))
            except (InfeasibleError, InvalidSetupError):
                continue
            closest = replace(closest, extra={**closest.extra, "relaxation": label})
            break
    if closest is not None and "released" in closest.extra.get("relaxation", ""):
        pass  # the pin's nearest value is in the message already
    elif closest is not None:
        c = closest.config
        layout = (f" with {closest.topology.label}, {ENGINE_LABELS[closest.topology.engine]}"
                  if closest.multi_gpu else "")
        msg += (f"; closest plan that fits: {closest.extra['relaxation']}{layout} with batch "
                f"{c['per_device_train_batch_size']}, max_completion_length {c['max_completion_length']}, "
                f"vllm_gpu_memory_utilization {c.get('vllm_gpu_memory_utilization', '-')}")
    elif req.relax:
        msg += "; nothing close fits either (tried " + ", ".join(tried or ["shorter completions"]) + ")"
    return InfeasibleError(msg, closest=closest)


# -- the plan -----------------------------------------------------------------------------------

def build_plan(s: Search, opt: Option, results: tuple[LayoutResult, ...], cards: tuple[GpuSpec, ...], G: int,
               by_sleep: dict[bool, Option] | None = None, evaluated: bool = False) -> Plan:
    """The Plan of one option: the same blocks the search evaluated, the configs, the reasons."""
    req, spec, card, topo = s.req, s.spec, s.card, opt.topology
    B, C, S, o = opt.batch_size, opt.completion_length, opt.steps_per_generation, req.topology
    host = o.server_host or TRL_SERVE_DEFAULT_HOST
    blocks, cap = s.exact_blocks(topo, B, C, S, opt.utilization)
    rank = s.rank(topo, B, C, min(S, 2))
    tm = s.trainer(B, C, min(S, 2))
    roles, server = _roles(s, opt, blocks, cap, rank)
    assert roles["training_rank"].peak_bytes == opt.peak_bytes  # one phase model: equal by construction
    config = _trl_config(s, opt, G, host)
    passthrough = {k: v for k, v in req.passthrough if k not in config}  # a TRL config's unmodelled keys
    config.update(passthrough)
    config.update(_precision_as_given(dict(req.passthrough), card))
    checks = _layout_checks(s, topo, cards, config, rank, host)
    g = req.targets
    targets = dict(num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                   prompt_length=s.P, utilization_range=list(g.utilization_range), margin=s.margin,
                   sleep_mode=g.sleep_mode, layout=o.layout, engine=o.engine, num_gpus=o.num_gpus,
                   num_nodes=o.num_nodes)
    binding = {} if evaluated else _binding(s, opt, roles["training_rank"], G)
    reasons = _plan_reasons(s, opt, results, roles, cap, G, by_sleep or {}, binding, evaluated)
    warnings = list(s.warnings.get((B, C, min(S, 2)), []))  # the chosen setup's, not every one tried
    label = s.labels[0] if len(s.labels) == 1 else ("calibrated where covered, else analytic"
                                                    if s.labels else "analytic")
    setup = s.setup(B, C, S, topo.world_size)
    extra = {**({"server_host": host, "server_port": o.server_port} if topo.total_gpus > 1 else {}),
             **({"passthrough": list(passthrough)} if passthrough else {}),
             **({"rollout": rollout_summary(s.turns, s.P, C)} if s.turns > 1 else {}),
             **({"max_prompt_length": s.P} if s.P_trained != s.P else {})}
    return Plan(model=spec, gpu=card, gpus=tuple(cards), topology=topo, setup=setup, trainer=tm, config=config,
                roles=roles, margin=s.margin, targets=targets, option=opt, reasons=tuple(reasons), layouts=results,
                checks=tuple(checks), memory_model=label, warnings=tuple(warnings),
                accelerate=accelerate_settings(topo, config), deepspeed=deepspeed_settings(topo, config),
                server=server, extra=extra, pinned=req.pinned, binding=binding)


def _roles(s: Search, opt: Option, blocks: dict, cap: VllmCapacity | None,
           rank: RankMemory) -> tuple[dict[str, RoleMemory], dict[str, Any] | None]:
    """The memory of each kind of GPU (a training rank; with a server, a server GPU too) and the
    server's settings (None when colocated)."""
    spec, card, topo, C = s.spec, s.card, opt.topology, opt.completion_length
    N = topo.world_size
    if topo.vllm_mode in ("colocate", "generate"):
        return {"training_rank": RoleMemory("training_rank", N, topo.training_devices, blocks, _placement(topo),
                                            opt.sleep, s.budget, rank, cap)}, None
    t, d = topo.server_tensor_parallel_size, topo.server_data_parallel_size
    v = s.req.vllm
    scap = vllm_capacity(spec, card, gpu_memory_utilization=opt.utilization, max_model_len=s.model_len(C),
                         tensor_parallel_size=t, kv_cache_dtype=v.kv_cache_dtype, vllm_version=v.vllm_version,
                         usage_context="OPENAI_API_SERVER")
    roles = {"training_rank": RoleMemory("training_rank", N, topo.training_devices, blocks, "none", False,
                                         s.budget, rank),
             "server_gpu": RoleMemory("server_gpu", topo.server_gpus, topo.server_devices,
                                      {"vllm_awake": server_gpu_components(scap, spec)}, "server", False,
                                      s.budget, None, scap)}
    server = {"model": spec.model_id, "tensor_parallel_size": t, "data_parallel_size": d,
              "gpu_memory_utilization": opt.utilization, "max_model_len": s.model_len(C),
              "kv_cache_dtype": v.kv_cache_dtype, "host": TRL_SERVE_DEFAULT_HOST, "port": s.req.topology.server_port,
              "cuda_visible_devices": topo.server_devices, "node": 0, "max_num_seqs": scap.max_num_seqs,
              "max_num_batched_tokens": scap.max_num_batched_tokens}
    return roles, server


def _trl_config(s: Search, opt: Option, G: int, host: str) -> dict[str, Any]:
    """The GRPOConfig keyword arguments of the option (before a TRL config's unmodelled keys)."""
    topo, B, C, S = opt.topology, opt.batch_size, opt.completion_length, opt.steps_per_generation
    t_opts = s.req.trainer
    config: dict[str, Any] = {
        "per_device_train_batch_size": B,
        "gradient_accumulation_steps": S,
        # global and explicit: TRL derives steps_per_generation = generation_batch_size / (B x world)
        # = S at the real world size, and the file parses on any machine (grpo_config.py L1077-1095)
        "generation_batch_size": B * S * topo.world_size,
        "num_generations": G,
        "max_completion_length": C,
        "use_vllm": topo.vllm_mode != "generate",
    }
    if topo.vllm_mode != "generate":
        config["vllm_mode"] = topo.vllm_mode
    if topo.vllm_mode == "colocate":
        config.update({"vllm_gpu_memory_utilization": opt.utilization, "vllm_max_model_length": s.model_len(C),
                       "vllm_enable_sleep_mode": opt.sleep, "vllm_tensor_parallel_size": topo.vllm_tensor_parallel_size})
    elif topo.vllm_mode == "server":
        config.update({"vllm_server_host": host, "vllm_server_port": s.req.topology.server_port})
    config.update({"gradient_checkpointing": t_opts.gradient_checkpointing,
                   "bf16": bool(s.card.bf16) and t_opts.weights != "fp32", "optim": s.base["optim"]})
    if t_opts.use_liger_kernel:  # use_liger_loss before TRL 0.25 (planner.specs.versions TrlFacts.liger_field)
        config[trl_facts(s.req.vllm.trl_version).liger_field or "use_liger_kernel"] = True
    return config


def _precision_as_given(given: dict[str, Any], card: GpuSpec) -> dict[str, Any]:
    """A config file's ``bf16`` / ``fp16``, held as written (they choose autocast's dtype; the memory
    model's weights are ``--weights``), or refused when the card or TRL cannot run them."""
    precision: dict[str, Any] = {k: given[k] for k in ("bf16", "fp16") if k in given}
    if precision.get("bf16") and precision.get("fp16"):
        raise InvalidSetupError("bf16 and fp16 are both true in the config file: transformers refuses both; keep one")
    if precision.get("bf16") and not card.bf16:
        raise InvalidSetupError(f"bf16: true in the config file, but the {card.name} has no bf16 (compute capability "
                                f"below 8.0): set fp16: true instead, or plan for a card with bf16")
    if precision.get("fp16") and "bf16" not in precision:
        precision["bf16"] = False  # the planner's own bf16 would contradict the file's fp16
    return precision


def _layout_checks(s: Search, topo: Topology, cards: tuple[GpuSpec, ...], config: dict[str, Any],
                   rank: RankMemory, host: str) -> list:
    """The layout's own checks (several GPUs only): planner.checks.layout's, the server's address
    across nodes, ZeRO-3's full gather at the weight sync."""
    if topo.total_gpus == 1:
        return []
    checks = topology_checks(s.spec, topo, cards if len({c.total_bytes for c in cards}) > 1 else (), config)
    if topo.vllm_mode == "server" and topo.num_nodes > 1 and s.req.topology.server_host is None:
        checks.append(_check("server-host", "warning", f"vllm_server_host is {host}: the training nodes must "
                             "reach the server on node 0", "re-plan with --server-host <node 0 address>"))
    sync = rank.sync_components.get("zero3_full_gather")
    if sync:
        checks.append(_check("zero3-peft-sync", "info", f"ZeRO-3 + PEFT: each weight sync gathers the full model "
                             f"({sync / GIB:.1f} GiB per GPU) before merging the adapters (TRL 1.16 "
                             f"vllm_generation.py); counted in the weight_sync phase"))
    return checks


def _plan_reasons(s: Search, opt: Option, results: tuple[LayoutResult, ...], roles: dict[str, RoleMemory],
                  cap: VllmCapacity | None, G: int, by_sleep: dict[bool, Option], binding: dict[str, Any],
                  evaluated: bool) -> list[str]:
    """The plan's reasons: the pins, then why this option (one GPU, several), or the setup as given."""
    topo = opt.topology
    if evaluated:
        reasons = [f"evaluated as given (no search): {topo.label}, {ENGINE_LABELS[topo.engine]}, micro-batch "
                   f"{opt.batch_size} x {opt.steps_per_generation} steps per generation x {topo.world_size} ranks, "
                   f"completion length {opt.completion_length}"]
    elif topo.vllm_mode == "generate":
        reasons = _reasons_generate(s, opt, G, roles["training_rank"], binding)
    elif topo.total_gpus == 1:
        reasons = _reasons_one_gpu(s, opt, G, roles["training_rank"], cap, by_sleep, binding)
    else:
        reasons = _reasons(s, opt, results, roles, G, binding)
    return [f"{k} {show_value(v)}: pinned" for k, v in s.req.pins.items()] + reasons


def _limit(constraint: str, name: str, value: Any, detail: str) -> dict[str, Any]:
    return {"constraint": constraint, "name": name, "value": value, "detail": detail}


def _binding(s: Search, opt: Option, role: RoleMemory, G: int) -> dict[str, Any]:
    """What stopped a larger plan, per objective term: the completion length, the completions per
    step, the micro-batch, the utilisation. Each is a pin, a cap (a search bound with a flag) or a
    memory phase; ``constraint``/``name``/``detail`` at the top are the first term in the
    objective's order that a larger plan would have improved."""
    pins, g = s.pins, s.req.targets
    topo, B, C, n = opt.topology, opt.batch_size, opt.completion_length, opt.completions_per_device
    colocated = topo.vllm_mode == "colocate"
    lo, hi = g.utilization_range
    phase = role.binding_phase
    # utilisation (colocated vLLM's share; the server's is its own search)
    if topo.vllm_mode == "generate":
        util = _limit("none", "use_vllm", None, "no vLLM (use_vllm=False): no utilisation to choose")
    elif pins.vllm_gpu_memory_utilization is not None:
        util = _limit("pin", "vllm_gpu_memory_utilization", opt.utilization, f"vllm_gpu_memory_utilization "
                      f"{opt.utilization} is pinned")
    elif colocated and opt.utilization >= hi - 1e-9:
        util = _limit("cap", "utilization_range", hi, f"vllm_gpu_memory_utilization {opt.utilization:.2f}: the top "
                      f"of the range searched (--utilization-range {lo},{hi})")
    else:
        util = _limit("memory", phase, opt.utilization, f"vllm_gpu_memory_utilization {opt.utilization:.2f}: a "
                      f"higher share does not fit the {phase} phase")
    # micro-batch
    if pins.per_device_train_batch_size is not None:
        batch = _limit("pin", "per_device_train_batch_size", B, f"per_device_train_batch_size {B} is pinned")
    elif B >= g.max_batch:
        batch = _limit("cap", "max_batch", g.max_batch, f"micro-batch {B}: the largest tried (--max-batch "
                       f"{g.max_batch})")
    elif _largest_fitting_batch(s, opt) > B:
        batch = _limit("rule", "num_generations", G, f"micro-batch {B}: larger ones fit but B x S x ranks must "
                       f"make whole groups of {G} within the completions per step")
    else:
        batch = _limit("memory", "training" if colocated else phase, B, f"micro-batch {B}: the largest whose "
                       f"training step fits" + (" beside vLLM" if colocated else ""))
    # completions per step
    N = topo.world_size
    if pins.accumulation is not None:
        comp = _limit("pin", "gradient_accumulation_steps", opt.completions, f"{opt.completions} completions per "
                      f"step: gradient_accumulation_steps {pins.accumulation} is pinned")
    elif pins.completions is not None:
        comp = _limit("pin", "generation_batch_size", opt.completions, f"{opt.completions} completions per step "
                      f"are pinned")
    else:
        step = generation_step(B, G, N)
        cap_n = g.max_completions_per_step
        if n + step > cap_n:
            comp = _limit("cap", "max_completions_per_step", cap_n, f"{opt.completions} completions per step: "
                          f"the most allowed (--max-completions-per-step {cap_n} per GPU)")
        elif topo.vllm_mode == "generate":
            comp = _limit("memory", phase, opt.completions, f"{opt.completions} completions per step: as many as "
                          f"transformers' generate holds at once beside the trainer (the {phase} phase)")
        else:
            comp = dict(util) if util["constraint"] != "memory" else _limit(
                "memory", phase, opt.completions, f"{opt.completions} completions per step: as many as vLLM's KV "
                f"cache generates in one wave at utilisation {opt.utilization:.2f}, and a higher share does not fit "
                f"the {phase} phase")
            if util["constraint"] != "memory":
                comp["detail"] = (f"{opt.completions} completions per step: as many as vLLM's KV cache generates "
                                  f"in one wave at {util['detail']}")
    tgt = g.max_completion_length
    if pins.max_completion_length is not None:
        length = _limit("pin", "max_completion_length", C, f"max_completion_length {C} is pinned")
    elif C < (tgt or C):
        length = _limit("memory", phase, C, f"completion length cut to {C} (requested {tgt}): longer does not fit")
    else:
        length = _limit("target", "max_completion_length", C, f"completion length {C} reached as requested")
    limits = {"max_completion_length": length, "completions_per_step": comp, "per_device_train_batch_size": batch,
              "vllm_gpu_memory_utilization": util}
    top = length if length["constraint"] == "memory" else comp
    return {**{k: top[k] for k in ("constraint", "name", "value", "detail")}, "limits": limits}


def _util_reason(s: Search, opt: Option, role: RoleMemory, binding: dict[str, Any], whose: str = "") -> str:
    """Why this utilisation: the top of the range (a cap), a pin, or the phase that a higher one breaks."""
    card, margin = s.card, s.margin
    util = binding["limits"]["vllm_gpu_memory_utilization"]
    under = f"under {(1 - margin):.0%} of {card.total_bytes / GIB:.1f} GiB"
    if util["constraint"] == "memory":
        return (f"vllm_gpu_memory_utilization {opt.utilization:.2f}: the highest in the range that keeps every "
                f"phase{whose} {under} (binding phase: {role.binding_phase})")
    return (f"{util['detail']}; every phase{whose} fits {under} with {role.headroom_bytes / GIB:.1f} GiB to spare "
            f"(largest: {role.binding_phase})")


def _reasons_one_gpu(s: Search, opt: Option, G: int, role: RoleMemory, cap: VllmCapacity | None,
                     by_sleep: dict[bool, Option], binding: dict[str, Any]) -> list[str]:
    card, margin = s.card, s.margin
    tgt = s.req.targets.max_completion_length
    C, B, n = opt.completion_length, opt.batch_size, opt.completions_per_device
    S = n // B
    r = []
    if C == tgt:
        r.append(f"completion length {tgt} reached as requested")
    else:
        r.append(f"completion length cut to {C} (requested {tgt}): longer does not fit {card.name} with a "
                 f"{margin:.0%} margin")
    conc, waves = opt.concurrency, opt.waves  # the engine TRL builds with the plan's config
    r.append(f"{n} completions per step ({n // G} prompts x {G} generations) = batch {B} x {S} steps per "
             f"generation; vLLM holds {conc} full-length sequences at once, so "
             f"{'one wave' if waves == 1 else f'{waves} waves'}")
    r.append(binding["limits"]["per_device_train_batch_size"]["detail"])
    r.append(_util_reason(s, opt, role, binding))
    alternative = by_sleep.get(not opt.sleep)
    if opt.sleep:
        if alternative is None:
            r.append("sleep mode on: without it no configuration fits beside vLLM's budget")
        else:
            r.append(f"sleep mode on: awake all the time vLLM would allow only {alternative.completions_per_device} "
                     f"completions per step at batch {alternative.batch_size} (utilisation {alternative.utilization:.2f})")
    else:
        r.append("sleep mode off: everything fits with vLLM awake (no wake-up latency"
                 + (")" if alternative is None else ", and sleeping would not improve the objective)"))
    return r


def _reasons_generate(s: Search, opt: Option, G: int, role: RoleMemory, binding: dict[str, Any]) -> list[str]:
    """Why this option without vLLM: the length, the completions transformers' generate holds at once,
    the micro-batch, the binding phase."""
    card, margin = s.card, s.margin
    tgt = s.req.targets.max_completion_length
    C, B, n = opt.completion_length, opt.batch_size, opt.completions_per_device
    r = [f"completion length {tgt} reached as requested" if C == tgt else
         f"completion length cut to {C} (requested {tgt}): longer does not fit {card.name} with a {margin:.0%} margin",
         f"no vLLM (use_vllm=False): the trainer generates all {n} completions per step ({n // G} prompts x {G} "
         f"generations = batch {B} x {n // B} steps per generation) at once with transformers' generate, whose KV "
         f"cache is in the generation phase",
         binding["limits"]["per_device_train_batch_size"]["detail"],
         f"every phase fits under {(1 - margin):.0%} of {card.total_bytes / GIB:.1f} GiB with "
         f"{role.headroom_bytes / GIB:.1f} GiB to spare (binding phase: {role.binding_phase})"]
    return r


def _reasons(s: Search, opt: Option, rows: tuple[LayoutResult, ...], roles: dict[str, RoleMemory], G: int,
             binding: dict[str, Any]) -> list[str]:
    topo, card, margin = opt.topology, s.card, s.margin
    tgt = s.req.targets.max_completion_length
    S = opt.steps_per_generation
    r = []
    if opt.completion_length == tgt:
        r.append(f"completion length {tgt} reached as requested")
    else:
        r.append(f"completion length cut to {opt.completion_length} (requested {tgt}): no layout fits longer on "
                 f"{card.name} with a {margin:.0%} margin")
    same_split = [x for x in rows if _same_split(x.topology, topo)]
    rivals = [x for x in rows if x.option is not None and not _same_split(x.topology, topo)]
    best_rival = max(rivals, key=lambda x: x.option.key(), default=None)  # type: ignore[union-attr]
    if topo.vllm_mode == "colocate":
        what = (f"vLLM colocated on all {topo.world_size} GPUs, {topo.num_engines} engine(s) of TP "
                f"{topo.vllm_tensor_parallel_size}")
    else:
        what = (f"`trl vllm-serve` on GPU(s) {topo.server_devices}" + (" of node 0" if topo.num_nodes > 1 else "")
                + f" (TP {topo.server_tensor_parallel_size}, DP {topo.server_data_parallel_size}), "
                f"{topo.world_size} training GPU(s)")
    line = f"layout: {what}: {opt.one_wave} completions per step in one wave"
    if best_rival is not None and best_rival.option is not None:
        o = best_rival.option
        line += (f"; the best other layout, {best_rival.topology.label} with "
                 f"{ENGINE_LABELS[best_rival.topology.engine]}, gets {o.one_wave} at completion length "
                 f"{o.completion_length}, micro-batch {o.batch_size}")
    none_fit = [x for x in rows if x.option is None and not _same_split(x.topology, topo)]
    if none_fit and best_rival is None:
        line += f"; no other layout fits ({none_fit[0].topology.label}: {none_fit[0].why})"
    r.append(line)
    lower = [x for x in same_split if _COMMUNICATION_RANK[x.topology.engine] < _COMMUNICATION_RANK[topo.engine]]
    eng = ENGINE_LABELS[topo.engine]
    if topo.world_size == 1:
        r.append("engine: one training process, nothing to shard")
    elif not lower:
        r.append(f"engine: {eng}, the lowest-communication engine, fits")
    else:
        parts = []
        for x in lower:
            if x.option is not None:
                parts.append(f"{ENGINE_LABELS[x.topology.engine]} fits only {x.option.one_wave} completions in one "
                             f"wave (micro-batch {x.option.batch_size})")
            else:
                parts.append(f"{ENGINE_LABELS[x.topology.engine]} does not fit: {x.why}")
        r.append(f"engine: {eng}, because " + "; ".join(parts))
    r.append(f"{opt.completions} completions per step ({opt.completions // G} prompts x {G} generations) = "
             f"micro-batch {opt.batch_size} x {S} steps per generation x {topo.world_size} ranks; vLLM holds "
             f"{opt.concurrency} full-length sequences at once over {topo.num_engines} engine(s), so "
             f"{'one wave' if opt.waves == 1 else f'{opt.waves} waves'}")
    b_max = _largest_fitting_batch(s, opt)
    where = "beside vLLM" if topo.vllm_mode == "colocate" else "with the weight sync"
    batch_limit = binding["limits"]["per_device_train_batch_size"]
    if batch_limit["constraint"] in ("cap", "pin"):
        r.append(batch_limit["detail"])
    elif b_max > opt.batch_size:
        r.append(f"micro-batch {opt.batch_size}: up to {b_max} fits {where}, but B x S must be a multiple of B "
                 f"(and B x S x {topo.world_size} of {G}); {opt.batch_size} reaches the most completions in one wave")
    else:
        r.append(f"micro-batch {opt.batch_size}: the largest whose training step fits {where}")
    tr = roles["training_rank"]
    if topo.vllm_mode == "colocate":
        r.append(_util_reason(s, opt, tr, binding, " of a training rank"))
        r.append("sleep mode on: without it the training step does not fit beside vLLM's budget"
                 if opt.sleep else "sleep mode off: everything fits awake (no wake-up latency)")
    else:
        r.append(f"server --gpu-memory-utilization {opt.utilization:.2f}: the highest whose footprint stays under "
                 f"{(1 - margin):.0%} of the card (trl vllm-serve's default is {TRL_SERVE_DEFAULT_UTILIZATION}); "
                 f"training rank binding phase: {tr.binding_phase}")
    return r


def _largest_fitting_batch(s: Search, opt: Option) -> int:
    """The largest micro-batch whose phases fit at the chosen utilisation and sleep setting."""
    topo = opt.topology
    placement = _placement(topo)
    vtot = s.probe(topo.vllm_tensor_parallel_size, opt.utilization, opt.completion_length)[1] \
        if placement == "colocate" else {}
    b = 0
    for B, tot in enumerate(s.rows(topo, opt.completion_length), start=1):
        if placement == "generate":  # the generation of the plan's steps per generation at this micro-batch
            vtot = {"generate": sum(s.generate_block(B, opt.completion_length, opt.steps_per_generation).values())}
        if phase_peak_bytes({**tot, **vtot}, placement, opt.sleep) > s.budget:
            break
        b = B
    return b


def _same_split(a: Topology, b: Topology) -> bool:
    return (a.vllm_mode, a.vllm_tensor_parallel_size, a.server_gpus, a.server_tensor_parallel_size) == \
        (b.vllm_mode, b.vllm_tensor_parallel_size, b.server_gpus, b.server_tensor_parallel_size)


# -- one fixed multi-GPU setup ---------------------------------------------------------------------

def evaluate(req: PlanRequest, *, topology: Topology, batch_size: int, steps_per_generation: int,
             completion_length: int, utilization: float, sleep_mode: bool, num_generations: int) -> Plan:
    """The plan of one fixed setup, no search (``plan estimate --num-gpus``): the same blocks and
    phases a solve reports. ``utilization``: vLLM's (colocate) or the server's."""
    spec, card, cards = _resolve(req)
    s = Search(req, spec, card)
    why = tp_problem(spec, topology.vllm_tensor_parallel_size if topology.vllm_mode == "colocate"
                     else topology.server_tensor_parallel_size)
    if why:
        raise InvalidSetupError(why)
    B, S, C = batch_size, steps_per_generation, completion_length
    if topology.vllm_mode == "colocate":  # the concurrency is the exact engine's (_exact_option)
        opt = _exact_option(s, topology, C, B, B * S, utilization, sleep_mode, 0)
    else:
        v = req.vllm
        scap = vllm_capacity(spec, card, gpu_memory_utilization=utilization, max_model_len=s.model_len(C),
                             tensor_parallel_size=topology.server_tensor_parallel_size,
                             kv_cache_dtype=v.kv_cache_dtype, vllm_version=v.vllm_version,
                             usage_context="OPENAI_API_SERVER")
        conc = topology.server_data_parallel_size * min(int(scap.max_concurrency), scap.max_num_seqs)
        opt = _exact_option(s, topology, C, B, B * S, utilization, False, conc,
                            sum(server_gpu_components(scap, spec).values()))
    plan = build_plan(s, opt, (LayoutResult(topology, opt, chosen=True),), cards, num_generations, evaluated=True)
    if not plan.fits:  # every GPU's peak against its budget (and vLLM's start): the layout row says so too
        why = "; ".join(f"{name}: peak {r.peak_bytes / GIB:.1f} GiB over the {r.budget_bytes / GIB:.1f} GiB budget"
                        if r.peak_bytes > r.budget_bytes else f"{name}: vLLM does not start"
                        for name, r in plan.roles.items()
                        if r.peak_bytes > r.budget_bytes or (r.vllm is not None and not r.vllm.startup_ok))
        row = LayoutResult(topology, opt, why, chosen=True, over_budget=True)
        plan = replace(plan, layouts=(row,),
                       warnings=plan.warnings + ("the setup exceeds the margin on at least one GPU",))
    return plan
