"""planner.report.files and the files it writes: no injection, all or nothing, no silent overwrite.

- launch.sh / vllm_serve.sh run under stub ``accelerate``, ``trl``, ``deepspeed`` and ``python``
  executables (first on PATH) that only record their argv: with hostile model names, LoRA targets
  and server hosts nothing else runs (no PWNED file) and the stubs get the values intact;
- YAML with hostile values parses back to the same values, comments stay comments;
- a folder where a file goes, a file where a folder goes, a missing folder, a full disk, an
  existing file without --force: one OutputError naming the path, nothing written or left behind;
- ``--plot`` formats are checked before any planning; ``--plot name`` writes and names name.png.
CPU only.
"""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("yaml")

import yaml  # noqa: E402

import planner.report.files as files_mod  # noqa: E402
from planner import plan  # noqa: E402
from planner import plan as plan_distributed  # noqa: E402
from planner.cli import main  # noqa: E402
from planner.errors import OutputError  # noqa: E402
from planner.report.emit import (  # noqa: E402
    config_files,
    grpo_yaml_text,
    one_line,
    write_configs,
    write_grpo_yaml,  # noqa: E402
)
from planner.report.files import FileOut, plot_path, write_file, write_files  # noqa: E402
from planner.report.outputs import check_outputs, write_outputs  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402
from planner.specs.versions import transformers_checkpointing_field  # noqa: E402

BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="needs bash")

HOSTILE = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "x; touch PWNED",
    "x\ntouch PWNED",
    "it's \"quoted\" $HOME \\ end",
    "tab\there\r\nand\x85nel\u2028ls\x7fdel",
    "- [a, b]: #c",
]
SPEC = resolve_model("Qwen/Qwen2.5-0.5B-Instruct")


def _hostile_plan(model_id: str, **kw):
    """A plan carrying ``model_id`` as its model name (a local folder may have any name), server host
    and a LoRA target. The request refuses such a host, so it is put into the plan afterwards: the
    writers must be safe whatever a plan holds."""
    p = plan_distributed(replace(SPEC, model_id=model_id), "H100-80GB", num_gpus=2, layout="server", **kw)
    return replace(p, config={**p.config, "vllm_server_host": model_id}, server={**p.server, "host": model_id},
                   extra={**p.extra, "server_host": model_id},
                   setup=replace(p.setup, lora_target_modules=("q_proj", model_id)))


def _stub_bin(root: Path) -> Path:
    """accelerate, trl, deepspeed, python: append {'prog', 'argv', 'cuda'} to $STUB_LOG; python
    prints a stand-in script path (launch.sh asks it where TRL's grpo.py is)."""
    bindir = root / "bin"
    bindir.mkdir()
    for name in ("accelerate", "trl", "deepspeed", "python", "python3"):
        stub = bindir / name
        stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        "with open(os.environ['STUB_LOG'], 'a') as f:\n"
                        f"    f.write(json.dumps({{'prog': {name!r}, 'argv': sys.argv[1:], "
                        "'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}) + '\\n')\n"
                        + ("print('/stub/trl/scripts/grpo.py')\n" if name.startswith("python") else ""))
        stub.chmod(0o755)
    return bindir


