"""`plan compare`: a run's measured memory against its plan, moment by moment.

    plan compare out/planner_memory_record.json                      # planned vs measured per moment
    plan compare out/planner_memory_record.json --json
    plan compare out/planner_memory_record.json --save-calibration   # the next plan uses the run

The record is what ``planner.MemoryCallback(plan)`` writes at the end of training
(planner/profiler/run_record.py): the plan's prediction per moment and the measured peaks. It is
also a calibration profile: ``--save-calibration`` puts it where ``plan profile --gpu auto`` puts
its profiles (``$PLANNER_CALIBRATION_DIR``, else ``~/.cache/planner/calibration/``), so the next
``plan`` for the same model architecture and card uses the run's fitted activation and allocator
figures (planner/memory/calibration.py), newest profile first.
"""

from __future__ import annotations

from pathlib import Path

from ..specs.units import GIB
from ._columns import columns
from ._common import HelpFormatter, print_json

HEADERS = ("moment", "planned (GiB)", "set by", "own (GiB)", "+ margin (GiB)", "measured (GiB)", "reserved (GiB)",
           "allocated (GiB)", "vs plan", "")


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="a MemoryCallback record: planned vs measured per moment",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("record", help="the JSON record planner.MemoryCallback wrote")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--save-calibration", action="store_true",
                   help="save the record as a calibration profile the next plan for this model and card uses")


def comparison(data: dict) -> dict:
    """Planned against measured per moment, from a read record (the predictions are the record's: the
    plan's, as planner.profiler.run_record.moment_predictions made them when the run started)."""
    from ..profiler.run_record import compare_moments, record_moments

    run = data["run"]
    plan = run["plan"]
    rows = compare_moments(plan["moments"], record_moments(data), int(plan["margin_bytes"]),
                           plan.get("moment_sources"))
    out = {"model": plan["model"], "gpu": plan["gpu"], "margin": plan["margin"], "margin_bytes": plan["margin_bytes"],
           "role": plan.get("role", "training_rank"), "rank": plan.get("rank", 0),
           "device_source": run.get("device_source"), "steps": len(run.get("steps", [])),
           "moments": [{"moment": m, **r} for m, r in rows.items()]}
    out["over_plan"] = [r["moment"] for r in out["moments"] if r.get("over_plan")]
    return out


def _gib(n) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def _table(c: dict) -> str:
    rows = []
    for r in c["moments"]:
        diff, own = r.get("difference"), r.get("own_bytes")
        rows.append((r["moment"], _gib(r.get("planned_bytes")), r.get("set_by", "-"),
                     _gib(max(own.values())) if own else "-", _gib(r.get("planned_with_margin_bytes")),
                     _gib(r["measured_bytes"]), _gib(r["peak_reserved_bytes"]), _gib(r["peak_allocated_bytes"]),
                     "-" if diff is None else f"{diff:+.1%}", "OVER" if r.get("over_plan") else ""))
    head = (f"{c['model']} on {c['gpu']} ({c['role']}, rank {c['rank']}): {c['steps']} optimizer steps measured; "
            f"margin {c['margin']:.0%} ({_gib(c['margin_bytes'])} GiB); measured = the device-level peak "
            f"({c['device_source']})\nplanned: the device-level prediction, set by that plan moment ('kept "
            f"reserved': its blocks stay cached); own: the largest of the moment's own plan moments")
    notes = [f"{r['moment']}: {r['fallback']}" for r in c["moments"] if r.get("fallback")]
    over = [f"{r['moment']} ({_gib(r['measured_bytes'])} GiB measured, planned {_gib(r['planned_bytes'])} GiB "
            f"+ {_gib(c['margin_bytes'])} GiB margin, set by {r.get('set_by', '-')})"
            for r in c["moments"] if r.get("over_plan")]
    tail = ["over the plan: " + "; ".join(over) if over else "every moment within the plan plus its margin"]
    return "\n".join([head, columns(HEADERS, rows, right=frozenset({1, 3, 4, 5, 6, 7, 8})), *notes, *tail])


def save_calibration(data: dict, source: str) -> Path:
    """Write the record into the calibration folder, named after its card and model."""
    import json

    from ..memory.calibration import default_output_dir
    from ..profiler.measure import profile_path
    from ..profiler.run_record import calibration_entry
    from ..report.files import FileOut, write_files

    entry = calibration_entry(data, source)
    folder = default_output_dir()
    path = profile_path(folder, str(data["gpu"].get("name", "")), str(entry.get("model_id", "")))
    path = path.with_name(path.stem + ".run.json")
    write_files([FileOut(path, (json.dumps(data, indent=1) + "\n").encode())], force=True, make_dirs=[folder])
    return path


def run(args) -> int:
    from ..profiler.run_record import read_record

    data = read_record(args.record)
    c = comparison(data)
    saved = save_calibration(data, args.record) if args.save_calibration else None
    if args.json:
        print_json({**c, "calibration_profile": str(saved) if saved else None})
        return 0
    print(_table(c))
    if saved is not None:
        print(f"calibration profile written to {saved}")
    return 0
