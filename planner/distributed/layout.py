"""The layout solver: every candidate layout, the search for each one's best configuration,
``plan_distributed`` / ``estimate_distributed`` and the ``DistributedPlan`` they return, with its
reasons (the objective is in the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .. import solver as _solver
from ..errors import InfeasibleError, InvalidSetupError
from ..gpu_spec import GpuSpec, margin_budget_bytes
from ..memory.process import NCCL_BUFFER_BYTES_PER_RANK
from ..memory.trainer import TrainerSetup, trainer_memory
from ..model_spec import ModelSpec, resolve_model
from ..phases import Phase, PhasePeaks
from ..phases import colocated_peak_bytes as _rank_peak
from ..units import GIB
from ..versions import trl_facts as _trl_facts
from .checks import _check, topology_checks, tp_problem
from .engines import accelerate_settings, deepspeed_settings
from .sharding import (
    RankMemory, largest_parameter_params, rank_trainer_memory, server_gpu_components,
    training_rank_phases,
)
from .topology import (
    _COMMUNICATION_RANK, AUTO_ENGINES, DEEPSPEED_DEFAULTS, ENGINE_LABELS, ENGINES, LAYOUTS,
    SERVER_UTILIZATION_RANGE, TRL_SERVE_DEFAULT_HOST, TRL_SERVE_DEFAULT_PORT, TRL_SERVE_DEFAULT_UTILIZATION,
    VLLM_MODES, Topology, resolve_gpus,
)

# -- the solver ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Option:
    """One configuration of one layout (the search's candidate)."""

    topology: Topology
    completion_length: int
    batch_size: int
    completions_per_device: int  # B x S
    utilization: float  # colocate: vllm_gpu_memory_utilization; server: the server's
    sleep: bool
    concurrency: int  # sequences decoded at once by all engines together
    peak_bytes: int  # the training rank's largest phase
    server_peak_bytes: int = 0

    @property
    def completions(self) -> int:
        return self.completions_per_device * self.topology.world_size

    @property
    def one_wave(self) -> int:
        return min(self.completions, self.concurrency)

    @property
    def waves(self) -> int:
        return _waves(self.topology, self.completions_per_device, self.concurrency)

    def key(self) -> tuple:
        """``solver._Candidate.key``'s objective, globally (all engines together), with the
        communication preferences inserted before the micro-batch: length; one wave (then the most
        completions) or else the fewest waves; the lowest engine; micro-batch; the smallest TP; no
        sleep; utilisation."""
        t = self.topology
        single = self.waves == 1
        tp = t.vllm_tensor_parallel_size if t.vllm_mode == "colocate" else t.server_tensor_parallel_size
        return (self.completion_length, single, self.completions if single else -self.waves,
                -_COMMUNICATION_RANK[t.engine], self.batch_size, -tp, not self.sleep, self.utilization)


def _waves(topo: Topology, completions_per_device: int, concurrency: int) -> int:
    """Generation rounds per step: colocated, each engine serves its TP group's requests
    (``B x S x TP``) from its share of ``concurrency``; a server serves all ``B x S x N``."""
    if concurrency <= 0:
        return 0
    if topo.vllm_mode == "colocate":
        per_engine = max(1, concurrency // topo.num_engines)
        return max(1, math.ceil(completions_per_device * topo.vllm_tensor_parallel_size / per_engine))
    return max(1, math.ceil(completions_per_device * topo.world_size / concurrency))


@dataclass(frozen=True)
class LayoutResult:
    """One row of the layout comparison: a layout, its best configuration or why nothing fits."""

    topology: Topology
    option: _Option | None = None
    why: str = ""
    chosen: bool = False

    @property
    def fits(self) -> bool:
        return self.option is not None

    def to_dict(self) -> dict:
        t, o = self.topology, self.option
        d = {"layout": t.label, "vllm_mode": t.vllm_mode, "engine": t.engine,
             "vllm_tensor_parallel_size": t.vllm_tensor_parallel_size if t.vllm_mode == "colocate" else None,
             "server_gpus": t.server_gpus, "server_tensor_parallel_size": t.server_tensor_parallel_size
             if t.vllm_mode == "server" else None,
             "server_data_parallel_size": t.server_data_parallel_size if t.vllm_mode == "server" else None,
             "training_gpus": t.training_gpus, "fits": self.fits, "chosen": self.chosen, "why": self.why}
        if o is not None:
            d.update(peak_bytes=o.peak_bytes, server_peak_bytes=o.server_peak_bytes or None,
                     completion_length=o.completion_length, micro_batch=o.batch_size,
                     steps_per_generation=o.completions_per_device // o.batch_size,
                     completions_per_step=o.completions, completions_in_one_wave=o.one_wave,
                     concurrency=o.concurrency, utilization=o.utilization, sleep_mode=o.sleep, waves=o.waves)
        return d


class _Search:
    """Caches shared by every layout of one plan_distributed call."""

    def __init__(self, spec, card, base, ckpt, targets, lo, hi, margin, sleep_mode, vkw, server_range):
        self.spec, self.card, self.base, self.ckpt = spec, card, base, ckpt
        self.targets, self.lo, self.hi, self.margin, self.vkw = targets, lo, hi, margin, vkw
        self.P = targets["prompt_length"]
        self.sleeps = {"auto": [False, True], "on": [True], "off": [False]}[sleep_mode]
        G = targets["num_generations"]
        self.G_options = [G] if G else list(_solver.GENERATION_CHOICES)
        # the card less the margin, less whatever other processes hold on a live card (solver._search)
        self.budget = margin_budget_bytes(card, margin)
        self.utils = _solver._utilizations(lo, hi)
        self.server_range = server_range
        self._tm: dict = {}
        self._rows: dict = {}
        self._vllm: dict = {}
        self._server: dict = {}

    def setup(self, B: int, C: int, world: int = 1) -> TrainerSetup:
        return _solver.training_setup(self.base, self.ckpt, B, self.P, C, world_size=world)

    def trainer(self, B: int, C: int):
        key = (B, C)
        if key not in self._tm:
            setup = self.setup(B, C)
            self._tm[key] = (setup, trainer_memory(self.spec, setup))
        return self._tm[key]

    def rank(self, topo: Topology, B: int, C: int) -> RankMemory:
        setup, tm = self.trainer(B, C)
        return rank_trainer_memory(self.spec, setup, topo, trainer=tm)

    def rows(self, topo: Topology, C: int) -> list:
        """``(peak, steady, load, sync, vllm_start)`` bytes of a training rank for B = 1, 2, ... while
        its own step and weight sync fit the budget."""
        key = (topo.engine, topo.world_size, topo.vllm_mode, C)
        if key not in self._rows:
            rows = []
            for B in range(1, _solver.MAX_BATCH + 1):
                r = self.rank(topo, B, C)
                row = (r.peak_bytes, r.steady_bytes, r.load_bytes, r.sync_bytes, r.vllm_start_bytes)
                if max(row[0], row[1] + row[3]) > self.budget:
                    break
                rows.append(row)
            self._rows[key] = rows
        return self._rows[key]

    def colocated(self, tp: int, u: float, C: int):
        """(capacity with the whole card free, awake bytes, asleep bytes) of the engine TRL builds
        (``estimation.colocated_vllm``, as solver._vllm_table); start-up is checked per layout."""
        key = (tp, u, C)
        if key not in self._vllm:
            from ..estimation import colocated_vllm
            from ..vllm import sleep_resident_bytes, vllm_process_bytes

            cap = colocated_vllm(self.spec, self.card, 0, u, weights=self.base["weights"],
                                 max_model_len=self.P + C, max_num_seqs=_solver.MAX_COMPLETIONS_PER_STEP,
                                 tensor_parallel_size=tp, kv_cache_dtype=self.vkw["vllm_kv_cache_dtype"],
                                 vllm_version=self.vkw["vllm_version"], trl_version=self.vkw["trl_version"])
            self._vllm[key] = (cap, vllm_process_bytes(cap), sleep_resident_bytes(cap, level=2))
        return self._vllm[key]

    def server(self, t: int, d: int, C: int):
        """The server's best utilisation at completion length C: (u, capacity, concurrency, GPU peak) or
        (None, why). The highest utilisation in ``server_range`` whose footprint fits the budget."""
        key = (t, d, C)
        if key in self._server:
            return self._server[key]
        from ..vllm import baseline_bytes, vllm_capacity

        lo, hi = self.server_range
        spec, card = self.spec, self.card
        extra = NCCL_BUFFER_BYTES_PER_RANK + largest_parameter_params(spec) * 2
        ceiling = (self.budget - baseline_bytes(t, self.vkw["vllm_version"]) - extra) / card.total_bytes
        u = min(hi, math.floor(ceiling * 100) / 100)
        result = (None, f"the server's weights and buffers leave no room at utilisation >= {lo}")
        while u >= lo - 1e-9:
            cap = vllm_capacity(spec, card, gpu_memory_utilization=round(u, 2), max_model_len=self.P + C,
                                tensor_parallel_size=t, kv_cache_dtype=self.vkw["vllm_kv_cache_dtype"],
                                vllm_version=self.vkw["vllm_version"], usage_context="OPENAI_API_SERVER")
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


def _step(B: int, G: int, world: int) -> int:
    """Completions per device must be a multiple of B and make ``B x S x world`` a multiple of G."""
    g = G // math.gcd(G, world)
    return B * g // math.gcd(B, g)


def _first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".")


def _search_layout(s: _Search, topo: Topology, C: int, G: int) -> tuple:
    """(best _Option of this layout at completion length C and group size G, '') or (None, why)."""
    rows = s.rows(topo, C)
    budget = s.budget
    if not rows:
        r = s.rank(topo, 1, C)
        c = r.components
        big = max(c, key=c.get)
        if r.steady_bytes + r.sync_bytes > budget and r.sync_bytes > r.peak_bytes - r.steady_bytes:
            return None, (f"the weight sync allocates {r.sync_bytes / GIB:.1f} GiB per rank on top of "
                          f"{r.steady_bytes / GIB:.1f} GiB resident (budget {budget / GIB:.1f} GiB)")
        return None, (f"the trainer alone needs {r.peak_bytes / GIB:.1f} GiB per rank at batch 1 "
                      f"(largest term: {big} {c[big] / GIB:.1f} GiB; budget {budget / GIB:.1f} GiB)")
    N = topo.world_size
    steps = [_step(B, G, N) for B in range(1, len(rows) + 1)]
    best_k, best = None, None
    if topo.vllm_mode == "server":
        got = s.server(topo.server_tensor_parallel_size, topo.server_data_parallel_size, C)
        if got[0] is None:
            return None, got[1]
        u, cap, conc, server_peak = got
        n_cap = min(_solver.MAX_COMPLETIONS_PER_STEP, conc // N)
        for B, (peak, steady, load, sync, _) in enumerate(rows, start=1):
            p = _rank_peak(peak, steady, load, sync, None, 0, False)
            if p > budget:
                break
            step = steps[B - 1]
            n = max(step, n_cap // step * step)
            waves = _waves(topo, n, conc)
            k = (waves == 1, n if waves == 1 else -waves, B)
            if best_k is None or k > best_k:
                best_k, best = k, (B, n, u, False, conc, p, server_peak)
        if best is None:
            return None, "no micro-batch fits beside the weight sync"
        return _Option(topo, C, *best), ""
    from ..vllm import startup_error

    tp = topo.vllm_tensor_parallel_size
    start_bytes = rows[0][4]
    total, usable = s.card.total_bytes, s.card.usable_bytes
    kv_why = start_why = ""
    lowest_started = None  # the lowest utilisation at which vLLM starts: the phases' best chance
    for u in s.utils:
        cap, awake, asleep = s.colocated(tp, u, C)
        if not cap.startup_ok or cap.max_concurrency < 1:
            kv_why = kv_why or (f"vLLM at utilisation {u} (TP {tp}, weights {cap.weights_bytes / GIB:.1f} GiB per "
                                f"GPU): " + _first_sentence("; ".join(cap.errors) or "no full-length sequence fits"))
            continue
        if startup_error(usable - start_bytes - cap.baseline_bytes, total, u, cap.budget_bytes):
            start_why = f"vLLM cannot start beside the trainer's {start_bytes / GIB:.1f} GiB (utilisation {u})"
            continue
        lowest_started = u
        conc_engine = int(cap.max_concurrency)
        conc = conc_engine * topo.num_engines
        n_cap = min(_solver.MAX_COMPLETIONS_PER_STEP, conc_engine) // tp
        for sleep in s.sleeps:
            for B, (peak, steady, load, sync, _) in enumerate(rows, start=1):
                p = _rank_peak(peak, steady, load, sync, awake, asleep, sleep)
                if p > budget:
                    break
                step = steps[B - 1]
                n = max(step, n_cap // step * step)
                waves = _waves(topo, n, conc)
                k = (waves == 1, n if waves == 1 else -waves, B, not sleep, u)
                if best_k is None or k > best_k:
                    best_k, best = k, (B, n, u, sleep, conc, p)
    if best is None:
        if lowest_started is not None:
            peak, steady, load, sync, _ = rows[0]
            _, awake, asleep = s.colocated(tp, lowest_started, C)
            need = min(_rank_peak(peak, steady, load, sync, awake, asleep, sl) for sl in s.sleeps)
            return None, (f"a training rank needs {need / GIB:.1f} GiB at batch 1 with vLLM at utilisation "
                          f"{lowest_started} ({awake / GIB:.1f} GiB), over the {budget / GIB:.1f} GiB budget")
        return None, (kv_why if kv_why.startswith(f"vLLM at utilisation {s.utils[0]} ") or not start_why
                      else start_why)
    return _Option(topo, C, *best), ""


def candidate_topologies(spec: ModelSpec, num_gpus: int, num_nodes: int = 1, layout: str = "auto",
                         engine: str = "auto", vllm_tensor_parallel_size: int | None = None,
                         server_gpus: int | None = None) -> tuple[list, list]:
    """Every layout to evaluate, and those the rules reject up front as ``(Topology, why)``.

    Colocate: TP in the divisors of the GPUs per node (TP groups stay on one node). Server: on
    one node, ``k = 1 .. num_gpus - 1`` server GPUs; on several nodes, node 0 serves. The server
    runs TP = k (dense models: ``trl vllm-serve`` refuses DP > 1), or TP x DP = k for MoE models."""
    if layout not in LAYOUTS:
        raise InvalidSetupError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if engine != "auto" and engine not in ENGINES:
        raise InvalidSetupError(f"--engine must be auto or one of {', '.join(ENGINES)}, got {engine!r}")
    total = num_gpus * num_nodes
    out, rejected = [], []

    def engines(world):
        if world == 1:
            return ["ddp"]
        return list(AUTO_ENGINES) if engine == "auto" else [engine]

    if layout in ("auto", "colocate"):
        tps = [vllm_tensor_parallel_size] if vllm_tensor_parallel_size else \
            [t for t in range(1, num_gpus + 1) if num_gpus % t == 0]
        for t in tps:
            why = tp_problem(spec, t)
            if why is None and num_gpus % t:
                why = f"TP {t} groups would span nodes of {num_gpus} GPUs"
            for e in engines(total):
                topo = Topology(num_gpus, num_nodes, e, "colocate", vllm_tensor_parallel_size=t)
                (rejected.append((topo, why)) if why else out.append(topo))
    if layout in ("auto", "server") and (total > 1):
        if num_nodes > 1:
            ks = [server_gpus] if server_gpus else [num_gpus]
        else:
            ks = [server_gpus] if server_gpus else list(range(1, num_gpus))
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


@dataclass(frozen=True)
class RoleMemory(PhasePeaks):
    """The memory of one role: a training rank (the worst, rank 0) or a server GPU."""

    role: str  # "training_rank" | "server_gpu"
    count: int
    devices: str
    phases: tuple  # of planner.phases.Phase
    budget_bytes: int
    rank: RankMemory | None = None
    vllm: object | None = None  # VllmCapacity of this GPU's vLLM share

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.peak_bytes

    def to_dict(self) -> dict:
        d = {"count": self.count, "devices": self.devices, "peak_bytes": self.peak_bytes,
             "budget_bytes": self.budget_bytes, "headroom_bytes": self.headroom_bytes,
             "binding_phase": self.binding_phase,
             "phases": {p.name: p.to_dict() for p in self.phases}}
        if self.rank is not None:
            d["trainer"] = self.rank.to_dict()
        if self.vllm is not None:
            d["vllm"] = self.vllm.to_dict()["vllm"]
        return d


@dataclass(frozen=True)
class DistributedPlan:
    """A multi-GPU plan: the layout, per-role memory, the configs the engines read, and why."""

    model: ModelSpec
    gpu: GpuSpec  # the card planned for (the smallest given)
    gpus: tuple  # every GpuSpec given (one per GPU, or one for all)
    topology: Topology
    setup: TrainerSetup
    config: dict  # GRPOConfig keyword arguments
    accelerate: dict  # accelerate config file content (emit.py adds the DeepSpeed JSON path)
    deepspeed: dict | None  # deepspeed.json content when a ZeRO stage is chosen
    server: dict | None  # `trl vllm-serve` settings in server mode
    roles: dict  # "training_rank" / "server_gpu" -> RoleMemory
    margin: float
    targets: dict
    reasons: tuple = ()
    layouts: tuple = ()  # LayoutResult rows
    checks: tuple = ()
    waves: int = 1
    memory_model: str = "analytic"
    warnings: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def budget_bytes(self) -> int:
        return margin_budget_bytes(self.gpu, self.margin)

    @property
    def peak_bytes(self) -> int:
        """The largest per-GPU peak of any role."""
        return max(r.peak_bytes for r in self.roles.values())

    @property
    def fits(self) -> bool:
        ok = all(r.peak_bytes <= r.budget_bytes for r in self.roles.values())
        for r in self.roles.values():
            if r.vllm is not None:
                ok = ok and bool(r.vllm.startup_ok)
        return ok

    @property
    def layout(self) -> str:
        return self.topology.vllm_mode

    @property
    def lora_alpha(self) -> int | None:
        """LoRA alpha for the hand-off (2 x rank, as the single-GPU plan)."""
        return 2 * self.setup.lora_rank if self.setup.finetune == "lora" else None

    def to_dict(self) -> dict:
        return {
            "model": {"id": self.model.model_id, "params": self.model.n_params, "source": self.model.source},
            "gpu": self.gpu.to_dict(),
            "gpus": [g.name for g in self.gpus],
            "layout": self.layout,
            "topology": self.topology.to_dict(),
            "config": dict(self.config),
            "accelerate": dict(self.accelerate),
            "deepspeed": self.deepspeed,
            "server": self.server,
            "roles": {k: v.to_dict() for k, v in self.roles.items()},
            "fits": self.fits,
            "peak_bytes": self.peak_bytes,
            "budget_bytes": self.budget_bytes,
            "margin": self.margin,
            "waves": self.waves,
            "objective": list(_solver.OBJECTIVE),
            "reasons": list(self.reasons),
            "layouts": [row.to_dict() for row in self.layouts],
            "checks": [c.to_dict() if hasattr(c, "to_dict") else c for c in self.checks],
            "targets": dict(self.targets),
            "memory_model": self.memory_model,
            "warnings": list(self.warnings),
            "deepspeed_defaults": dict(DEEPSPEED_DEFAULTS),
            **self.extra,
        }


def plan_distributed(model: "str | ModelSpec", gpu="H100-80GB", num_gpus: int = 1, num_nodes: int = 1,
                     layout: str = "auto", *, engine: str = "auto", vllm_tensor_parallel_size: int | None = None,
                     server_gpus: int | None = None, server_host: str | None = None,
                     server_port: int = TRL_SERVE_DEFAULT_PORT,
                     server_utilization_range: tuple = SERVER_UTILIZATION_RANGE,
                     weights: str = "bf16", finetune: str = "lora", lora_rank: int = 16, lora_target_modules=None,
                     optim: str = "adamw_8bit", gradient_checkpointing: bool | None = None,
                     logprob_head: str | None = None, expandable_segments: bool | None = None,
                     num_generations: int | None = None, max_completion_length: int | None = None,
                     prompt_length: int = 256,
                     utilization_range: tuple = _solver.DEFAULT_UTILIZATION_RANGE, margin: float = 0.05,
                     sleep_mode: str = "auto", vllm_version: str | None = None, trl_version: str | None = None,
                     vllm_kv_cache_dtype: str = "auto", calibration="auto", relax: bool = True) -> DistributedPlan:
    """Choose the layout (colocate TP or a server split), the engine (DDP / ZeRO stage), batch and
    utilisation for ``num_gpus`` GPUs per node on ``num_nodes`` nodes (package docstring).

    ``gpu``: a name, a GpuSpec, or a list of them (GPUs of different sizes: planned for the
    smallest). ``layout``: ``auto``, ``colocate`` or ``server``; ``engine``: ``auto`` or one of
    ``ENGINES``; ``vllm_tensor_parallel_size`` / ``server_gpus``: fix them instead of searching.
    The other options are :func:`planner.solver.plan`'s; as there, when nothing fits and ``relax``
    is on, the error carries the closest plan that does (4-bit weights, then LoRA rank 8)."""
    options = dict(locals())
    if max_completion_length is None:  # TRL's own default for the release planned for
        max_completion_length = options["max_completion_length"] = \
            _trl_facts(trl_version).max_completion_length_default
    s, cards = _prepare(model, gpu, num_gpus, num_nodes, dict(
        layout=layout, engine=engine, server_utilization_range=server_utilization_range, weights=weights,
        finetune=finetune, lora_rank=lora_rank, lora_target_modules=lora_target_modules, optim=optim,
        gradient_checkpointing=gradient_checkpointing, logprob_head=logprob_head,
        expandable_segments=expandable_segments, num_generations=num_generations,
        max_completion_length=max_completion_length, prompt_length=prompt_length,
        utilization_range=utilization_range, margin=margin, sleep_mode=sleep_mode, vllm_version=vllm_version,
        trl_version=trl_version, vllm_kv_cache_dtype=vllm_kv_cache_dtype, calibration=calibration))
    spec, card = s.spec, s.card
    topos, rejected = candidate_topologies(spec, num_gpus, num_nodes, layout, engine, vllm_tensor_parallel_size,
                                           server_gpus)
    results, G = [], s.G_options[0]
    for C in _solver._completion_ladder(max_completion_length):
        for G in s.G_options:  # the user's G, else TRL's default 8 first, others only if 8 fits nowhere
            results = [LayoutResult(t, *_search_layout(s, t, C, G)) for t in topos]
            if any(r.fits for r in results):
                break
        if any(r.fits for r in results):
            break
    results += [LayoutResult(t, None, why) for t, why in rejected]
    fitting = [r for r in results if r.fits]
    if not fitting:
        shown = "; ".join(f"{r.topology.label} {ENGINE_LABELS[r.topology.engine]}: {r.why}" for r in results[:6])
        msg = f"no layout fits {spec.model_id} on {num_gpus * num_nodes} x {card.name}: {shown}"
        closest = _closest(options) if relax else None
        if closest is not None:
            c = closest.config
            msg += (f"; closest plan that fits: {closest.extra['relaxation']} with {closest.topology.label}, "
                    f"{ENGINE_LABELS[closest.topology.engine]}, micro-batch {c['per_device_train_batch_size']}, "
                    f"max_completion_length {c['max_completion_length']}")
        raise InfeasibleError(msg, closest=closest)
    best = max(fitting, key=lambda r: r.option.key())
    results = [replace(r, chosen=r is best) for r in results]
    host = server_host or TRL_SERVE_DEFAULT_HOST
    return _build_plan(s, best.option, results, cards, host, server_port, G, explicit_host=server_host is not None)


def _closest(options: dict):
    """The nearest plan that fits when the request does not (solver._infeasible's relaxations)."""
    tries = []
    if options["weights"] in ("bf16", "fp16", "fp32"):
        tries.append(("4-bit weights (--weights nf4)", dict(weights="nf4")))
    if options["finetune"] == "lora" and options["lora_rank"] > 8:
        tries.append(("LoRA rank 8", dict(lora_rank=8)))
    for label, change in tries:
        kw = {**options, **change, "relax": False}
        try:
            dp = plan_distributed(**kw)
        except (InfeasibleError, InvalidSetupError):
            continue
        return replace(dp, extra={**dp.extra, "relaxation": label})
    return None


def _prepare(model, gpu, num_gpus: int, num_nodes: int, o: dict) -> tuple:
    """Validate the options shared by plan_distributed and estimate_distributed; build the search."""
    from ..estimation import default_logprob_head
    from ..memory.allocator import expandable_segments_from_env

    spec = resolve_model(model)
    for name, v in (("num_gpus", num_gpus), ("num_nodes", num_nodes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidSetupError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    card, cards = resolve_gpus(gpu, num_gpus, num_nodes)
    lo, hi = _solver._check_targets(spec, o["utilization_range"], o["margin"], o["num_generations"],
                                    o["max_completion_length"], o["prompt_length"], o["sleep_mode"], o["weights"])
    slo, shi = (float(x) for x in o["server_utilization_range"])
    if not 0 < slo <= shi <= 1:
        raise InvalidSetupError(f"server utilisation range must satisfy 0 < LO <= HI <= 1, got {slo},{shi}")
    es = o["expandable_segments"]
    es = expandable_segments_from_env() if es is None else es
    targets_ = o["lora_target_modules"]
    base = dict(weights=o["weights"], finetune=o["finetune"], lora_rank=o["lora_rank"],
                lora_target_modules=tuple(targets_) if targets_ else None, optim=o["optim"],
                logprob_head=o["logprob_head"] or default_logprob_head(), expandable_segments=bool(es))
    ckpt = True if o["gradient_checkpointing"] is None else bool(o["gradient_checkpointing"])
    targets = dict(num_generations=o["num_generations"], max_completion_length=o["max_completion_length"],
                   prompt_length=o["prompt_length"], utilization_range=[lo, hi], margin=o["margin"],
                   sleep_mode=o["sleep_mode"], layout=o["layout"], engine=o["engine"], num_gpus=num_gpus,
                   num_nodes=num_nodes)
    vkw = dict(vllm_version=o["vllm_version"], trl_version=o["trl_version"],
               vllm_kv_cache_dtype=o["vllm_kv_cache_dtype"], calibration=o["calibration"])
    return _Search(spec, card, base, ckpt, targets, lo, hi, o["margin"], o["sleep_mode"], vkw, (slo, shi)), cards


def estimate_distributed(model: "str | ModelSpec", gpu="H100-80GB", num_gpus: int = 1, num_nodes: int = 1, *,
                         layout: str = "colocate", engine: str = "ddp", vllm_tensor_parallel_size: int = 1,
                         server_gpus: int = 1, server_tensor_parallel_size: int | None = None,
                         server_data_parallel_size: int = 1, server_gpu_memory_utilization: float =
                         TRL_SERVE_DEFAULT_UTILIZATION, server_host: str | None = None,
                         server_port: int = TRL_SERVE_DEFAULT_PORT, batch_size: int = 1,
                         steps_per_generation: int = 1, num_generations: int = 8, prompt_length: int = 256,
                         completion_length: int = 512, vllm_gpu_memory_utilization: float = 0.3,
                         sleep_mode: bool = False, weights: str = "bf16", finetune: str = "lora",
                         lora_rank: int = 16, lora_target_modules=None, optim: str = "adamw_8bit",
                         gradient_checkpointing: bool = True, logprob_head: str | None = None,
                         expandable_segments: bool | None = None, margin: float = 0.05,
                         vllm_version: str | None = None, trl_version: str | None = None,
                         vllm_kv_cache_dtype: str = "auto", calibration="auto") -> DistributedPlan:
    """Per-rank memory of one fixed multi-GPU setup, no solving (``plan estimate --num-gpus``).

    The layout is given (``layout`` ``colocate`` or ``server``, the engine, TP / server split),
    so are batch, steps per generation, lengths and utilisations. Returns a
    :class:`DistributedPlan` whose ``fits`` says whether every GPU stays under the margin."""
    if layout not in VLLM_MODES:
        raise InvalidSetupError(f"--layout must be colocate or server for an estimate, got {layout!r}")
    s, cards = _prepare(model, gpu, num_gpus, num_nodes, dict(
        layout=layout, engine=engine, server_utilization_range=(server_gpu_memory_utilization,) * 2,
        weights=weights, finetune=finetune, lora_rank=lora_rank, lora_target_modules=lora_target_modules,
        optim=optim, gradient_checkpointing=gradient_checkpointing, logprob_head=logprob_head,
        expandable_segments=expandable_segments, num_generations=num_generations,
        max_completion_length=completion_length, prompt_length=prompt_length,
        utilization_range=(vllm_gpu_memory_utilization,) * 2, margin=margin,
        sleep_mode="on" if sleep_mode else "off", vllm_version=vllm_version, trl_version=trl_version,
        vllm_kv_cache_dtype=vllm_kv_cache_dtype, calibration=calibration))
    for name, v in (("batch_size", batch_size), ("steps_per_generation", steps_per_generation)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidSetupError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    if layout == "colocate":
        topo = Topology(num_gpus, num_nodes, engine, "colocate", vllm_tensor_parallel_size=vllm_tensor_parallel_size)
    else:
        t = server_tensor_parallel_size or server_gpus // server_data_parallel_size
        topo = Topology(num_gpus, num_nodes, engine, "server", server_gpus=server_gpus,
                        server_tensor_parallel_size=t, server_data_parallel_size=server_data_parallel_size)
    why = tp_problem(s.spec, topo.vllm_tensor_parallel_size if layout == "colocate" else
                     topo.server_tensor_parallel_size)
    if why:
        raise InvalidSetupError(why)
    C, B, S = completion_length, batch_size, steps_per_generation
    r = s.rank(topo, B, C)
    row = (r.peak_bytes, r.steady_bytes, r.load_bytes, r.sync_bytes)
    if layout == "colocate":
        cap, awake, asleep = s.colocated(topo.vllm_tensor_parallel_size, vllm_gpu_memory_utilization, C)
        conc = int(cap.max_concurrency) * topo.num_engines
        peak = _rank_peak(*row, awake, asleep, sleep_mode)
        opt = _Option(topo, C, B, B * S, vllm_gpu_memory_utilization, sleep_mode, conc, peak)
    else:
        from ..vllm import vllm_capacity

        scap = vllm_capacity(s.spec, s.card, gpu_memory_utilization=server_gpu_memory_utilization,
                             max_model_len=prompt_length + C, tensor_parallel_size=topo.server_tensor_parallel_size,
                             kv_cache_dtype=vllm_kv_cache_dtype, vllm_version=vllm_version,
                             usage_context="OPENAI_API_SERVER")
        conc = topo.server_data_parallel_size * min(int(scap.max_concurrency), scap.max_num_seqs)
        opt = _Option(topo, C, B, B * S, server_gpu_memory_utilization, False, conc, _rank_peak(*row, None, 0, False),
                      sum(server_gpu_components(scap, s.spec).values()))
    rows = (LayoutResult(topo, opt, chosen=True),)
    return _build_plan(s, opt, rows, cards, server_host or TRL_SERVE_DEFAULT_HOST, server_port, num_generations,
                       explicit_host=server_host is not None, evaluated=True)


def _build_plan(s: _Search, opt: _Option, results, cards, server_host, server_port, G: int,
                explicit_host: bool = False, evaluated: bool = False) -> DistributedPlan:
    from ..estimation import colocated_vllm
    from ..vllm import vllm_capacity

    spec, card, topo = s.spec, s.card, opt.topology
    N, B, C, P = topo.world_size, opt.batch_size, opt.completion_length, s.P
    n = opt.completions_per_device
    S = n // B
    setup = s.setup(B, C, world=N)
    from ..estimation import calibrated_trainer_memory, resolve_calibration

    tm, label, warnings = calibrated_trainer_memory(spec, replace(setup, world_size=1),
                                                    resolve_calibration(spec, card, s.vkw["calibration"]))
    rank = rank_trainer_memory(spec, setup, topo, trainer=tm)
    roles = {}
    server = None
    if topo.vllm_mode == "colocate":
        tp = topo.vllm_tensor_parallel_size
        # what TRL passes: max_num_seqs = B x TP x S (grpo_trainer.py, VLLMGeneration(...))
        cap = colocated_vllm(spec, card, rank.vllm_start_bytes, opt.utilization, weights=s.base["weights"],
                             max_model_len=P + C, max_num_seqs=B * S * tp, tensor_parallel_size=tp,
                             kv_cache_dtype=s.vkw["vllm_kv_cache_dtype"], vllm_version=s.vkw["vllm_version"],
                             trl_version=s.vkw["trl_version"])
        roles["training_rank"] = RoleMemory("training_rank", N, topo.training_devices,
                                            training_rank_phases(rank, cap, opt.sleep), s.budget, rank, cap)
    else:
        t, d = topo.server_tensor_parallel_size, topo.server_data_parallel_size
        roles["training_rank"] = RoleMemory("training_rank", N, topo.training_devices,
                                            training_rank_phases(rank, None), s.budget, rank)
        scap = vllm_capacity(spec, card, gpu_memory_utilization=opt.utilization, max_model_len=P + C,
                             tensor_parallel_size=t, kv_cache_dtype=s.vkw["vllm_kv_cache_dtype"],
                             vllm_version=s.vkw["vllm_version"], usage_context="OPENAI_API_SERVER")
        roles["server_gpu"] = RoleMemory("server_gpu", topo.server_gpus, topo.server_devices,
                                         (Phase("serving", server_gpu_components(scap, spec)),), s.budget, None, scap)
        server = {"model": spec.model_id, "tensor_parallel_size": t, "data_parallel_size": d,
                  "gpu_memory_utilization": opt.utilization, "max_model_len": P + C,
                  "kv_cache_dtype": s.vkw["vllm_kv_cache_dtype"], "host": TRL_SERVE_DEFAULT_HOST,
                  "port": server_port, "cuda_visible_devices": topo.server_devices,
                  "node": 0, "max_num_seqs": scap.max_num_seqs, "max_num_batched_tokens": scap.max_num_batched_tokens}
    config = {
        "per_device_train_batch_size": B,
        "gradient_accumulation_steps": S,
        # Global and explicit: TRL derives steps_per_generation = generation_batch_size / (B x world)
        # = S at the real world size, and the file parses on any machine (grpo_config.py L1077-1095).
        "generation_batch_size": B * S * N,
        "num_generations": G,
        "max_completion_length": C,
        "use_vllm": True,
        "vllm_mode": topo.vllm_mode,
    }
    if topo.vllm_mode == "colocate":
        config.update({"vllm_gpu_memory_utilization": opt.utilization, "vllm_max_model_length": P + C,
                       "vllm_enable_sleep_mode": opt.sleep,
                       "vllm_tensor_parallel_size": topo.vllm_tensor_parallel_size})
    else:
        config.update({"vllm_server_host": server_host, "vllm_server_port": server_port})
    config.update({"gradient_checkpointing": s.ckpt, "bf16": bool(card.bf16) and s.base["weights"] != "fp32",
                   "optim": s.base["optim"]})
    accelerate = accelerate_settings(topo, config)
    deepspeed = deepspeed_settings(topo, config)
    checks = topology_checks(spec, topo, cards if len({c.total_bytes for c in cards}) > 1 else (), config)
    if topo.vllm_mode == "server" and topo.num_nodes > 1 and not explicit_host:
        checks.append(_check("server-host", "warning", f"vllm_server_host is {server_host}: the training nodes must "
                             "reach the server on node 0", "re-plan with --server-host <node 0 address>"))
    sync = rank.sync_components.get("zero3_full_gather")
    if sync:
        checks.append(_check("zero3-peft-sync", "info", f"ZeRO-3 + PEFT: each weight sync gathers the full model "
                             f"({sync / GIB:.1f} GiB per GPU) before merging the adapters (TRL 1.16 "
                             f"vllm_generation.py); counted in the weight_sync phase"))
    plan_rows = tuple(results)
    if evaluated:
        reasons = [f"evaluated as given (no search): {topo.label}, {ENGINE_LABELS[topo.engine]}, micro-batch {B} x "
                   f"{S} steps per generation x {N} ranks, completion length {C}"]
    else:
        reasons = _reasons(s, opt, plan_rows, roles, G, S)
    role_budget_ok = all(r.peak_bytes <= r.budget_bytes for r in roles.values())
    if not role_budget_ok:
        warnings.append("with the calibrated terms the plan exceeds the margin on at least one GPU")
    return DistributedPlan(model=spec, gpu=card, gpus=tuple(cards), topology=topo, setup=setup, config=config,
                           accelerate=accelerate, deepspeed=deepspeed, server=server, roles=roles,
                           margin=s.margin, targets=dict(s.targets), reasons=tuple(reasons), layouts=plan_rows,
                           checks=tuple(checks), waves=opt.waves, memory_model=label, warnings=tuple(warnings),
                           extra={"server_host": server_host, "server_port": server_port})


def _reasons(s: _Search, opt: _Option, rows, roles, G: int, S: int) -> list:
    topo, card = opt.topology, s.card
    tgt = s.targets["max_completion_length"]
    r = []
    if opt.completion_length == tgt:
        r.append(f"completion length {tgt} reached as requested")
    else:
        r.append(f"completion length cut to {opt.completion_length} (requested {tgt}): no layout fits longer on "
                 f"{card.name} with a {s.margin:.0%} margin")
    same_split = [x for x in rows if _same_split(x.topology, topo)]
    rivals = [x for x in rows if x.fits and not _same_split(x.topology, topo)]
    best_rival = max(rivals, key=lambda x: x.option.key(), default=None)
    if topo.vllm_mode == "colocate":
        what = (f"vLLM colocated on all {topo.world_size} GPUs, {topo.num_engines} engine(s) of TP "
                f"{topo.vllm_tensor_parallel_size}")
    else:
        what = (f"`trl vllm-serve` on GPU(s) {topo.server_devices}" + (" of node 0" if topo.num_nodes > 1 else "")
                + f" (TP {topo.server_tensor_parallel_size}, DP {topo.server_data_parallel_size}), "
                f"{topo.world_size} training GPU(s)")
    line = f"layout: {what}: {opt.one_wave} completions per step in one wave"
    if best_rival is not None:
        o = best_rival.option
        line += (f"; the best other layout, {best_rival.topology.label} with "
                 f"{ENGINE_LABELS[best_rival.topology.engine]}, gets {o.one_wave} at completion length "
                 f"{o.completion_length}, micro-batch {o.batch_size}")
    none_fit = [x for x in rows if not x.fits and not _same_split(x.topology, topo)]
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
            if x.fits:
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
    if b_max > opt.batch_size:
        r.append(f"micro-batch {opt.batch_size}: up to {b_max} fits {where}, but B x S must be a multiple of B "
                 f"(and B x S x {topo.world_size} of {G}); {opt.batch_size} reaches the most completions in one wave")
    else:
        r.append(f"micro-batch {opt.batch_size}: the largest whose training step fits {where}")
    tr = roles["training_rank"]
    if topo.vllm_mode == "colocate":
        r.append(f"vllm_gpu_memory_utilization {opt.utilization:.2f}: the highest that keeps every phase of a training "
                 f"rank under {(1 - s.margin):.0%} of {card.total_bytes / GIB:.1f} GiB (binding phase: "
                 f"{tr.binding_phase})")
        r.append("sleep mode on: without it the training step does not fit beside vLLM's budget"
                 if opt.sleep else "sleep mode off: everything fits awake (no wake-up latency)")
    else:
        r.append(f"server --gpu-memory-utilization {opt.utilization:.2f}: the highest whose footprint stays under "
                 f"{(1 - s.margin):.0%} of the card (trl vllm-serve's default is {TRL_SERVE_DEFAULT_UTILIZATION}); "
                 f"training rank binding phase: {tr.binding_phase}")
    return r


def _largest_fitting_batch(s: _Search, opt: _Option) -> int:
    """The largest micro-batch whose phases fit at the chosen utilisation and sleep setting."""
    topo = opt.topology
    if topo.vllm_mode == "colocate":
        _, awake, asleep = s.colocated(topo.vllm_tensor_parallel_size, opt.utilization, opt.completion_length)
    else:
        awake, asleep = None, 0
    b = 0
    for B, (peak, steady, load, sync, _) in enumerate(s.rows(topo, opt.completion_length), start=1):
        if _rank_peak(peak, steady, load, sync, awake, asleep, opt.sleep) > s.budget:
            break
        b = B
    return b


def _same_split(a: Topology, b: Topology) -> bool:
    return (a.vllm_mode, a.vllm_tensor_parallel_size, a.server_gpus, a.server_tensor_parallel_size) == \
        (b.vllm_mode, b.vllm_tensor_parallel_size, b.server_gpus, b.server_tensor_parallel_size)