def _run_script(script: Path, root: Path, check: bool = True, **env) -> tuple[list, subprocess.CompletedProcess]:
    """Run ``script`` from ``root/cwd`` with the stubs first on PATH; returns (stub calls, process)."""
    bindir = root / "bin" if (root / "bin").is_dir() else _stub_bin(root)
    cwd = root / "cwd"
    cwd.mkdir(exist_ok=True)
    log = root / "stub.log"
    log.write_text("")
    full = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "TRAIN_SCRIPT")}
    full.update(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", STUB_LOG=str(log), **env)
    proc = subprocess.run([BASH, str(script)], cwd=cwd, env=full, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()], proc


def _pwned(root: Path) -> list:
    return [p for p in root.rglob("*") if "PWNED" in p.name and p.is_file()]


def _grpo_args(path: Path):
    pytest.importorskip("trl")
    from trl import GRPOConfig, ModelConfig, TrlParser

    return TrlParser((GRPOConfig, ModelConfig)).parse_args_and_config(["--config", str(path), "--use_cpu", "true"])


# -- injection ------------------------------------------------------------------------------------

@needs_bash
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_reach_the_engines_intact_and_run_nothing(value, tmp_path):
    dp = _hostile_plan(value)
    out = tmp_path / "run"
    written = write_configs(dp, out)
    assert {"launch.sh", "vllm_serve.sh", "grpo.yaml"} <= set(written)
    for name in ("launch.sh", "vllm_serve.sh"):
        subprocess.run([BASH, "-n", str(written[name])], check=True)

    calls, _ = _run_script(written["vllm_serve.sh"], tmp_path)
    assert [c["prog"] for c in calls] == ["trl"]  # nothing but the server ran
    argv = calls[0]["argv"]
    assert argv[argv.index("--model") + 1] == value
    assert calls[0]["cuda"] == dp.topology.server_devices

    calls, _ = _run_script(written["launch.sh"], tmp_path)
    assert [c["prog"] for c in calls] == ["python", "accelerate"]  # where is grpo.py, then the launch
    argv = calls[1]["argv"]
    assert argv[argv.index("--config_file") + 1] == str(written["accelerate.yaml"])
    assert argv[argv.index("/stub/trl/scripts/grpo.py") + 1:] == ["--config", str(written["grpo.yaml"])]
    assert _pwned(tmp_path) == []

    # the values travel in grpo.yaml, which reads back unchanged
    args, model_args = _grpo_args(written["grpo.yaml"])
    assert model_args.model_name_or_path == value
    assert model_args.lora_target_modules == ["q_proj", value]
    assert args.vllm_server_host == value
    body = yaml.safe_load(written["grpo.yaml"].read_text())
    assert body["model_name_or_path"] == value and body["vllm_server_host"] == value


@needs_bash
def test_a_local_model_folder_named_like_a_command(tmp_path, capsys):
    model_dir = tmp_path / "models" / "$(touch PWNED)"
    model_dir.mkdir(parents=True)
    profile = json.loads((Path(__file__).parents[1] / "profiles/models/Qwen__Qwen2.5-0.5B-Instruct.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(profile["config"]))
    out = tmp_path / "run"
    assert main(["--model", str(model_dir), "--gpu", "H100-80GB", "--num-gpus", "2", "--layout", "server",
                 "--lora-target-modules", "q_proj,`touch PWNED`;x", "--output-dir", str(out)]) == 0
    calls, _ = _run_script(out / "vllm_serve.sh", tmp_path)
    assert calls[0]["argv"][calls[0]["argv"].index("--model") + 1] == str(model_dir)
    calls, _ = _run_script(out / "launch.sh", tmp_path)
    assert [c["prog"] for c in calls] == ["python", "accelerate"]
    _, model_args = _grpo_args(out / "grpo.yaml")
    assert model_args.model_name_or_path == str(model_dir)
    assert model_args.lora_target_modules == ["q_proj", "`touch PWNED`;x"]
    assert _pwned(tmp_path) == []


@pytest.mark.parametrize("value", HOSTILE)
def test_comments_are_one_safe_line(value):
    dp = _hostile_plan(value)
    for name, (text, _) in config_files(dp).items():
        if name.endswith(".json"):
            continue
        for line in text.splitlines():
            if line.startswith("#"):
                assert all(" " <= c <= "~" for c in line), (name, line)
        if name.endswith(".yaml"):
            yaml.safe_load(text)  # parses: no comment broke out, no unprintable byte
    assert "\n" not in one_line(value) and one_line("a\nb") == "a\\nb"


@pytest.mark.parametrize("value", HOSTILE)
def test_single_gpu_grpo_yaml_round_trips_hostile_values(value, tmp_path):
    p = plan(replace(SPEC, model_id=value), "L4", lora_target_modules=("q_proj", value))
    path = write_grpo_yaml(p, tmp_path / "grpo.yaml")
    text = path.read_text()
    body = yaml.safe_load(text)
    assert body["model_name_or_path"] == value and body["lora_target_modules"] == ["q_proj", value]
    head = text.split("\noutput_dir:")[0].splitlines()
    assert head and all(line.startswith("#") and all(" " <= c <= "~" for c in line) for line in head)
    for key, v in p.config.items():
        assert body[transformers_checkpointing_field() if key == "gradient_checkpointing" else key] == v


# -- the folder: relative paths, GPUs ----------------------------------------------------------------

@needs_bash
def test_the_folder_can_be_moved(tmp_path):
    dp = plan_distributed("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", num_gpus=4, layout="colocate",
                          engine="zero3")
    write_configs(dp, tmp_path / "a")
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "a"), str(moved))
    acc = yaml.safe_load((moved / "accelerate.yaml").read_text())
    assert acc["deepspeed_config"]["deepspeed_config_file"] == "deepspeed.json"
    calls, _ = _run_script(moved / "launch.sh", tmp_path, TRAIN_SCRIPT="train.py")
    argv = calls[-1]["argv"]
    assert argv[argv.index("--config_file") + 1] == str(moved / "accelerate.yaml")
    assert argv[argv.index("--deepspeed_config_file") + 1] == str(moved / "deepspeed.json")
    assert argv[argv.index("--config") + 1] == str(moved / "grpo.yaml")
    assert not any(str(tmp_path / "a") in line for name in ("launch.sh", "accelerate.yaml", "grpo.yaml")
                   for line in (moved / name).read_text().splitlines())


@needs_bash
def test_launch_respects_cuda_visible_devices(tmp_path):
    dp = plan_distributed("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", num_gpus=8, layout="server", engine="zero2")
    written = write_configs(dp, tmp_path / "run")
    visible = ["8", "9", "10", "11", "12", "13", "14", "15"]  # a scheduler's allocation
    env = {"CUDA_VISIBLE_DEVICES": ",".join(visible), "TRAIN_SCRIPT": "train.py"}
    t = dp.topology
    calls, _ = _run_script(written["launch.sh"], tmp_path, **env)
    assert calls[-1]["cuda"] == ",".join(visible[int(i)] for i in t.training_devices.split(","))
    calls, _ = _run_script(written["vllm_serve.sh"], tmp_path, **env)
    assert calls[-1]["cuda"] == ",".join(visible[int(i)] for i in t.server_devices.split(","))
    assert set(calls[-1]["cuda"].split(",")).isdisjoint(
        visible[int(i)] for i in t.training_devices.split(","))
    # fewer GPUs than planned: the script stops before launching anything
    calls, proc = _run_script(written["launch.sh"], tmp_path, check=False, CUDA_VISIBLE_DEVICES="3",
                              TRAIN_SCRIPT="train.py")
    assert proc.returncode != 0 and calls == []
    assert "CUDA_VISIBLE_DEVICES=3 lists 1 GPU(s)" in proc.stderr


# -- all or nothing, no overwrite, errors ------------------------------------------------------------

def _files(tmp_path, *names):
    return [FileOut(tmp_path / n, f"content of {n}\n".encode()) for n in names]


def _listing(d: Path) -> set:
    return {p.name for p in d.iterdir()}


def test_existing_file_is_refused_untouched_then_replaced_with_force(tmp_path):
    target = tmp_path / "grpo.yaml"
    target.write_text("mine\n")
    with pytest.raises(OutputError, match=rf"^{target} exists: pass --force"):
        write_files(_files(tmp_path, "a.txt", "grpo.yaml"))
    assert target.read_text() == "mine\n" and _listing(tmp_path) == {"grpo.yaml"}  # a.txt not written either
    assert write_files(_files(tmp_path, "a.txt", "grpo.yaml"), force=True) == [tmp_path / "a.txt", target]
    assert target.read_text() == "content of grpo.yaml\n" and _listing(tmp_path) == {"grpo.yaml", "a.txt"}


def test_a_folder_where_a_file_goes(tmp_path):
    (tmp_path / "b.txt").mkdir()
    for force in (False, True):
        with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'b.txt'}: it is a folder$"):
            write_files(_files(tmp_path, "a.txt", "b.txt"), force=force)
        assert _listing(tmp_path) == {"b.txt"}


