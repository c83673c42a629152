"""Pins, a TRL config file, the assumptions and the binding constraint, the next steps, and the
optimizer chosen from what is installed when planning for this machine."""

import json
import re
from dataclasses import replace

import pytest
import yaml

import planner
from planner.cli import main
from planner.errors import InfeasibleError, InvalidSetupError
from planner.specs.gpu import resolve_gpu

GIB = 1024**3
MODEL7 = "Qwen/Qwen2.5-7B-Instruct"
PINS = dict(per_device_train_batch_size=8, gradient_accumulation_steps=4, num_generations=8,
            max_completion_length=2048)


def _json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


# -- pins are honoured ------------------------------------------------------------------------

def test_pins_are_held_and_the_rest_is_chosen():
    free = planner.plan(MODEL7, "H100-80GB")
    p = planner.plan(MODEL7, "H100-80GB", pin=PINS)
    for k, v in PINS.items():
        assert p.config[k] == v, k
    assert p.config["generation_batch_size"] == 8 * 4  # one GPU: B x S
    assert p.pinned == tuple(PINS)
    # free of pins the solver makes another choice; pinned, it still chooses utilisation and sleep
    assert free.config["per_device_train_batch_size"] != 8
    assert 0.3 <= p.config["vllm_gpu_memory_utilization"] <= 0.7
    assert p.fits and p.headroom_bytes >= 0


def test_trl_named_keywords_are_pins_too():
    kw = {k: v for k, v in PINS.items() if k not in ("num_generations", "max_completion_length")}
    a = planner.plan(MODEL7, "H100-80GB", **kw)
    b = planner.plan(MODEL7, "H100-80GB", pin=kw)
    assert a.config == b.config and a.pinned == b.pinned == tuple(kw)


@pytest.mark.parametrize("pin,key,value", [
    (dict(vllm_gpu_memory_utilization=0.45), "vllm_gpu_memory_utilization", 0.45),
    (dict(vllm_enable_sleep_mode=True), "vllm_enable_sleep_mode", True),
    (dict(generation_batch_size=48, num_generations=16), "generation_batch_size", 48),
    (dict(vllm_max_model_length=1500), "vllm_max_model_length", 1500),
])
def test_each_pin_restricts_the_search(pin, key, value):
    p = planner.plan("Qwen/Qwen2.5-1.5B-Instruct", "A100-40GB", pin=pin)
    assert p.config[key] == value
    if key == "vllm_max_model_length":  # the completion fills what the engine's length leaves
        assert p.config["max_completion_length"] == 1500 - 256


def test_pinned_effective_batch_beats_the_cap():
    p = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", pin=dict(completions_per_step=1024))
    assert p.config["generation_batch_size"] == 1024  # over max_completions_per_step 512: a pin wins
    assert p.binding["constraint"] == "pin"


def test_pinned_completion_length_is_exact_not_cut():
    # as a target it is cut (tests/test_solver.py); pinned, nothing fits and the error says what would
    kw = dict(weights="nf4", sleep_mode="off")
    target = planner.plan("meta-llama/Llama-3.1-8B-Instruct", "RTX-4090", max_completion_length=16384, **kw)
    assert target.config["max_completion_length"] < 16384
    with pytest.raises(InfeasibleError) as info:
        planner.plan("meta-llama/Llama-3.1-8B-Instruct", "RTX-4090", pin=dict(max_completion_length=16384), **kw)
    m = re.search(r"max_completion_length 16384 -> (\d+) fits", str(info.value))
    assert m and int(m.group(1)) == target.config["max_completion_length"]


def test_infeasible_pins_name_the_term_and_the_nearest_value_of_each_pin():
    pins = dict(per_device_train_batch_size=32, max_completion_length=8192)
    with pytest.raises(InfeasibleError) as info:
        planner.plan(MODEL7, "H100-80GB", pin=pins)
    msg = str(info.value)
    assert msg.startswith("no configuration fits: per_device_train_batch_size 32 (pinned): the training step needs")
    b = int(re.search(r"per_device_train_batch_size 32 -> (\d+) fits", msg).group(1))
    c = int(re.search(r"max_completion_length 8192 -> (\d+) fits", msg).group(1))
    assert b < 32 and c < 8192
    # each nearest value really fits with the other pin held
    assert planner.plan(MODEL7, "H100-80GB", pin=dict(pins, per_device_train_batch_size=b)).fits
    assert planner.plan(MODEL7, "H100-80GB", pin=dict(pins, max_completion_length=c)).fits
    assert info.value.closest is not None and info.value.closest.config["per_device_train_batch_size"] == b


