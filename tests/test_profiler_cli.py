"""`plan profile` in-process: exit codes, the exact one-line errors, and the --trace JSON."""

import json
import subprocess
import sys

import pytest

from planner.cli import main

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
from tiny_models import TINY_LLAMA  # noqa: E402


def test_measured_profile_without_a_gpu_points_to_trace(capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["profile", "--model", MODEL, "--gpu", "auto"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("plan: error: no CUDA GPU visible to torch on this machine; trace the step on the "
                            "CPU instead: plan profile --model Qwen/Qwen2.5-0.5B-Instruct --trace\n")


def test_measured_profile_without_torch_points_to_trace(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert main(["profile", "--model", MODEL, "--gpu", "auto"]) == 2
    assert capsys.readouterr().err.startswith("plan: error: no CUDA GPU visible to torch on this machine; "
                                              "trace the step on the CPU instead")


def test_missing_packages_are_named_with_their_use(capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    assert main(["profile", "--model", MODEL, "--gpu", "auto"]) == 2
    assert capsys.readouterr().err == (
        "plan: error: plan profile --gpu needs bitsandbytes (bitsandbytes for the 8-bit AdamW optimizer and "
        "NF4 weights): pip install bitsandbytes\n")


def test_profile_needs_trace_or_gpu_auto(capsys):
    assert main(["profile", "--model", MODEL]) == 2
    assert capsys.readouterr().err == ("plan: error: plan profile needs --trace (trace the step on the CPU) or "
                                       "--gpu auto (measure it on this machine's GPU)\n")
    assert main(["profile", "--model", MODEL, "--gpu", "H100-80GB"]) == 2


def test_bad_shapes_are_one_line(capsys):
    assert main(["profile", "--model", MODEL, "--trace", "--shapes", "4x256"]) == 2
    assert capsys.readouterr().err == ("plan: error: --shapes takes batch:prompt:completion triples separated by "
                                       "commas (e.g. 1:256:512,4:256:1024,8:256:1792), got '4x256'\n")


def test_trace_json(tmp_path, capsys):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_LLAMA))
    assert main(["profile", "--model", str(config), "--trace", "--shapes", "1:32:96,2:32:96", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "trace" and report["model"] == str(config)
    assert [(s["batch"], s["gradient_checkpointing"]) for s in report["shapes"]] == [(1, True), (2, True)]
    for s in report["shapes"]:
        assert s["activation_peak_bytes"] > 0
        assert s["trainer_peak_bytes"] > s["activation_peak_bytes"]
        assert s["analytic_activation_peak_bytes"] > 0
    assert any("SDPA traced as the CUDA flash kernel" in n for n in report["notes"])


def test_profile_paths_that_fail_early_do_not_import_torch():
    code = ("import sys; from planner.cli import main; "
            "rc = main(['profile', '--model', 'Qwen/Qwen2.5-0.5B-Instruct']); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "False"]
