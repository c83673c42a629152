"""`plan`: the command line, a thin layer over the Python API.

    plan --model Qwen/Qwen2.5-3B-Instruct --gpu L4 --max-completion-length 1024   # solve
    plan estimate --model Qwen/Qwen2.5-7B-Instruct --gpu H100-80GB --batch-size 8 --json
    plan vllm --model meta-llama/Llama-3.1-8B-Instruct --gpu H100-80GB --gpu-memory-utilization 0.5
    plan check --model ... --gpu auto          # pre-flight checks
    plan profile --model Qwen/Qwen2.5-0.5B-Instruct --trace
    plan models | plan gpus                    # what is shipped

Each subcommand lives in ``planner/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Errors: every :class:`~planner.errors.PlannerError` is caught here, once,
and printed as one line on stderr with exit code 2. No torch import on these paths.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import PlannerError

# subcommand name -> module under planner.commands
SUBCOMMANDS = ("estimate", "vllm", "check", "profile", "models", "gpus")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message):  # noqa: D401
        self.exit(2, f"plan: error: {message}\n")


def _load(name: str):
    return importlib.import_module(f"planner.commands.{name}")


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    module = _load("plan" if args.command == "plan" else args.command)
    try:
        return int(module.run(args) or 0)
    except PlannerError as e:
        print(f"plan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
