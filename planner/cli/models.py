"""`plan models`: list the shipped model profiles."""

from __future__ import annotations

from ..specs.model import resolve_model, shipped_model_ids
from ._columns import columns
from ._common import print_json

HEADERS = ("model", "params (B)", "type", "layers", "hidden", "context")


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list shipped model profiles")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    specs = [resolve_model(m) for m in shipped_model_ids()]
    if args.json:
        print_json([s.summary() for s in specs])
        return 0
    rows = [(s.model_id, f"{s.n_params / 1e9:.2f}", s.model_type + (" (MoE)" if s.is_moe else ""),
             str(s.num_layers), str(s.hidden_size), f"{s.max_position_embeddings:,}") for s in specs]
    print(columns(HEADERS, rows, right=frozenset({1, 3, 4, 5})))
    return 0