def test_a_file_where_a_folder_goes(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'plain' / 'g.yaml'}: "
                                          rf"{tmp_path / 'plain'} is a file, not a folder$"):
        write_file(tmp_path / "plain" / "g.yaml", "x")
    with pytest.raises(OutputError, match=r"is a file, not a folder$"):
        write_configs(_hostile_plan("m"), tmp_path / "plain" / "run")
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'missing' / 'g.yaml'}: folder "
                                          rf"{tmp_path / 'missing'} does not exist$"):
        write_file(tmp_path / "missing" / "g.yaml", "x")
    assert _listing(tmp_path) == {"plain"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the test above covers root)")
def test_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(OutputError, match=rf"^cannot write {ro / 'g.yaml'}: folder {ro} is not writable$"):
            write_file(ro / "g.yaml", "x")
    finally:
        ro.chmod(0o755)
    assert _listing(ro) == set()


def _fail_on(monkeypatch, name: str, call: int, err: int = errno.ENOSPC):
    real = getattr(files_mod, name)
    seen = []

    def flaky(*a, **kw):
        seen.append(a)
        if len(seen) == call:
            raise OSError(err, os.strerror(err))
        return real(*a, **kw)

    monkeypatch.setattr(files_mod, name, flaky)


def test_disk_full_while_writing_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "b.txt").write_text("old b\n")
    _fail_on(monkeypatch, "_stage", 2)
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'b.txt'}: No space left on device$"):
        write_files(_files(tmp_path, "a.txt", "b.txt", "c.txt"), force=True)
    assert _listing(tmp_path) == {"b.txt"} and (tmp_path / "b.txt").read_text() == "old b\n"


