"""Helpers of the tests that write a TRL config file and run the CLI on it."""

import textwrap

from planner.cli import main


def write_config(tmp_path, text, name="grpo.yaml") -> str:
    """``text`` (dedented) written to ``tmp_path / name``; its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run_cli(capsys, argv):
    """(exit code, stdout, stderr) of ``plan argv``."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err
