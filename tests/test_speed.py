"""Planning a shipped model stays fast as the package grows: the `plan` path imports only what it uses.

Wall-clock time is measured by benchmarks/cli_latency.py (a timing test would be flaky on a shared CI
machine); what is pinned here is what makes it slow when it creeps in: heavy packages, the package-metadata
and resources machinery (30 ms and 6 ms), and the layers a TRL plan does not need."""

import subprocess
import sys

NOT_ON_THE_PLAN_PATH = ("torch", "transformers", "trl", "numpy", "importlib.metadata", "importlib.resources",
                        "statistics", "planner.runtimes.unsloth", "planner.search.unsloth_solver", "planner.profiler")


def _imported_after(argv: list[str]) -> list[str]:
    code = ("import sys, io, contextlib; from planner.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): rc = main(%r)\n"
            "print(rc, sorted(m for m in sys.modules))" % (argv,))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rc, _, modules = r.stdout.partition(" ")
    assert rc == "0", r.stdout + r.stderr
    return eval(modules)  # noqa: S307 -- our own child's repr of a list of str


def test_a_shipped_plan_imports_nothing_it_does_not_use():
    loaded = set(_imported_after(["--model", "Qwen/Qwen2.5-3B-Instruct", "--gpu", "L4",
                                  "--max-completion-length", "1024"]))
    assert "planner.search.solver" in loaded  # it did plan
    assert sorted(loaded & set(NOT_ON_THE_PLAN_PATH)) == []
    assert sorted(m for m in loaded if m.startswith(NOT_ON_THE_PLAN_PATH[-1])) == []


def test_an_estimate_imports_nothing_it_does_not_use():
    loaded = set(_imported_after(["estimate", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "H100-80GB"]))
    assert sorted(loaded & set(NOT_ON_THE_PLAN_PATH)) == []