def test_failure_while_moving_into_place_rolls_back(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old a\n")
    _fail_on(monkeypatch, "_place", 3, errno.EIO)
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'c.txt'}: Input/output error$"):
        write_files(_files(tmp_path, "a.txt", "b.txt", "c.txt"), force=True)
    # a.txt put back, b.txt removed, no temporary or backup file left
    assert _listing(tmp_path) == {"a.txt"} and (tmp_path / "a.txt").read_text() == "old a\n"


def test_output_dir_created_and_removed_again_on_failure(tmp_path, monkeypatch):
    dp = _hostile_plan("m")
    out = tmp_path / "new" / "run"
    _fail_on(monkeypatch, "_place", 2)
    with pytest.raises(OutputError, match=r"No space left on device"):
        write_configs(dp, out)
    assert _listing(tmp_path) == set()
    monkeypatch.undo()
    written = write_configs(dp, out)
    assert set(written) == _listing(out)
    assert os.access(written["launch.sh"], os.X_OK) and not os.access(written["grpo.yaml"], os.X_OK)
    with pytest.raises(OutputError, match=rf"^{out / 'grpo.yaml'} exists: pass --force"):
        write_configs(dp, out)
    assert write_configs(dp, out, force=True) == written


def test_two_different_files_for_one_path_are_refused(tmp_path):
    with pytest.raises(OutputError, match=r"two different files"):
        write_files([FileOut(tmp_path / "x", b"1"), FileOut(tmp_path / "x", b"2")])
    assert write_files([FileOut(tmp_path / "x", b"1"), FileOut(tmp_path / "." / "x", b"1")]) == [tmp_path / "x"]


# -- one grpo.yaml writer -------------------------------------------------------------------------

def test_output_and_output_dir_write_the_same_grpo_yaml(tmp_path):
    dp = _hostile_plan("m")
    paths = write_outputs(dp, output=tmp_path / "grpo.yaml", output_dir=tmp_path / "run")
    assert (tmp_path / "grpo.yaml").read_text() == (tmp_path / "run" / "grpo.yaml").read_text()
    assert paths[0] == tmp_path / "grpo.yaml"
    # --output inside --output-dir: the same file once
    again = write_outputs(dp, output=tmp_path / "run2" / "grpo.yaml", output_dir=tmp_path / "run2")
    assert again.count(tmp_path / "run2" / "grpo.yaml") == 1


