"""Nothing in planner/, tests/ or benchmarks/ reads a path outside the repository: no absolute path into the
machine's folders (/tmp, /work, /home, ...) appears in their code. Old releases' environments live in the
repository's ignored .cache/ (benchmarks/reproduce.py builds them); GPU scripts unpack wheels into .cache/site."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("planner", "tests", "benchmarks")
SUFFIXES = (".py", ".sh")
OUTSIDE = re.compile(r"(?<![\w.~/-])(?<!#!)/(tmp|work|home|root|var|mnt|opt|usr|srv|scratch|data)/")
# a path that appears as data, never opened: why each is allowed
ALLOWED = {
    ("benchmarks/unsloth_reports.py", "/opt/tiger/test0/Phi-4"): "a model path as one shared report printed it: "
                                                                 "a key mapped to the model id, never opened",
    ("benchmarks/step_time.py", "/opt/tiger/test0/Phi-4"): "the same report's model path, a key mapped to the "
                                                           "model id, never opened",
}


def offending_lines() -> list[str]:
    out = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in SUFFIXES or not path.is_file() or "results" in path.relative_to(ROOT).parts:
                continue
            rel = str(path.relative_to(ROOT))
            if rel == "tests/test_no_outside_paths.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if line.startswith("#!") or not OUTSIDE.search(line):
                    continue
                if any(rel == f and p in line for f, p in ALLOWED):
                    continue
                out.append(f"{rel}:{n}: {line.strip()}")
    return out


def test_no_code_names_a_path_outside_the_repository():
    assert offending_lines() == []


def test_the_check_finds_such_a_path(tmp_path):
    assert OUTSIDE.search('env = {"PYTHONPATH": "/tmp/trl_0.23.0"}')
    assert OUTSIDE.search("TRL = Path('/work/shared/x')")
    assert not OUTSIDE.search('"benchmarks/results/h100_heldout/x.json"')  # relative
    assert not OUTSIDE.search("2.1 GiB/tmp")  # not a path's start
    assert not OUTSIDE.search('lines = ["#!/usr/bin/env bash"]')  # a shebang the planner writes
    for (f, p), why in ALLOWED.items():
        assert p in (ROOT / f).read_text() and why
