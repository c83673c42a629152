"""Flags are matched only as spelled: argparse's abbreviations are off in every parser, so
`--output` is never taken for `--output-dir` (nor any other flag for a longer one)."""

import argparse

import pytest

from planner.cli import SUBCOMMANDS, build_parser, main


def _parsers():
    for argv in [[]] + [[name] for name in SUBCOMMANDS]:
        top = build_parser(argv)
        yield top
        for action in top._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from action.choices.values()


def test_no_parser_takes_abbreviations():
    parsers = list(_parsers())
    assert len(parsers) == 1 + 2 * len(SUBCOMMANDS)
    assert all(p.allow_abbrev is False for p in parsers)


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--output", "est.yaml"],
    ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--output-d", "run"],
    ["check", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--out", "x.yaml"],
    ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--max-completion", "300"],
])
def test_a_prefix_is_refused_and_nothing_is_written(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plan: error: unrecognized arguments: ")
    assert list(tmp_path.iterdir()) == []  # no folder made for `--output`
