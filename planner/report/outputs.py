"""What ``plan --output/--plot/--output-dir`` write, checked before planning and written all or none.

    check_outputs(output="grpo.yaml", plot="memory.png", output_dir="run/")   # before any planning
    write_outputs(plan, output="grpo.yaml", plot="memory.png", output_dir="run/", force=False)
    # -> [Path("grpo.yaml"), Path("memory.png"), Path("run/grpo.yaml"), Path("run/accelerate.yaml"), ...]

- ``--output``: grpo.yaml (``planner.report.emit.grpo_yaml_text``, the one grpo.yaml writer);
- ``--plot``: the per-phase picture (``planner.report.plot.render_phases``), PNG, PDF or SVG; a name with
  no extension gets ``.png`` (and the returned path says so);
- ``--output-dir``: the engine files of ``planner.report.emit.config_files`` (grpo.yaml, accelerate.yaml,
  deepspeed.json, launch.sh, vllm_serve.sh); the folder is created when missing.
Writing goes through planner.report.files (atomic, all or nothing, ``force`` to replace). A plan rated an
error (an error-level check, or it does not fit) is never written: :func:`write_if_ok` (exit code 1).
"""

from __future__ import annotations

import os
from pathlib import Path

from .emit import ALWAYS_WRITTEN, config_files, grpo_yaml_text
from .files import FileOut, _require_module, check_dir, check_target, plot_format, plot_path, write_files
from .plot import render_phases


def check_outputs(*, output=None, plot=None, output_dir=None, force: bool = False) -> None:
    """Everything about the requested files that can be checked before planning: the plot format,
    the packages the writers need, and every target the planner always writes. Raises OutputError
    / MissingDependencyError; writes nothing."""
    new: tuple = ()
    if output_dir is not None:
        d = check_dir(output_dir)
        new = () if os.path.isdir(d) else (d,)
    if plot is not None:
        target = plot_path(plot)
        _require_module("matplotlib", "--plot", "pip install 'grpo-vram-planner[plot]'")
        check_target(target, force, new)
    if output is not None or output_dir is not None:
        _require_module("yaml", "writing grpo.yaml", "pip install 'pyyaml>=6' (a grpo-vram-planner dependency)")
    if output is not None:
        check_target(output, force, new)
    if output_dir is not None:
        for name in ALWAYS_WRITTEN:
            check_target(Path(output_dir) / name, force, new)


# -- rendering ----------------------------------------------------------------------------------

def render_outputs(plan, *, output=None, plot=None, output_dir=None) -> list[FileOut]:
    """Every requested file's bytes (nothing is written)."""
    files = []
    if output is not None:
        files.append(FileOut(Path(output), grpo_yaml_text(plan).encode()))
    if plot is not None:
        target = plot_path(plot)
        files.append(FileOut(target, render_phases(plan, plot_format(target))))
    if output_dir is not None:
        for name, (text, executable) in config_files(plan).items():
            files.append(FileOut(Path(output_dir) / name, text.encode(), executable))
    return files


def write_outputs(plan, *, output=None, plot=None, output_dir=None, force: bool = False) -> list[Path]:
    """``plan --output/--plot/--output-dir``: render every file, then write them all or none.
    Returns the paths written (``--plot name`` -> ``name.png``)."""
    check_outputs(output=output, plot=plot, output_dir=output_dir, force=force)
    files = render_outputs(plan, output=output, plot=plot, output_dir=output_dir)
    return write_files(files, force=force, make_dirs=() if output_dir is None else (Path(output_dir),))




def rating_errors(plan) -> list[str]:
    """Why ``plan`` must not be run (or written): its error-level checks, and not fitting. Empty
    when it fits and no check is an error."""
    out = [f"{c.id}: {c.message}" for c in getattr(plan, "checks", ()) if c.severity == "error"]
    if not getattr(plan, "fits", True):
        out.append("the configuration does not fit the GPU(s) under the margin")
    return out


def write_if_ok(plan, *, output=None, plot=None, output_dir=None, force: bool = False) -> tuple[list[Path], list[str]]:
    """:func:`write_outputs` for a plan that fits and passes its checks; for one rated an error,
    nothing is written. Returns (paths written, why the plan is rated an error)."""
    errors = rating_errors(plan)
    if errors:
        return [], errors
    return write_outputs(plan, output=output, plot=plot, output_dir=output_dir, force=force), []


def report_rating(errors: list[str], requested_files: bool) -> int:
    """The exit code of a command that printed a plan rated by ``errors`` (planner.cli): 0 or 1,
    with one line on stderr saying why, and that nothing was written when files were asked for."""
    if not errors:
        return 0
    import sys

    n = len(errors)
    what = "; no file written" if requested_files else ""
    print(f"plan: checks failed: {n} error{'s' * (n != 1)} in the printed configuration{what} "
          f"({'; '.join(errors)})", file=sys.stderr)
    return 1
