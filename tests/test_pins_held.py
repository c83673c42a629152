"""Every pin held or refused, messages that agree with the plan: a pinned value is in the plan's
``config`` exactly (or its documented equivalent, Plan.pin_value), or the request fails (bad input:
InvalidSetupError, exit 2, naming the rule; nothing fits: InfeasibleError, exit 3, whose suggested
values are checked by solving with them); the waves and concurrency reported are those of the engine
TRL builds with the plan's config; a fixed setup that is over a GPU's budget does not fit."""

import json
import math
import re

import pytest
import yaml

import planner
from planner.cli import main
from planner.errors import InfeasibleError, InvalidSetupError, PlannerError
from planner.search.results import engine_concurrency
from planner.specs.versions import trl_max_num_seqs

MODEL7 = "Qwen/Qwen2.5-7B-Instruct"
SMALL = "Qwen/Qwen2.5-0.5B-Instruct"

# each pin name alone, and pairs and triples that meet (or break) TRL's batch rules
SINGLE_PINS = [dict(per_device_train_batch_size=3), dict(per_device_train_batch_size=16),
               dict(gradient_accumulation_steps=3), dict(steps_per_generation=2), dict(generation_batch_size=48),
               dict(completions_per_step=64), dict(num_generations=4), dict(num_generations=7),
               dict(max_completion_length=1000), dict(max_prompt_length=300), dict(lora_r=32),
               dict(lora_target_modules=["q_proj", "v_proj"]), dict(optim="adamw_torch"),
               dict(vllm_gpu_memory_utilization=0.45), dict(vllm_gpu_memory_utilization=0.9),
               dict(vllm_enable_sleep_mode=True), dict(vllm_enable_sleep_mode=False), dict(vllm_max_model_length=1500)]
PAIR_PINS = [dict(generation_batch_size=64, per_device_train_batch_size=8),
             dict(generation_batch_size=64, gradient_accumulation_steps=1),
             dict(per_device_train_batch_size=8, gradient_accumulation_steps=2),
             dict(completions_per_step=96, num_generations=16),
             dict(per_device_train_batch_size=4, num_generations=6),
             dict(generation_batch_size=64, per_device_train_batch_size=8, gradient_accumulation_steps=1),
             dict(generation_batch_size=48, per_device_train_batch_size=8, gradient_accumulation_steps=2),
             dict(vllm_gpu_memory_utilization=0.5, vllm_enable_sleep_mode=False)]


def _held(p: planner.Plan, pin: dict) -> None:
    """Every pin is in the plan as given (Plan.pin_value: the documented equivalents)."""
    for name, value in pin.items():
        assert p.pin_value(name) == value, (name, value, p.pin_value(name))
    c = p.config
    # completions_per_step is generation_batch_size, global: B x S x the training GPUs
    assert c["generation_batch_size"] == (c["per_device_train_batch_size"] * c["gradient_accumulation_steps"]
                                          * p.topology.world_size)
    assert set(p.pinned) == set(pin)


@pytest.mark.parametrize("model,gpu,num_gpus,weights", [
    (SMALL, "RTX-4090", 1, "bf16"), (MODEL7, "H100-80GB", 1, "bf16"), (MODEL7, "A100-40GB", 3, "bf16"),
    (MODEL7, "RTX-4090", 2, "nf4"), (SMALL, "H100-80GB", 1, "bf16"),
])
def test_every_pin_is_held_or_the_request_fails_trl(model, gpu, num_gpus, weights):
    held = 0
    for pin in SINGLE_PINS + PAIR_PINS:
        try:
            p = planner.plan(model, gpu, num_gpus=num_gpus, weights=weights, pin=pin, relax=False)
        except PlannerError as e:  # refused (exit 2) or nothing fits (exit 3), with its reason
            assert str(e).strip(), pin
            continue
        _held(p, pin)
        held += 1
    assert held >= len(SINGLE_PINS)  # the grid is not all failures


UNSLOTH_PINS = [dict(per_device_train_batch_size=1), dict(per_device_train_batch_size=3),
                dict(per_device_train_batch_size=16), dict(gradient_accumulation_steps=3), dict(num_generations=4),
                dict(num_generations=7), dict(max_completion_length=1000), dict(max_prompt_length=300),
                dict(lora_r=32), dict(vllm_gpu_memory_utilization=0.45), dict(vllm_gpu_memory_utilization=0.33),
                dict(per_device_train_batch_size=3, gradient_accumulation_steps=1),
                dict(per_device_train_batch_size=8, gradient_accumulation_steps=2),
                dict(per_device_train_batch_size=4, num_generations=6),
                dict(gradient_accumulation_steps=3, num_generations=4)]


