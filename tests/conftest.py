import os

# Never let a test reach the network (Hub lookups for unknown ids fail fast instead).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# benchmarks/calibration_data.py reads the measured data of the source repository back; the accuracy
# tests share it with the benchmark scripts (it is not part of the installed package).
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
