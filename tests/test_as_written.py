"""The user's own config, checked as written: `plan check --config` judges the file (the verdict of
`plan estimate --config`), `plan --config` holds every key the file sets unless --rechoose releases
it and lists what it changed, TRL's own refusals come first."""

from __future__ import annotations

import json

import pytest

import planner
from planner.cli import main
from planner.cli.plan import RECHOOSABLE
from planner.report.changes import CHANGE_KEYS

MODEL, SMALL = "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"
OVER = ("per_device_train_batch_size: 4\ngradient_accumulation_steps: 8\nnum_generations: 8\n"
        "max_completion_length: 2048\nuse_vllm: true\nvllm_mode: colocate\nvllm_gpu_memory_utilization: 0.5\n"
        "optim: adamw_torch\n")


def _file(tmp_path, text, name="f.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _run(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("text, gpu", [
    (OVER, "A100-40GB"),  # the issue's file: GiBs over without sleep mode
    (OVER.replace("optim: adamw_torch\n", "optim: adamw_torch\nvllm_enable_sleep_mode: true\n"), "A100-40GB"),
    (OVER, "H100-80GB"),
    ("per_device_train_batch_size: 16\nnum_generations: 8\nmax_completion_length: 4096\nuse_vllm: true\n"
     "vllm_gpu_memory_utilization: 0.7\n", "L4"),
])
def test_check_of_a_config_as_written_agrees_with_estimate(text, gpu, tmp_path, capsys):
    path = _file(tmp_path, text)
    model = SMALL if gpu == "L4" else MODEL
    code, out, _ = _run(capsys, ["estimate", "--config", path, "--model", model, "--gpu", gpu, "--json"])
    fits = json.loads(out)["fits"]
    assert code == (0 if fits else 1)
    code, out, _ = _run(capsys, ["check", "--config", path, "--model", model, "--gpu", gpu, "--json"])
    fit = next(c for c in json.loads(out)["checks"] if c["id"] == "fits")
    assert (fit["severity"] != "error") == fits
    assert code == (0 if fits else 1)


def test_the_issues_file_is_an_error_in_check(tmp_path, capsys):
    path = _file(tmp_path, OVER)
    code, out, _ = _run(capsys, ["check", "--config", path, "--model", MODEL, "--gpu", "A100-40GB"])
    assert code == 1 and "as written does not fit" in out and "1 error" in out


def test_plan_config_holds_every_key_or_lists_the_change(tmp_path, capsys):
    path = _file(tmp_path, OVER)
    code, out, _ = _run(capsys, ["--config", path, "--model", MODEL, "--gpu", "A100-40GB", "--json"])
    d = json.loads(out)
    held = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 8, "num_generations": 8,
            "max_completion_length": 2048, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.5,
            "optim": "adamw_torch", "use_vllm": True}
    assert {k: d["config"][k] for k in held} == held
    changed = {c["key"]: c for c in d["changes"]}
    assert not set(changed) & set(held)
    assert changed["vllm_enable_sleep_mode"]["from"] is False and changed["vllm_enable_sleep_mode"]["to"] is True
    for key, c in changed.items():  # every other modelled key differs from TRL's default, and says why
        assert key in CHANGE_KEYS and c["from"] != c["to"] and c["why"]


def test_rechoose_releases_a_key_and_lists_it(tmp_path, capsys):
    path = _file(tmp_path, OVER)
    argv = ["--config", path, "--model", MODEL, "--gpu", "A100-40GB", "--json"]
    _, out, _ = _run(capsys, argv + ["--rechoose", "vllm_gpu_memory_utilization,per_device_train_batch_size"])
    d = json.loads(out)
    for c in d["changes"]:
        if c["key"] in ("vllm_gpu_memory_utilization", "per_device_train_batch_size"):
            assert c["from"] == {"vllm_gpu_memory_utilization": 0.5, "per_device_train_batch_size": 4}[c["key"]]
            assert c["why"].startswith("re-chosen")
    held = {k: d["config"][k] for k in ("gradient_accumulation_steps", "num_generations", "optim")}
    assert held == {"gradient_accumulation_steps": 8, "num_generations": 8, "optim": "adamw_torch"}
    code, out, _ = _run(capsys, argv + ["--rechoose", "all"])
    assert code == 0 and json.loads(out)["fits"]


def test_a_plan_without_config_lists_changes_from_trls_defaults():
    p = planner.plan(SMALL, "L4")
    keys = {c["key"] for c in p.changes}
    assert "use_vllm" in keys and all(c["from"] != c["to"] for c in p.changes)
    assert p.to_dict()["changes"] == [dict(c) for c in p.changes]
    assert "rechoose" not in RECHOOSABLE


@pytest.mark.parametrize("text, rule", [
    ("generation_batch_size: 32\nsteps_per_generation: 4\n", "can not be both configured"),
    ("per_device_train_batch_size: 3\ngradient_accumulation_steps: 1\nnum_generations: 8\n",
     "not divisible by num_generations 8"),
    ("per_device_train_batch_size: 4\ngeneration_batch_size: 30\n", "not divisible by the global batch"),
    ("num_generations: 1\n", "at least 2 generations"),
])
@pytest.mark.parametrize("command", [["estimate"], ["check"], []])
def test_trls_refusals_before_planning(text, rule, command, tmp_path, capsys):
    path = _file(tmp_path, "use_vllm: true\n" + text)
    code, _, err = _run(capsys, [*command, "--config", path, "--model", SMALL, "--gpu", "L4"])
    lines = [line for line in err.splitlines() if line.startswith("plan: error:")]
    assert code == 2 and len(lines) == 1 and rule in lines[0], err


@pytest.mark.parametrize("text, gpu, expect", [
    ("fp16: true\nbf16: false\n", "H100-80GB", {"bf16": False, "fp16": True}),
    ("bf16: false\n", "H100-80GB", {"bf16": False}),
    ("fp16: true\n", "T4", {"bf16": False, "fp16": True}),
    ("bf16: true\n", "T4", "bf16: true in the config file, but the T4 has no bf16"),
    ("bf16: true\nfp16: true\n", "H100-80GB", "bf16 and fp16 are both true in the config file"),
])
def test_a_files_precision_is_held_or_refused(text, gpu, expect, tmp_path, capsys):
    import json

    from planner.cli import main

    f = tmp_path / "grpo.yaml"
    f.write_text(text)
    rc = main(["--config", str(f), "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", gpu, "--json"])
    out, err = capsys.readouterr()
    if isinstance(expect, str):
        assert rc == 2 and err.startswith(f"plan: error: {expect}") and err.count("\n") == 1, err
    else:
        config = json.loads(out)["config"]
        assert {k: config.get(k) for k in expect} == expect
