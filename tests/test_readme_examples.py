"""Every `plan` command the README shows runs as shown (in-process, in a scratch folder, with the files the
README writes before it: its `cat > FILE <<'EOF'` blocks), and exits as documented: 0, except a
`plan check --for-training` on a machine without the runtime's packages, which must fail its checks (exit 1)."""

import re
import shlex
from pathlib import Path

import pytest

from planner.cli import main
from planner.specs.versions import installed_version

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks() -> list[str]:
    """The shell code of the README: fenced ```bash blocks and 4-space indented blocks."""
    blocks, fence, current = [], None, []
    for line in README.splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, current = line[3:].strip(), []
            else:
                if fence in ("bash", "sh", ""):
                    blocks.append("\n".join(current))
                fence = None
        elif fence is not None:
            current.append(line)
    blocks += [b for b in re.findall(r"\n\n((?:    \S.*\n)+)", README)]
    return blocks


def _commands() -> list[str]:
    lines = []
    for block in _blocks():
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip().split(" && ")[-1]
            if line.startswith("plan "):
                lines.append(line)
    return lines


def _files() -> dict[str, str]:
    return {name: body + "\n" for name, _, body in re.findall(r"cat > (\S+) <<'(\w+)'\n(.*?)\n\2\n", README, re.S)}


COMMANDS = _commands()


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 6 and any("--runtime unsloth" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs_as_shown(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, body in _files().items():
        (tmp_path / name).write_text(body)
    rc = main(shlex.split(command)[1:])
    out, err = capsys.readouterr()
    needs_runtime = "--for-training" in command and installed_version("vllm") is None
    assert rc == (1 if needs_runtime else 0), err
    assert "Traceback" not in err and (out or err)


def test_the_readme_config_file_and_its_flags_give_the_same_plan(tmp_path, monkeypatch, capsys):
    # README: "the same pins as flags give the same plan"
    import json

    monkeypatch.chdir(tmp_path)
    for name, body in _files().items():
        (tmp_path / name).write_text(body)
    from_file, as_flags = [c for c in COMMANDS if "H100-80GB" in c and "Qwen2.5-7B" in c][:2]
    configs = []
    for command in (from_file.replace(" --output run.yaml", ""), as_flags):
        assert main(shlex.split(command)[1:] + ["--json"]) == 0
        configs.append(json.loads(capsys.readouterr().out)["config"])
    configs[0].pop("learning_rate")  # passed through from the file
    assert configs[0] == configs[1]