@pytest.mark.parametrize("pin,message", [
    (dict(gradient_accumulation_steps=4, steps_per_generation=2), "gradient_accumulation_steps=4 and "
                                                                  "steps_per_generation=2 differ"),
    (dict(generation_batch_size=30, num_generations=8), "30 completions per step is not a multiple of num_generations 8"),
    (dict(per_device_train_batch_sise=8), "unknown pin 'per_device_train_batch_sise' \\(did you mean "
                                          "'per_device_train_batch_size'\\?\\)"),
    (dict(vllm_gpu_memory_utilization=1.5), "vllm_gpu_memory_utilization must be in \\(0, 1\\], got 1.5"),
    (dict(max_completion_length=2048, vllm_max_model_length=1024), "vllm_max_model_length=1024 is shorter"),
])
def test_bad_pins_are_collected(pin, message):
    with pytest.raises(InvalidSetupError, match=message):
        planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", pin=pin)


# -- CLI: both spellings and --config ----------------------------------------------------------

def test_done_when_config_file_and_flags_give_the_same_plan(tmp_path, capsys):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump(PINS))
    base = ["--model", MODEL7, "--gpu", "H100-80GB", "--json"]
    from_file = _json(capsys, ["--config", str(cfg), *base])
    flags = ["--per_device_train_batch_size", "8", "--gradient-accumulation-steps", "4", "--num_generations", "8",
             "--max-completion-length", "2048"]
    from_flags = _json(capsys, [*base, *flags])
    for k, v in PINS.items():
        assert from_file["config"][k] == v
    assert from_file["config"] == from_flags["config"]
    assert from_file["pinned"] == from_flags["pinned"] == list(PINS)
    assert from_file["assumptions"]["per_device_train_batch_size"]["source"] == "config file"
    assert from_flags["assumptions"]["per_device_train_batch_size"]["source"] == "pinned"


def test_both_spellings_of_every_pin_flag(capsys):
    base = ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--json"]
    dashed = ["--per-device-train-batch-size", "4", "--steps-per-generation", "2", "--vllm-gpu-memory-utilization",
              "0.5", "--vllm-enable-sleep-mode", "false", "--max-prompt-length", "128", "--lora-r", "8"]
    under = ["--" + w[2:].replace("-", "_") if w.startswith("--") else w for w in dashed]
    a, b = _json(capsys, base + dashed), _json(capsys, base + under)
    assert a["config"] == b["config"]
    assert (a["config"]["per_device_train_batch_size"], a["config"]["gradient_accumulation_steps"],
            a["config"]["vllm_gpu_memory_utilization"], a["config"]["vllm_max_model_length"]) == (4, 2, 0.5, 128 + 512)
    assert a["assumptions"]["lora_r"]["value"] == 8


def test_config_file_passes_unmodelled_keys_through(tmp_path, capsys):
    cfg = tmp_path / "in.yaml"
    cfg.write_text(yaml.safe_dump({**PINS, "learning_rate": 1e-6, "beta": 0.04, "reward_funcs": ["accuracy_reward"],
                                   "lora_alpha": 64, "lora_r": 32, "max_prompt_length": 512,
                                   "model_name_or_path": MODEL7, "use_vllm": True}))
    out = tmp_path / "out.yaml"
    d = _json(capsys, ["--config", str(cfg), "--gpu", "H100-80GB", "--json", "--output", str(out)])
    assert d["model"]["id"] == MODEL7  # from model_name_or_path
    assert {"learning_rate": 1e-6, "beta": 0.04, "reward_funcs": ["accuracy_reward"]}.items() <= d["config"].items()
    written = yaml.safe_load(out.read_text())
    assert written["learning_rate"] == 1e-6 and written["reward_funcs"] == ["accuracy_reward"]
    assert written["lora_alpha"] == 64 and written["lora_r"] == 32  # the file's own, not 2 x rank
    assert "max_prompt_length" not in written  # TRL 1.x has no such field: the planner's prompt length
    assert d["assumptions"]["max_prompt_length"] == {"value": 512, "source": "config file"}
    assert d["config"]["vllm_max_model_length"] == 512 + 2048


def test_bad_config_file_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("- just\n- a list\n")
    assert main(["--config", str(cfg), "--model", MODEL7, "--gpu", "L4"]) == 2
    err = capsys.readouterr().err
    assert "a TRL config must be a YAML mapping" in err and err.count("\n") == 1


