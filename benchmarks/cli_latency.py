"""Wall-clock latency of `plan estimate` and `plan` on shipped models, as a user runs them.

Runs each command N times in a fresh process (interpreter start-up included) and prints the median,
beside the median of a bare ``python -c pass`` on the same machine and the ratio of the two (the
structure issue's bound: a shipped plan within 6 times a bare interpreter). Bytecode is written
first and used, as after ``pip install`` (pip compiles it); PYTHONDONTWRITEBYTECODE is dropped from
the children's environment for that.
Run: python benchmarks/cli_latency.py   (writes benchmarks/results/cli_latency.txt)
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [
    ["estimate", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "H100-80GB", "--weights", "bf16", "--lora-rank",
     "16", "--batch-size", "8", "--prompt-length", "256", "--completion-length", "1792", "--json"],
    ["estimate", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100-80GB",
     "--vllm-gpu-memory-utilization", "0.5", "--vllm-max-model-len", "4096", "--json"],
    ["--model", "Qwen/Qwen2.5-3B-Instruct", "--gpu", "L4", "--max-completion-length", "1024", "--json"],
]
N = 9
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_seconds(argv: list[str]) -> float:
    subprocess.run(argv, capture_output=True, env=ENV)  # warm: writes the bytecode, fills the page cache
    times = []
    for _ in range(N):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=ENV)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return statistics.median(times)


def main() -> None:
    exe = shutil.which("plan")
    base = [exe] if exe else [sys.executable, "-c", "import sys; from planner.cli import main; sys.exit(main())"]
    bare = median_seconds([sys.executable, "-c", "pass"])
    lines = [f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
             f"median of {N} fresh processes, bytecode compiled",
             f"{bare * 1000:7.0f} ms  python -c pass"]
    for argv in COMMANDS:
        t = median_seconds(base + argv)
        lines.append(f"{t * 1000:7.0f} ms  {t / bare:4.1f} x bare  plan {' '.join(argv)}")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "cli_latency.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
