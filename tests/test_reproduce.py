"""benchmarks/reproduce.py: the fast planner-only results regenerate as committed, and a tampered figure (in a
results file or inside a generated README section) is reported by the comparison, naming the file or section."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import reproduce  # benchmarks/ is on sys.path (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
FAST_PLANNER = ("unsloth_side_by_side", "layouts", "unsloth_reports", "vllm_old_releases")


def test_fast_planner_results_reproduce():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("--check copies the files git lists: not a git checkout")
    r = subprocess.run([sys.executable, "benchmarks/reproduce.py", "--check", "--only", ",".join(FAST_PLANNER)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in FAST_PLANNER:
        assert f"ok    {name} " in r.stdout
    assert "all agree" in r.stdout


def test_registry_is_consistent():
    names = [e.name for e in reproduce.REGISTRY]
    assert len(names) == len(set(names))
    files = [f for e in reproduce.REGISTRY for f in e.files]
    assert len(files) == len(set(files)), "a results file made by two entries"
    for e in reproduce.REGISTRY:
        assert e.needs in ("planner", "train", "old-env", "gpu", "record"), e.name
        assert e.needs in ("planner", "train") or e.made_on, f"{e.name}: say what made it"
        for f in e.files:
            assert (ROOT / f).is_file(), f"{e.name}: {f} is not committed"
    # every results file committed is in the registry
    committed = {str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks" / "results").rglob("*") if p.is_file()}
    assert committed <= set(files), sorted(committed - set(files))


def test_masks_only_the_volatile_spans():
    layouts = reproduce.by_name()["layouts"]
    a = "budget 76.0 GiB of 79.2 GiB; planned in 737 ms.\n"
    assert reproduce.first_differences("x", a, a.replace("737", "167"), layouts.volatile) == []
    diff = reproduce.first_differences("x", a, a.replace("76.0", "75.0").replace("737", "167"), layouts.volatile)
    assert len(diff) == 1 and "line 1" in diff[0] and "75.0" in diff[0]
    cli = reproduce.by_name()["cli_latency"]
    text = (ROOT / "benchmarks/results/cli_latency.txt").read_text()
    retimed = text.replace(" ms", "1 ms").replace("machine: ", "machine: other ")
    assert reproduce.first_differences("cli", text, retimed, cli.volatile) == []
    assert reproduce.first_differences("cli", text, text.replace("--json", "--jsn", 1), cli.volatile)


def test_tampered_results_file_is_reported(tmp_path):
    rel = "benchmarks/results/unsloth_side_by_side.md"
    (tmp_path / rel).parent.mkdir(parents=True)
    text = (ROOT / rel).read_text()
    assert "KV 4.8 GiB" in text
    (tmp_path / rel).write_text(text.replace("KV 4.8 GiB", "KV 4.9 GiB", 1))
    entry = reproduce.by_name()["unsloth_side_by_side"]
    assert reproduce.compare_result(entry, ROOT, ROOT) == []
    diff = reproduce.compare_result(entry, ROOT, tmp_path)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "KV 4.8 GiB" in s)
    assert len(diff) == 1
    assert diff[0].startswith(f"{rel}: line {line}: committed ") and "KV 4.8 GiB" in diff[0]


def test_readme_edited_inside_a_marker_is_reported(tmp_path):
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    readme.write_text(text)
    assert reproduce.check_readme(readme, ROOT) == []
    start = text.index("benchmarks/results/unsloth_side_by_side.md; do not edit -->")
    cell = "KV 1.4 GiB, peak 11.0 GiB"
    at = text.index(cell, start)
    readme.write_text(text[:at] + cell.replace("11.0", "11.1") + text[at + len(cell):])
    diff = reproduce.check_readme(readme, ROOT)
    assert len(diff) == 1 and "README section 'Unsloth runtime: side-by-side table'" in diff[0], diff
    assert "11.1" in diff[0]
    # only the sections of the files asked about
    assert reproduce.check_readme(readme, ROOT, {"benchmarks/results/cli_latency.txt"}) == []
    # a normal run puts the section back
    assert reproduce.write_readme(readme, ROOT)
    assert readme.read_text() == text


def test_results_file_changes_reach_the_readme(tmp_path):
    rel = "benchmarks/results/unsloth_reports.txt"
    (tmp_path / rel).parent.mkdir(parents=True)
    for s in reproduce.SECTIONS:
        (tmp_path / s.file).write_text((ROOT / s.file).read_text())
    (tmp_path / rel).write_text((ROOT / rel).read_text().replace("max |error| 3.0%", "max |error| 4.5%"))
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    diff = reproduce.check_readme(readme, tmp_path)
    assert len(diff) == 2 and all("4.5%" in d for d in diff), diff
    assert reproduce.write_readme(readme, tmp_path)
    assert reproduce.check_readme(readme, tmp_path) == []