@pytest.mark.parametrize("model,gpu", [(SMALL, "T4"), (MODEL7, "T4"), (MODEL7, "H100-80GB")])
@pytest.mark.parametrize("standby", [None, True])
def test_every_pin_is_held_or_the_request_fails_unsloth(model, gpu, standby):
    held = 0
    for pin in UNSLOTH_PINS:
        try:
            p = planner.plan(model, gpu, runtime="unsloth", standby=standby, pin=pin)
        except PlannerError:
            continue
        for name, value in pin.items():
            assert p.pin_value(name) == value, (pin, name, p.pin_value(name))
        # vLLM's utilisation is from_pretrained's (Unsloth: no GRPOConfig key)
        if "vllm_gpu_memory_utilization" in pin:
            assert p.runtime_details.from_pretrained_kwargs()["gpu_memory_utilization"] == \
                pin["vllm_gpu_memory_utilization"]
        held += 1
    assert held >= 5


# -- the reported cases, each way of pinning -------------------------------------------------------

CONTRADICTION = ["--model", MODEL7, "--gpu", "H100-80GB", "--generation_batch_size", "64",
                 "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1"]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_contradicting_batch_pins_are_bad_input_from_every_way_of_pinning(capsys, tmp_path):
    assert main(CONTRADICTION) == 2
    err = _err_line(capsys)
    assert "generation_batch_size = per_device_train_batch_size x steps_per_generation x world size" in err
    assert "8 x 1 x 1 is not 64" in err
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump(dict(generation_batch_size=64, per_device_train_batch_size=8,
                                       gradient_accumulation_steps=1)))
    assert main(["--model", MODEL7, "--gpu", "H100-80GB", "--config", str(cfg)]) == 2
    assert "8 x 1 x 1 is not 64" in _err_line(capsys)
    with pytest.raises(InvalidSetupError, match="is not 64"):
        planner.plan(MODEL7, "H100-80GB", pin=dict(generation_batch_size=64, per_device_train_batch_size=8,
                                                  gradient_accumulation_steps=1))
    with pytest.raises(InvalidSetupError, match="is not 64"):
        planner.plan(MODEL7, "H100-80GB", generation_batch_size=64, per_device_train_batch_size=8,
                     gradient_accumulation_steps=1)


def test_agreeing_batch_pins_are_held():
    p = planner.plan(MODEL7, "H100-80GB", pin=dict(generation_batch_size=64, per_device_train_batch_size=8,
                                                  gradient_accumulation_steps=8))
    assert (p.config["generation_batch_size"], p.config["per_device_train_batch_size"],
            p.config["gradient_accumulation_steps"]) == (64, 8, 8)
    # two of the three: the third is derived, per training GPU
    p = planner.plan(MODEL7, "H100-80GB", num_gpus=2, layout="colocate",
                     pin=dict(generation_batch_size=64, gradient_accumulation_steps=1))
    assert p.config["generation_batch_size"] == 64 and p.config["per_device_train_batch_size"] == 32


def test_completions_per_step_on_three_gpus(capsys):
    for n in (48, 64, 96):
        code = main(["--model", MODEL7, "--gpu", "H100-80GB", "--num-gpus", "3", "--completions-per-step", str(n),
                     "--json"])
        out = capsys.readouterr()
        if code == 0:
            assert json.loads(out.out)["config"]["generation_batch_size"] == n
        else:
            assert code in (2, 3) and out.err.startswith("plan: error:")


def test_unsloth_refuses_what_it_cannot_hold(capsys):
    assert main(["--runtime", "unsloth", "--model", MODEL7, "--gpu", "H100-80GB", "--generation_batch_size", "64"]) == 2
    assert "--generation-batch-size is not honoured by --runtime unsloth" in capsys.readouterr().err
    # a batch its GRPOConfig would set to num_generations: refused, naming the rule
    assert main(["--runtime", "unsloth", "--model", MODEL7, "--gpu", "H100-80GB",
                 "--per_device_train_batch_size", "3", "--gradient_accumulation_steps", "1"]) == 2
    assert "sets per_device_train_batch_size to num_generations unless" in _err_line(capsys)
    # a utilisation standby would change: refused, naming the standby rule
    with pytest.raises(InvalidSetupError, match="standby"):
        planner.plan(MODEL7, "H100-80GB", runtime="unsloth", standby=True, vllm_gpu_memory_utilization=0.33)