def test_estimate_takes_trl_spellings(capsys):
    base = ["estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--json"]
    a = _json(capsys, base + ["--batch-size", "4", "--completion-length", "1024"])
    b = _json(capsys, base + ["--per_device_train_batch_size", "4", "--max_completion_length", "1024"])
    assert a == b and a["setup"]["batch_size"] == 4 and a["setup"]["completion_length"] == 1024


# -- assumptions and what binds ---------------------------------------------------------------

def test_small_model_on_a_big_card_is_bound_by_a_cap_not_memory():
    p = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB")
    b = p.to_dict()["binding"]
    assert b["constraint"] == "cap" and b["name"] == "max_completions_per_step" and b["value"] == 512
    lim = b["limits"]
    assert lim["per_device_train_batch_size"]["constraint"] == "cap" and lim["per_device_train_batch_size"]["value"] == 64
    assert lim["vllm_gpu_memory_utilization"] == {**lim["vllm_gpu_memory_utilization"], "constraint": "cap",
                                                  "value": 0.7}
    assert p.headroom_bytes > 4 * GIB  # memory really is not what stops it
    assert not any("binding phase" in r for r in p.reasons)
    assert any("the top of the range searched" in r for r in p.reasons)
    # raising the caps buys more
    wider = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", max_completions_per_step=1024)
    assert wider.config["generation_batch_size"] > p.config["generation_batch_size"]


def test_a_tight_card_is_bound_by_a_memory_phase():
    p = planner.plan("Qwen/Qwen2.5-7B-Instruct", "L4", weights="nf4")
    assert p.binding["constraint"] == "memory"
    assert p.binding["name"] in {ph.name for ph in p.training_rank.phases}


def test_assumptions_carry_values_and_sources():
    p = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", prompt_length=128, pin=dict(lora_r=8))
    a = p.to_dict()["assumptions"]
    # prompt_length is max_prompt_length (the CLI's --prompt-length alike): a TRL setting given is pinned
    assert a["max_prompt_length"] == {"value": 128, "source": "pinned"} and "prompt_length" not in a
    assert a["lora_r"] == {"value": 8, "source": "pinned"}
    assert a["max_batch"] == {"value": 64, "source": "default"}
    assert a["utilization_range"]["value"] == [0.3, 0.7]
    assert a["max_completions_per_step"]["value"] == 512
    for dist in ("trl", "vllm", "transformers"):
        assert "installed" in a[f"{dist}_version"] and a[f"{dist}_version"]["value"]
    assert a["vllm_version"]["value"] == p.vllm.version
    assert "expected_error" in a["memory_model"] and a["memory_model"]["value"] == p.memory_model


def test_cap_flags_reach_the_request(capsys):
    d = _json(capsys, ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "H100-80GB", "--json", "--max-batch", "16",
                       "--max-completions-per-step", "128"])
    assert d["config"]["per_device_train_batch_size"] <= 16 and d["config"]["generation_batch_size"] <= 128
    assert d["assumptions"]["max_batch"] == {"value": 16, "source": "option"}


# -- what to run next -----------------------------------------------------------------------------

def test_next_steps_one_gpu(tmp_path, capsys):
    out = tmp_path / "my run" / "grpo.yaml"
    out.parent.mkdir()
    d = _json(capsys, ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--json", "--output", str(out),
                       "--per_device_train_batch_size", "4"])
    n = d["next_steps"]
    assert n["command"].startswith(f"trl grpo --config '{out}'") and not n["write_first"]
    assert "planner.train(" in n["python"] and "per_device_train_batch_size=4" in n["python"]
    compile(n["python"], "<next_steps>", "exec")  # valid Python
    assert main(["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4"]) == 0
    text = capsys.readouterr().out
    assert "\nnext:\n" in text and "trl grpo --config grpo.yaml" in text and "--output grpo.yaml" in text


def test_next_steps_several_gpus():
    p = planner.plan(MODEL7, "H100-80GB", num_gpus=4)
    n = p.next_steps
    assert n["command"].startswith("bash run/launch.sh") and "accelerate.yaml" in n["files"]
    assert "num_gpus=4" in n["python"]


# -- defaults that run here ---------------------------------------------------------------------