@pytest.mark.parametrize("version, key", [("5.22.0", "gradient_checkpointing"), ("5.23.0", "activation_checkpointing"),
                                          ("5.24.0", "activation_checkpointing")])
def test_checkpointing_named_per_transformers_release(version, key):
    p = plan("Qwen/Qwen2.5-0.5B-Instruct", "L4")
    body = yaml.safe_load(grpo_yaml_text(p, transformers_version=version))
    assert body[key] is True
    (other,) = {"gradient_checkpointing", "activation_checkpointing"} - {key}
    assert other not in body
    assert transformers_checkpointing_field(version) == key


def test_installed_transformers_reads_the_new_name_without_warning(tmp_path):
    pytest.importorskip("trl")
    import warnings

    p = plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", gradient_checkpointing=False)
    path = write_grpo_yaml(p, tmp_path / "grpo.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        if transformers_checkpointing_field() == "activation_checkpointing":
            args, _ = _grpo_args(path)
            assert args.activation_checkpointing is False and args.gradient_checkpointing is False


# -- --plot and the CLI -------------------------------------------------------------------------------

def test_plot_path_rule():
    assert plot_path("memory") == Path("memory.png")
    assert plot_path("a/m.SVG") == Path("a/m.SVG") and plot_path("m.pdf") == Path("m.pdf")
    for bad in ("m.gif", "m.", "m.png.exe"):
        with pytest.raises(OutputError, match=r"^cannot write the plot to "):
            plot_path(bad)


def test_unsupported_plot_is_refused_before_planning(tmp_path, monkeypatch, capsys):
    import planner.cli.plan as plan_command

    def no_planning(args):
        raise AssertionError("planned before checking --plot")

    monkeypatch.setattr(plan_command, "plan_from_args", no_planning)
    target = tmp_path / "memory.gif"
    assert main(["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--output", str(tmp_path / "g.yaml"),
                 "--plot", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"plan: error: cannot write the plot to {target}: unsupported format '.gif' " \
                  "(supported: .png, .pdf, .svg)\n"
    # an existing target is refused before planning too
    (tmp_path / "g.yaml").write_text("mine")
    assert main(["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--output", str(tmp_path / "g.yaml")]) == 2
    assert "g.yaml exists: pass --force" in capsys.readouterr().err
    assert _listing(tmp_path) == {"g.yaml"} and (tmp_path / "g.yaml").read_text() == "mine"


def test_cli_names_the_paths_it_wrote(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--output", str(tmp_path / "g.yaml"),
            "--plot", str(tmp_path / "memory")]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [f"wrote {tmp_path / 'g.yaml'}", f"wrote {tmp_path / 'memory.png'}"]
    assert _listing(tmp_path) == {"g.yaml", "memory.png"}
    assert (tmp_path / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (tmp_path / "g.yaml").stat().st_mtime_ns
    assert main(argv) == 2  # both exist
    assert "exists: pass --force" in capsys.readouterr().err
    assert (tmp_path / "g.yaml").stat().st_mtime_ns == before
    assert main(argv + ["--force"]) == 0


def test_check_outputs_needs_no_plan(tmp_path):
    check_outputs(output=tmp_path / "g.yaml", plot=tmp_path / "m.svg", output_dir=tmp_path / "new" / "run")
    assert _listing(tmp_path) == set()  # checking writes nothing
    with pytest.raises(OutputError, match="it is a folder"):
        check_outputs(output=tmp_path)


def test_estimate_output_dir_refuses_then_forces(tmp_path, capsys):
    # 4 x 2 steps x 2 ranks = 16 completions, a multiple of 8 generations: no error-level check
    argv = ["estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "H100-80GB", "--num-gpus", "2",
            "--batch-size", "4", "--steps-per-generation", "2",
            "--vllm-gpu-memory-utilization", "0.4", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'run' / 'launch.sh'}" in out
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(f"plan: error: {tmp_path / 'run' / 'grpo.yaml'} exists: pass --force")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert main(argv + ["--force"]) == 0
