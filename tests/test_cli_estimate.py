"""`plan estimate` in-process: JSON shape, exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest

from planner.cli import main

DONE_WHEN = ["estimate", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "H100-80GB", "--weights", "bf16",
             "--lora-rank", "16", "--batch-size", "8", "--prompt-length", "256", "--completion-length", "1792",
             "--json"]


def test_done_when_command_prints_the_documented_json(capsys):
    assert main(DONE_WHEN) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"]["id"] == "Qwen/Qwen2.5-7B-Instruct"
    assert d["model"]["params"] == 7_615_616_512
    assert d["gpu"]["name"] == "H100-80GB" and d["gpu"]["total_bytes"] == 81_079 * 2**20
    t = d["trainer"]
    assert sum(t["components"].values()) == t["peak_bytes"]
    assert 0 < t["steady_bytes"] < t["peak_bytes"]
    assert d["fits"] is True
    assert d["memory_model"].startswith(("analytic", "calibrated"))


def test_run_settings_flags(capsys):
    peaks = {}
    for extra in ([], ["--completion-lengths", "fixed"], ["--gradient-accumulation-steps", "4"]):
        assert main(DONE_WHEN + extra) == 0
        d = json.loads(capsys.readouterr().out)
        peaks[tuple(extra)] = d["trainer"]["peak_bytes"]
    fixed, varied = peaks[("--completion-lengths", "fixed")], peaks[()]
    # one isolated step (the calibration protocol) < a run with varied lengths < and with accumulation
    assert fixed < varied < peaks[("--gradient-accumulation-steps", "4")]
    assert main(DONE_WHEN[:-1] + ["--gradient-accumulation-steps", "4"]) == 0
    assert "varied completion lengths, 4 accumulation steps" in capsys.readouterr().out


def test_table_output_names_every_component(capsys):
    assert main(DONE_WHEN[:-1]) == 0
    out = capsys.readouterr().out
    for name in ("weights", "adapters", "optimizer_state", "activations", "allocator_reserve", "non_torch"):
        assert name in out
    assert "fits" in out


def test_oversized_setup_does_not_fit(capsys):
    assert main(["estimate", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L4", "--batch-size", "16",
                 "--completion-length", "4096", "--json"]) == 1  # printed, rated not fitting: exit 1
    assert json.loads(capsys.readouterr().out)["fits"] is False


@pytest.mark.parametrize("argv,line", [
    (["--model", "Qwen/Qwen2.5-0.5B-Instrct", "--gpu", "H100-80GB"],
     "plan: error: unknown model 'Qwen/Qwen2.5-0.5B-Instrct': not a shipped profile"),
    (["--model", "qwen2.5-0.5b-instruct", "--gpu", "H1000"], "plan: error: unknown GPU 'H1000': "),
    (["--model", "qwen2.5-0.5b-instruct", "--gpu", "H100-80GB", "--batch-size", "0"],
     "plan: error: --per-device-train-batch-size must be a positive integer, got 0"),
    (["--model", "qwen2.5-0.5b-instruct", "--gpu", "H100-80GB", "--completion-length", "-3"],
     "plan: error: --max-completion-length must be a positive integer, got -3"),
    (["--model", "qwen2.5-0.5b-instruct", "--gpu", "H100-80GB", "--lora-rank", "4096"],
     "plan: error: --lora-r 4096 is larger than the hidden size (896) of Qwen/Qwen2.5-0.5B-Instruct"),
    (["--model", "qwen2.5-0.5b-instruct", "--gpu", "H100-80GB", "--rollout-turns", "0"],
     "plan: error: --rollout-turns must be a positive integer, got 0"),
    (["--model", "qwen2.5-0.5b-instruct", "--gpu", "H100-80GB", "--rollout-turns", "2", "--runtime", "unsloth"],
     "plan: error: --rollout-turns is modelled with TRL only; drop it, or plan the concatenated "
     "length with --max-prompt-length and --max-completion-length"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, line):
    assert main(["estimate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line)
    assert err.count("\n") == 1 and "Traceback" not in err


def test_malformed_config_json_exit_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "llama", ')
    assert main(["estimate", "--model", str(tmp_path), "--gpu", "H100-80GB"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plan: error: malformed config.json at ") and err.count("\n") == 1


def test_estimate_path_imports_neither_torch_nor_transformers():
    code = ("import sys; from planner.cli import main; main(['estimate','--model','Qwen/Qwen2.5-7B-Instruct',"
            "'--gpu','H100-80GB','--json']); "
            "bad=[m for m in ('torch','transformers','trl') if m in sys.modules]; "
            "sys.stderr.write(repr(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_rollout_turns_train_the_concatenated_turns_and_serve_one(capsys):
    # a multi-turn rollout_func (TRL's OpenEnv examples): vLLM serves one turn (max_model_len 1408 is
    # accepted for 1400 + 8), the trainer trains on 6 turns of it
    base = ["estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "A100-40GB", "--prompt-length", "1400",
            "--completion-length", "8", "--vllm-gpu-memory-utilization", "0.1", "--vllm-max-model-len", "1408",
            "--vllm-version", "0.10.2", "--trl-version", "0.26.0", "--json"]
    assert main(base) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(base + ["--rollout-turns", "6"]) == 0
    six = json.loads(capsys.readouterr().out)
    assert six["rollout"] == {"turns": 6, "turn_prompt_length": 1400, "turn_completion_length": 8,
                              "trained_prompt_length": 8400, "trained_completion_length": 48}
    assert "rollout" not in one
    # the same vLLM engine; more trainer activations
    assert six["vllm"]["kv_cache_bytes"] == one["vllm"]["kv_cache_bytes"]
    assert six["trainer"]["components"]["activations"] > 5 * one["trainer"]["components"]["activations"]
    # the same trainer as a one-turn sequence of the concatenated length
    # (with the same TRL release: its log-prob head is a moment of the trainer's step)
    assert main(base[:5] + ["--prompt-length", "8400", "--completion-length", "48", "--trl-version", "0.26.0",
                            "--json"]) == 0
    flat = json.loads(capsys.readouterr().out)
    assert flat["trainer"] == six["trainer"]
    assert main(base[:-1] + ["--rollout-turns", "6"]) == 0
    assert "batch 1 x (6 turns x (1400 + 8) = 8400 + 48) tokens" in capsys.readouterr().out


def test_estimate_shows_every_moment_and_names_the_binding_one(capsys):
    # issue 23: foreach AdamW on fp32 full fine-tuning; the optimizer step is the largest moment
    argv = ["estimate", "--model", "Qwen/Qwen3-1.7B", "--gpu", "H100-80GB", "--weights", "fp32", "--finetune", "full",
            "--optim", "adamw_torch"]
    assert main(argv + ["--json"]) == 0
    t = json.loads(capsys.readouterr().out)["trainer"]
    assert list(t["moments"]) == ["forward", "logprob_head", "backward", "clip_grad", "optimizer_step"]
    assert t["binding_moment"] == "optimizer_step" == max(t["moments"], key=t["moments"].get)
    assert t["peak_bytes"] == max(t["moments"].values()) == sum(t["components"].values())
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "trainer (a run's peak, at its optimizer_step moment):" in text
    lines = text.splitlines()
    i = lines.index("trainer step, moment by moment (the peak is the largest):")
    assert [line.split()[0] for line in lines[i + 1:i + 6]] == list(t["moments"])
    assert lines[i + 5].endswith("<- binding") and sum("<- binding" in line for line in lines) == 1
