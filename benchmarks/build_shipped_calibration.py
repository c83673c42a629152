"""Turn the measured H100 rows in data/calibration/ into shipped calibration profiles.

One profile per model in profiles/calibration/, in the schema `plan profile --gpu auto` writes,
fitted with the profiler's own code (planner.memory.fit). The source of every number is named in
the profile. Run: python benchmarks/build_shipped_calibration.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration_data import calibration_path, env_row  # noqa: E402

from planner.memory.calibration import SCHEMA_VERSION, fingerprint  # noqa: E402
from planner.memory.fit import fit_rows  # noqa: E402
from planner.profiler.measure import profile_path  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402

MIB = 1024**2
# Library versions of the measurement (data/calibration/README.md and its env row)
VERSIONS = {"torch": "2.11.0+cu130", "transformers": "5.17.0", "peft": "0.21.0", "trl": "1.16.0",
            "bitsandbytes": "0.50.2"}


def main() -> None:
    rows = [json.loads(line) for line in open(calibration_path())]
    env = env_row()
    by_model: dict[str, list] = {}
    for r in rows:
        if r.get("stage") in ("load", "step"):
            by_model.setdefault(r["model"], []).append(r)
    out_dir = ROOT / "profiles" / "calibration"
    out_dir.mkdir(parents=True, exist_ok=True)
    for model_id, mrows in by_model.items():
        spec = resolve_model(model_id)
        fits = fit_rows(mrows)
        profile = {
            "schema": SCHEMA_VERSION,
            "created": "2026-11-26",
            "source": (f"fitted by benchmarks/build_shipped_calibration.py from data/calibration/"
                       f"h100-trl1.16-train.jsonl ({len(mrows)} rows of {model_id}, measured on one "
                       f"{env.get('gpu')} with torch {env.get('torch')}, transformers 5.17.0, peft 0.21.0, "
                       f"trl 1.16.0, bitsandbytes {env.get('bnb')})"),
            "gpu": {"name": "H100-80GB", "device_name": env.get("gpu", "NVIDIA H100 80GB HBM3"),
                    "total_bytes": int(env.get("total_mib", 81079) * MIB), "driver": ""},
            "versions": VERSIONS,
            "models": [{"model_id": model_id, "fingerprint": fingerprint(spec),
                        "fits": [f.to_dict() for f in fits]}],
        }
        path = profile_path(out_dir, "H100-80GB", model_id)
        path.write_text(json.dumps(profile, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)}: {len(fits)} famil{'y' if len(fits) == 1 else 'ies'}")


if __name__ == "__main__":
    main()
