"""`plan gpus`: list the shipped GPU profiles."""

from __future__ import annotations

from ..specs.gpu import resolve_gpu, shipped_gpu_names
from ._columns import columns
from ._common import print_json

HEADERS = ("gpu", "memory (GiB)", "total from", "bf16", "fp8", "compute", "bandwidth (GB/s)")


def add_parser(sub) -> None:
    p = sub.add_parser("gpus", help="list shipped GPU profiles")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    gpus = [resolve_gpu(n) for n in shipped_gpu_names()]
    if args.json:
        print_json([g.to_dict() for g in gpus])
        return 0
    # "memory" is what CUDA reports (the figure vLLM multiplies by gpu_memory_utilization);
    # "total from" says whether it was read on a card or estimated (see the profile's total_source)
    rows = [(g.name, f"{g.total_bytes / 2**30:.2f}", "estimate" if "(estimated" in g.source else "reading",
             "yes" if g.bf16 else "no", "yes" if g.fp8 else "no", g.compute_capability,
             f"{g.memory_bandwidth_gbs:,.0f}") for g in gpus]
    print(columns(HEADERS, rows, right=frozenset({1, 6})))
    return 0