@pytest.mark.parametrize("pin", [dict(vllm_gpu_memory_utilization=0.5), dict(vllm_enable_sleep_mode=False),
                                 dict(vllm_max_model_length=1500)])
def test_colocated_vllm_settings_keep_vllm_colocated(pin):
    # on 2 GPUs the search would otherwise pick a `trl vllm-serve` server, which reads none of them
    p = planner.plan(MODEL7, "A100-40GB", num_gpus=2, pin=pin)
    assert p.topology.vllm_mode == "colocate"
    _held(p, pin)
    with pytest.raises(InvalidSetupError, match="configures colocated vLLM .* TRL does not read it"):
        planner.plan(MODEL7, "A100-40GB", num_gpus=2, layout="server", pin=pin)


# -- infeasible: the pin that breaks, and a value checked by solving with it ----------------------------

@pytest.mark.parametrize("extra", [[], ["--vllm-enable-sleep-mode", "false"], ["--num-generations", "7"]])
def test_infeasible_pins_suggest_values_that_were_solved(capsys, extra):
    argv = ["--model", MODEL7, "--gpu", "A100-40GB", "--vllm-gpu-memory-utilization", "0.9", *extra]
    assert main(argv) == 3
    err = _err_line(capsys)
    assert "nothing close fits either" not in err
    got = re.findall(r"(\w+) \S+ -> (\S+) fits", err)
    assert ("vllm_gpu_memory_utilization" in dict(got)), err
    pins = {"vllm_gpu_memory_utilization": 0.9}
    if extra:
        pins[extra[0].lstrip("-").replace("-", "_")] = extra[1] == "true" if extra[1] in ("true", "false") \
            else int(extra[1])
    for name, value in got:  # every value named fits when pinned, with the other pins held
        v = float(value) if "." in value else (value == "True") if value in ("True", "False") else int(value)
        p = planner.plan(MODEL7, "A100-40GB", pin={**pins, name: v})
        assert p.fits and p.pin_value(name) == v
    # the error carries the closest plan, and it holds the other pins
    with pytest.raises(InfeasibleError) as info:
        planner.plan(MODEL7, "A100-40GB", pin=pins)
    closest = info.value.closest
    assert closest is not None and closest.fits
    for name, value in pins.items():
        if name != "vllm_gpu_memory_utilization":
            assert closest.pin_value(name) == value


def test_a_pinned_batch_over_the_card_names_the_batch_the_pins_imply():
    with pytest.raises(InfeasibleError) as info:
        planner.plan(MODEL7, "RTX-4090", weights="nf4", pin=dict(generation_batch_size=64,
                                                                gradient_accumulation_steps=1))
    msg = str(info.value)
    assert "per_device_train_batch_size 64 (generation_batch_size 64 / gradient_accumulation_steps 1" in msg
    for name, value in re.findall(r"(\w+) \S+ -> (\d+) fits", msg):
        pin = {**dict(generation_batch_size=64, gradient_accumulation_steps=1), name: int(value)}
        assert planner.plan(MODEL7, "RTX-4090", weights="nf4", pin=pin).fits


# -- waves and concurrency of the engine TRL builds -------------------------------------------------

def _check_waves(p: planner.Plan) -> None:
    c, t = p.config, p.topology
    B, S = c["per_device_train_batch_size"], c["gradient_accumulation_steps"]
    if p.runtime == "unsloth":
        e = p.runtime_details.estimate
        conc = min(e.max_num_seqs, int(e.kv_cache_tokens / (e.max_prompt_length + e.max_completion_length)))
        assert p.option.concurrency == conc
        assert p.waves == math.ceil(c["generation_batch_size"] / conc)
        return
    v = p.vllm
    if t.vllm_mode == "colocate":
        tp = c["vllm_tensor_parallel_size"]
        assert v.max_num_seqs == trl_max_num_seqs(B, S, tp)  # the engine TRL builds with this config
        per_engine = B * S * tp
        conc = min(v.max_num_seqs, int(v.max_concurrency))
        assert p.option.concurrency == conc * t.num_engines == engine_concurrency(v) * t.num_engines
    else:
        per_engine = c["generation_batch_size"] / t.server_data_parallel_size
        conc = min(v.max_num_seqs, int(v.max_concurrency))
    assert p.waves == math.ceil(per_engine / conc), (p.waves, per_engine, conc)


