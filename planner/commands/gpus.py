"""`plan gpus`: list the shipped GPU profiles."""

from __future__ import annotations

from ..gpu_spec import resolve_gpu, shipped_gpu_names
from ._common import print_json


def add_parser(sub) -> None:
    p = sub.add_parser("gpus", help="list shipped GPU profiles")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    gpus = [resolve_gpu(n) for n in shipped_gpu_names()]
    if args.json:
        print_json([g.to_dict() for g in gpus])
        return 0
    for g in gpus:
        print(f"{g.name:18s} {g.total_bytes / 2**30:8.2f} GiB  bf16={'yes' if g.bf16 else 'no '}  "
              f"{g.memory_bandwidth_gbs:6.0f} GB/s")
    return 0
