"""The next steps reproduce the plan: the printed `plan ...` command (run as printed, shlex-split) and
the printed Python call (evaluated) give the original plan's config and layout, for every option set;
the files named are the ones written."""

import json
import shlex

import pytest

import planner
from planner.cli import main

SMALL, MID, BIG = "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-32B-Instruct"
LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"

# option sets given on the command line (each: one class of option the next steps once dropped)
CLI_GRID = {
    "one GPU": ["--model", SMALL, "--gpu", "L4"],
    "full fine-tuning, 8 GPUs": ["--model", BIG, "--gpu", "H100-80GB", "--num-gpus", "8", "--finetune", "full"],
    "server layout": ["--model", MID, "--gpu", "H100-80GB", "--num-gpus", "4", "--layout", "server",
                      "--server-gpus", "1", "--engine", "zero2", "--server-port", "8123",
                      "--server-utilization-range", "0.6,0.8"],
    "two nodes": ["--model", MID, "--gpu", "A100-80GB", "--num-gpus", "2", "--num-nodes", "2", "--layout", "server",
                  "--server-host", "10.0.0.1"],
    "cards of two sizes": ["--model", MID, "--gpu", "H100-80GB,A100-40GB", "--num-gpus", "2",
                           "--vllm-tensor-parallel-size", "1"],
    "nf4 and LoRA": ["--model", LLAMA8, "--gpu", "L4", "--weights", "nf4", "--lora-rank", "32",
                     "--lora-target-modules", "q_proj,v_proj"],
    "pins": ["--model", SMALL, "--gpu", "A100-40GB", "--per_device_train_batch_size", "4", "--num-generations", "4",
             "--max-completion-length", "384", "--vllm-gpu-memory-utilization", "0.45",
             "--vllm-enable-sleep-mode", "true", "--max-prompt-length", "300", "--steps-per-generation", "2",
             "--optim", "adamw_torch"],
    "margin, sleep mode, utilisation range, caps": [
        "--model", MID, "--gpu", "H100-80GB", "--margin", "0.12", "--sleep-mode", "off", "--utilization-range",
        "0.35,0.55", "--max-batch", "8", "--max-completions-per-step", "64", "--target-completion-length", "768",
        "--no-gradient-checkpointing"],
    "versions and trainer options": [
        "--model", SMALL, "--gpu", "L4", "--trl-version", "1.10.0", "--vllm-version", "0.10.2",
        "--transformers-version", "4.57.0", "--logprob-head", "plain", "--no-expandable-segments",
        "--vllm-kv-cache-dtype", "fp8"],
    "rollout turns": ["--model", SMALL, "--gpu", "L4", "--rollout-turns", "3"],
    "Unsloth runtime": ["--model", LLAMA8, "--gpu", "T4", "--runtime", "unsloth", "--max-seq-length", "1024",
                        "--lora-rank", "32", "--no-standby"],
    "Unsloth, 16-bit and pins": ["--model", SMALL, "--gpu", "L4", "--runtime", "unsloth", "--weights", "bf16",
                                 "--num-generations", "4", "--vllm-gpu-memory-utilization", "0.5"],
}