@pytest.mark.parametrize("model,gpu,kw", [
    (MODEL7, "RTX-4090", dict(weights="nf4", max_completion_length=4096)),
    (MODEL7, "RTX-4090", dict(weights="nf4")),
    (MODEL7, "A100-40GB", dict(max_completion_length=8192)),
    (SMALL, "L4", dict(max_completion_length=16384)),
    (SMALL, "H100-80GB", {}),
    ("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", dict(num_gpus=4)),
    ("meta-llama/Llama-3.1-8B-Instruct", "H100-80GB", dict(num_gpus=4, vllm_tensor_parallel_size=2)),
    ("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", dict(num_gpus=4)),
    (MODEL7, "H100-80GB", dict(num_gpus=2, layout="server")),
    (MODEL7, "H100-80GB", dict(pin=dict(per_device_train_batch_size=2, gradient_accumulation_steps=64))),
    (MODEL7, "T4", dict(runtime="unsloth")),
    (SMALL, "L4", dict(runtime="unsloth", max_completion_length=1536)),
])
def test_waves_are_the_configured_engines(model, gpu, kw):
    _check_waves(planner.plan(model, gpu, **kw))


# -- exit codes: a TP that cannot run is bad input; a fixed setup over a budget does not fit ------------

@pytest.mark.parametrize("argv", [["--num-gpus", "3", "--vllm-tensor-parallel-size", "2"],
                                  ["--num-gpus", "3", "--vllm-tensor-parallel-size", "2", "--layout", "colocate"],
                                  ["--num-gpus", "3", "--vllm-tensor-parallel-size", "3"],
                                  ["--num-gpus", "4", "--vllm-tensor-parallel-size", "3"]])
def test_a_tp_that_cannot_split_the_gpus_or_heads_is_bad_input(capsys, argv):
    assert main(["--model", MODEL7, "--gpu", "H100-80GB", *argv]) == 2
    err = _err_line(capsys)
    assert "--vllm-tensor-parallel-size" in err and ("divide" in err)


@pytest.mark.parametrize("kw", [dict(finetune="full", engine="zero3", optim="adamw_torch"),
                                dict(finetune="full", engine="zero3", optim="adamw_torch",
                                     per_device_train_batch_size=16, steps_per_generation=8),
                                dict(finetune="full", engine="zero2", optim="adamw_torch", layout="server",
                                     server_gpus=2, server_tensor_parallel_size=2),
                                dict(engine="ddp", per_device_train_batch_size=64, steps_per_generation=8,
                                     vllm_gpu_memory_utilization=0.7),
                                dict(engine="zero2", per_device_train_batch_size=2)])
def test_a_fixed_setup_fits_only_under_every_budget(kw):
    p = planner.estimate_layout("Qwen/Qwen2.5-32B-Instruct", "H100-80GB", 8, **kw)
    under = all(r.peak_bytes <= r.budget_bytes for r in p.roles.values())
    d = p.to_dict()
    assert [row["fits"] for row in d["layouts"]] == [row.fits for row in p.layouts] == [p.fits]
    assert d["fits"] == p.fits
    if not under:
        assert not p.fits and "over the" in p.layouts[0].why


def test_estimate_cli_says_the_layout_does_not_fit(capsys):
    code = main(["estimate", "--model", "Qwen/Qwen2.5-32B-Instruct", "--gpu", "H100-80GB", "--num-gpus", "8",
                 "--finetune", "full", "--engine", "zero3", "--optim", "adamw_torch", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 1 and d["fits"] is False and [row["fits"] for row in d["layouts"]] == [False]


def test_unsloth_infeasible_pins_suggest_values_that_were_solved():
    pin = dict(vllm_gpu_memory_utilization=0.95)
    with pytest.raises(InfeasibleError) as info:
        planner.plan(MODEL7, "T4", runtime="unsloth", pin=pin)
    msg = str(info.value)
    assert "nf4" not in msg  # the weights are 4-bit already: no "try nf4"
    got = re.findall(r"vllm_gpu_memory_utilization 0.95 -> (\S+) fits", msg)
    assert got and planner.plan(MODEL7, "T4", runtime="unsloth", vllm_gpu_memory_utilization=float(got[0])).fits
    assert info.value.closest is not None and info.value.closest.pin_value("vllm_gpu_memory_utilization") == \
        float(got[0])
