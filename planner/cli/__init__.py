"""`plan`: the command line, a thin layer over the Python API.

    plan --model Qwen/Qwen2.5-3B-Instruct --gpu L4 --max-completion-length 1024   # solve
    plan estimate --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB --batch-size 8 --json
    plan vllm --model meta-llama/Llama-3.1-8B-Instruct --gpu H100-80GB --gpu-memory-utilization 0.5
    plan check --model ... --gpu auto          # pre-flight checks
    plan profile --model Qwen/Qwen2.5-0.5B-Instruct --trace
    plan compare out/planner_memory_record.json   # a run's MemoryCallback record against its plan
    plan models | plan gpus                    # what is shipped

Each subcommand lives in ``planner/cli/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Errors: every :class:`~planner.errors.PlannerError` is caught here, once,
and printed as ``plan: error: <line>``, one line per problem. No torch import on these paths.

Exit codes (the same for every command; README "Exit codes"):

    0    the printed configuration fits and no pre-flight check is rated an error
    1    the printed configuration has an error-level check (plan, plan estimate, plan check alike);
         with --output/--output-dir/--plot nothing is written
    2    bad input: a usage error, an unknown model or GPU, a malformed config.json or calibration
         profile, an invalid setup, a file that cannot be written (every PlannerError but the next)
    3    nothing fits (InfeasibleError): the input is valid, the GPUs are too small for it
    130  interrupted (Ctrl-C), "plan: interrupted" on stderr
    141  stdout closed early (``plan ... | head -1``): ends quietly, as a process killed by SIGPIPE

Messages never fail on a terminal that cannot encode them (``PYTHONIOENCODING=ascii``, LANG=C):
characters it lacks are written as backslash escapes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InfeasibleError, PlannerError

EXIT_OK = 0
EXIT_CHECKS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE

# subcommand name -> module under planner.cli
SUBCOMMANDS = ("estimate", "vllm", "check", "profile", "compare", "models", "gpus")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump), and a flag is
    matched only as spelled: no abbreviations (``--output`` is never taken for ``--output-dir``)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401
        self.exit(2, f"plan: error: {message}\n")


def _load(name: str):
    return importlib.import_module(f"planner.cli.{name}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="plan", description="VRAM planner for GRPO with vLLM colocated.")
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in SUBCOMMANDS:
        sub = parser.add_subparsers(dest="command", parser_class=_Parser)
        _load(first).add_parser(sub)
    else:
        # `plan --model X --gpu Y ...` with no subcommand runs the solver.
        _load("plan").add_arguments(parser)
        parser.set_defaults(command="plan")
        parser.epilog = f"subcommands: {', '.join(SUBCOMMANDS)} (plan SUBCOMMAND --help)"
    return parser


def _safe_streams() -> None:
    """Characters the terminal's encoding lacks become backslash escapes instead of a
    UnicodeEncodeError (PYTHONIOENCODING=ascii, LANG=C with a non-ASCII model name)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass


def error_lines(e: BaseException) -> list[str]:
    """``plan: error: <line>`` for each problem a PlannerError names (one per line of its message)."""
    lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    return [f"plan: error: {line}" for line in lines]


def _quiet_stdout() -> None:
    """stdout is gone (its reader exited): point it at /dev/null so the interpreter's final flush
    does not raise BrokenPipeError again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _run(argv: list[str]) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    module = _load("plan" if args.command == "plan" else args.command)
    return int(module.run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    _safe_streams()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except InfeasibleError as e:
        print("\n".join(error_lines(e)), file=sys.stderr)
        return EXIT_INFEASIBLE
    except PlannerError as e:
        print("\n".join(error_lines(e)), file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("plan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
