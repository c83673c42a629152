"""Wall-clock latency of `plan estimate` (and `plan`) on shipped models, as a user runs them.

Runs each command N times in a fresh process (interpreter start-up included) and prints the median.
Run: python benchmarks/cli_latency.py   (writes benchmarks/results/cli_latency.txt)
"""

from __future__ import annotations

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
N = 7


def main() -> None:
    exe = shutil.which("plan")
    base = [exe] if exe else [sys.executable, "-m", "planner.cli"]
    lines = [f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
             f"median of {N} fresh processes"]
    for argv in COMMANDS:
        times = []
        for _ in range(N):
            t0 = time.perf_counter()
            r = subprocess.run(base + argv, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"plan {' '.join(argv)} failed: {r.stderr.strip()}")
        lines.append(f"{statistics.median(times) * 1000:7.0f} ms  plan {' '.join(argv)}")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "cli_latency.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