def test_optim_follows_the_installed_packages_on_this_machine(monkeypatch):
    import planner.api as api

    monkeypatch.setattr(api, "installed_version", lambda dist: None if dist == "bitsandbytes" else "1.0.0")
    live = replace(resolve_gpu("H100-80GB"), free_bytes=resolve_gpu("H100-80GB").total_bytes)
    here = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", live)
    assert here.config["optim"] == "adamw_torch"
    a = here.assumptions["optim"]
    assert a["source"] == "installed package" and "adamw_8bit" in a["note"] and "bitsandbytes" in a["note"]
    # the same machine planning for a named card keeps 8-bit, and the check says what to install
    elsewhere = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB")
    assert elsewhere.config["optim"] == "adamw_8bit"
    # a user's choice is kept on this machine too
    assert planner.plan("Qwen/Qwen2.5-0.5B-Instruct", live, optim="adamw_8bit").config["optim"] == "adamw_8bit"


def test_bitsandbytes_check_names_the_install_and_speaks_python():
    pytest.importorskip("trl")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    p = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB")
    c = next(c for c in p.checks if c.id == "bitsandbytes-optimizer")
    assert "pip install bitsandbytes" in c.fix and "optim='adamw_torch'" in c.fix and "--optim" not in c.fix


def test_python_errors_name_keyword_arguments_and_the_cli_names_flags(capsys):
    with pytest.raises(InvalidSetupError, match=r"^lora_r must be a positive integer, got 0$"):  # the CLI's name
        planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", lora_rank=0)
    assert main(["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--lora-rank", "0"]) == 2
    assert "--lora-r must be a positive integer" in capsys.readouterr().err


def test_to_python():
    from planner.report.hints import to_python

    assert to_python("pip install bitsandbytes, or --optim adamw_torch") == "pip install bitsandbytes, or optim='adamw_torch'"
    assert to_python("re-plan with --no-expandable-segments") == "re-plan with expandable_segments=False"
    assert to_python("(--utilization-range 0.1,0.9)") == "(utilization_range=(0.1, 0.9))"
    assert to_python("--model must be a model id") == "model must be a model id"
    assert to_python("run `plan check --gpu auto` here") == "run `plan check --gpu auto` here"


def test_passed_through_keys_reach_grpo_config_where_trl_has_them(tmp_path):
    pytest.importorskip("trl")
    from planner.search.trl_config import read_grpo_config

    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump({"learning_rate": 3e-6, "beta": 0.02, "lora_alpha": 64,
                                    "reward_funcs": ["accuracy_reward"], "per_device_train_batch_size": 4}))
    cfg = read_grpo_config(path)
    assert cfg.pins == {"per_device_train_batch_size": 4} and "lora_alpha" in cfg.passthrough
    p = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", pin=cfg.pins, passthrough=cfg.passthrough, **cfg.options)
    with pytest.warns(UserWarning):  # no CUDA here: use_vllm off, said once
        g = p.grpo_config()
    assert (g.learning_rate, g.beta, g.per_device_train_batch_size) == (3e-6, 0.02, 4)
    assert not hasattr(g, "lora_alpha")  # a ModelConfig key: grpo.yaml's, not GRPOConfig's


def test_rollout_turns_plan_trains_the_turns_and_serves_one():
    # a multi-turn rollout_func: vLLM's max_model_len holds one turn, the trainer's terms N of them
    import planner

    pin = {"max_prompt_length": 1400, "max_completion_length": 8}
    one = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "A100-40GB", pin=pin)
    six = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "A100-40GB", pin=pin, rollout_turns=6)
    assert six.config["vllm_max_model_length"] == one.config["vllm_max_model_length"] == 1408
    assert six.config["max_completion_length"] == 8
    assert (six.setup.prompt_length, six.setup.completion_length) == (8400, 48)
    assert six.extra["rollout"]["turns"] == 6 and "rollout" not in one.extra
    assert six.pin_value("max_prompt_length") == 1400
    assert six.assumptions["rollout_turns"]["value"] == 6
    assert "rollout_turns=6" in six.next_steps["python"]
    # no context-length error for the concatenated length: vLLM sees one turn
    assert not [c for c in six.checks if c.id == "context-length" and c.severity == "error"]
    assert six.training_rank.peak_bytes > one.training_rank.peak_bytes or \
        six.config["per_device_train_batch_size"] < one.config["per_device_train_batch_size"]
    with pytest.raises(InvalidSetupError, match="rollout_turns must be a positive integer, got 0"):
        planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "A100-40GB", rollout_turns=0)