def _cli_plan(capsys, argv: list[str]) -> dict:
    code = main(argv + ["--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def _same(a: dict, b: dict) -> None:
    assert a["config"] == b["config"]
    assert a["topology"] == b["topology"] and a["runtime"] == b["runtime"]
    assert a["gpu"] == b["gpu"] and a.get("gpus") == b.get("gpus")


def _call(python: str) -> str:
    (line,) = [x for x in python.splitlines() if x.startswith("plan = planner.plan(")]
    return line[len("plan = "):]


@pytest.mark.parametrize("argv", CLI_GRID.values(), ids=CLI_GRID.keys())
def test_printed_command_and_python_call_reproduce_the_plan(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the printed command writes its files (--output grpo.yaml, --output-dir run/)
    original = _cli_plan(capsys, argv)
    steps = original["next_steps"]
    words = shlex.split(steps["plan"])
    assert words[0] == "plan"
    again = _cli_plan(capsys, words[1:])
    _same(original, again)
    from_python = eval(_call(steps["python"]), {"planner": planner}).to_dict()  # noqa: S307 - our own output
    _same(original, from_python)
    assert not steps["unflagged"]


PY_GRID = {
    "layout and pins": dict(model=MID, gpu="H100-80GB", num_gpus=4, engine="zero3", per_device_train_batch_size=2,
                            pin={"max_completion_length": 1024}, max_prompt_length=512),
    "analytic only, no relax": dict(model=SMALL, gpu="L4", calibration=None, relax=False, margin=0.2,
                                    lora_target_modules=["q_proj", "k_proj"], max_completion_length=700),
    "Unsloth": dict(model=LLAMA8, gpu="T4", runtime="unsloth", weights="nf4", lora_rank=32, max_seq_length=1024,
                    standby=True, unsloth_version="2026.10.9"),
}


@pytest.mark.parametrize("kwargs", PY_GRID.values(), ids=PY_GRID.keys())
def test_python_plans_print_the_call_that_made_them(kwargs, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kw = dict(kwargs)
    original = planner.plan(kw.pop("model"), kw.pop("gpu"), **kw).to_dict()
    steps = original["next_steps"]
    _same(original, eval(_call(steps["python"]), {"planner": planner}).to_dict())  # noqa: S307
    python_only = {k for k in ("calibration", "relax") if k in kwargs}
    assert {u.split("=")[0] for u in steps["unflagged"]} == python_only
    if not python_only:  # every setting has a flag: the command gives the same plan
        _same(original, _cli_plan(capsys, shlex.split(steps["plan"])[1:]))


def test_values_are_quoted_and_the_written_files_named(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "my run's" / "run.yaml"
    out.parent.mkdir()
    d = _cli_plan(capsys, ["--model", SMALL, "--gpu", "L4", "--output", str(out), "--lora-target-modules",
                           "q_proj, v_proj"])
    n = d["next_steps"]
    assert n["command"].startswith(f"trl grpo --config {shlex.quote(str(out))} ") and not n["write_first"]
    words = shlex.split(n["plan"])
    assert words[words.index("--output") + 1] == str(out)
    assert words[words.index("--lora-target-modules") + 1] == "q_proj,v_proj"
    assert "lora_target_modules=['q_proj', 'v_proj']" in n["python"]
    # a folder: the run is its launch.sh, and the plan command writes that folder again
    folder = tmp_path / "out dir"
    d = _cli_plan(capsys, ["--model", MID, "--gpu", "H100-80GB", "--num-gpus", "2", "--output-dir", str(folder)])
    n = d["next_steps"]
    assert n["command"].startswith(f"bash {shlex.quote(str(folder / 'launch.sh'))} ") and not n["write_first"]
    assert shlex.split(n["plan"])[-2:] == ["--output-dir", str(folder)]
    # nothing written: the plan command says what to write, the run command reads it
    d = _cli_plan(capsys, ["--model", MID, "--gpu", "H100-80GB", "--num-gpus", "2"])
    n = d["next_steps"]
    assert n["write_first"] == n["plan"] and n["plan"].endswith("--output-dir run/")
    assert n["command"].startswith("bash run/launch.sh ")


def test_a_config_file_is_named_in_the_command(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "my grpo.yaml"
    cfg.write_text(f"model_name_or_path: {SMALL}\nper_device_train_batch_size: 2\nlearning_rate: 3.0e-6\n")
    d = _cli_plan(capsys, ["--config", str(cfg), "--gpu", "L4"])
    words = shlex.split(d["next_steps"]["plan"])
    assert words[words.index("--config") + 1] == str(cfg)  # its unmodelled keys (learning_rate) come from it
    again = _cli_plan(capsys, words[1:])
    _same(d, again)
    assert again["config"]["learning_rate"] == 3e-6
    assert "passthrough={'learning_rate': 3e-06}" in d["next_steps"]["python"]


def test_the_text_output_prints_the_full_command(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--model", SMALL, "--gpu", "L4", "--margin", "0.1", "--weights", "nf4"]) == 0
    text = capsys.readouterr().out
    assert ("# write the files first: plan --model Qwen/Qwen2.5-0.5B-Instruct --gpu L4 --weights nf4 --margin 0.1 "
            "--output grpo.yaml") in text
    assert "planner.plan('Qwen/Qwen2.5-0.5B-Instruct', 'L4', weights='nf4', margin=0.1)" in text
