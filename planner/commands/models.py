"""`plan models`: list the shipped model profiles."""

from __future__ import annotations

from ..model_spec import resolve_model, shipped_model_ids
from ._common import print_json


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list shipped model profiles")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    specs = [resolve_model(m) for m in shipped_model_ids()]
    if args.json:
        print_json([s.summary() for s in specs])
        return 0
    for s in specs:
        print(f"{s.model_id:45s} {s.n_params / 1e9:7.2f} B  {s.model_type}")
    return 0
