"""One vocabulary for the Python API, the CLI and --config files: typed keywords (no catch-all),
TRL's names, a setting recorded the same way whichever way it came in, and the same one-line
refusals from the CLI and from Python."""

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args

import pytest

import planner
from planner.cli import main
from planner.errors import InvalidSetupError
from planner.report.hints import to_python

ROOT = Path(__file__).resolve().parents[1]
SMALL = "Qwen/Qwen2.5-0.5B-Instruct"


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _cli_error(capsys, argv) -> list[str]:
    assert main(argv) == 2
    return [line.removeprefix("plan: error: ") for line in capsys.readouterr().err.strip().splitlines()]


# -- typed signatures -----------------------------------------------------------------------------

@pytest.mark.parametrize("fn", ["plan", "estimate", "estimate_layout", "preflight"])
def test_every_option_is_a_typed_keyword(fn):
    sig = inspect.signature(getattr(planner, fn))
    kinds = {p.kind for p in sig.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())


def test_the_literal_types_are_the_choices_the_request_checks():
    from planner.memory.logprob_head import LOGPROB_HEADS
    from planner.memory.optimizer import OPTIMIZERS
    from planner.memory.trainer import COMPLETION_LENGTHS, FINETUNE_MODES
    from planner.memory.weights import WEIGHT_FORMATS
    from planner.search import request as r
    from planner.specs.topology import LAYOUTS

    assert get_args(r.Weights) == WEIGHT_FORMATS and get_args(r.Finetune) == FINETUNE_MODES
    assert get_args(r.Optim) == OPTIMIZERS and get_args(r.LogprobHead) == LOGPROB_HEADS
    assert get_args(r.SleepMode) == r.SLEEP_MODES and get_args(r.KvCacheDtype) == r.KV_CACHE_DTYPES
    assert get_args(r.Layout) == LAYOUTS and get_args(r.Engine) == r.ENGINES
    assert get_args(r.CompletionLengths) == COMPLETION_LENGTHS


def test_plan_keeps_todays_defaults():
    from planner.search.request import Targets, TopologyOptions, TrainerOptions

    params = inspect.signature(planner.plan).parameters
    for section in (TrainerOptions(), Targets(), TopologyOptions()):
        for name, value in vars(section).items():
            # TRL settings (and their older names) default to None: not given, so not pinned
            if name in params and name not in ("num_generations", "max_completion_length", "optim",
                                               "lora_target_modules", "lora_rank", "prompt_length", "weights"):
                assert params[name].default == value, name
    # weights: None is the runtime's default, the request's bf16 for TRL (Unsloth's is 4-bit)
    assert params["weights"].default is None
    assert planner.plan_request("Qwen/Qwen2.5-0.5B-Instruct", "L4").trainer.weights == "bf16"


def test_py_typed_ships_in_the_wheel():
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in cfg["package-data"]["planner"]
    assert (ROOT / "planner" / "py.typed").is_file()


def test_a_typed_caller_is_checked(tmp_path):
    pytest.importorskip("mypy")
    snippet = tmp_path / "caller.py"
    snippet.write_text(textwrap.dedent("""\
        import planner

        ok: planner.Plan = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", lora_r=32, weights="nf4")
        bad = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", per_device_train_batch_size="8")
        worse = planner.estimate("Qwen/Qwen2.5-0.5B-Instruct", "L4", weights="bf17")
        """))
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                          "--cache-dir", str(tmp_path / "cache"), str(snippet)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["4", "5"], out.stdout


# -- one setting, one record ----------------------------------------------------------------------

def test_lora_rank_is_pinned_as_lora_r_from_the_cli_and_from_python(capsys):
    cli = _json(capsys, ["--model", SMALL, "--gpu", "L4", "--lora-rank", "32", "--json"])
    trl_spelling = _json(capsys, ["--model", SMALL, "--gpu", "L4", "--lora_r", "32", "--json"])
    by_alias = planner.plan(SMALL, "L4", lora_rank=32).to_dict()
    by_name = planner.plan(SMALL, "L4", lora_r=32).to_dict()
    in_pin = planner.plan(SMALL, "L4", pin={"lora_r": 32}).to_dict()
    assert cli["pinned"] == trl_spelling["pinned"] == by_alias["pinned"] == by_name["pinned"] == in_pin["pinned"] \
        == ["lora_r"]
    assert cli["assumptions"]["lora_r"] == by_alias["assumptions"]["lora_r"] == {"value": 32, "source": "pinned"}
    assert cli["config"] == by_alias["config"]


def test_other_trl_settings_are_recorded_alike(capsys):
    argv = ["--model", SMALL, "--gpu", "L4", "--json", "--optim", "adamw_torch", "--num-generations", "4",
            "--prompt-length", "128"]
    cli = _json(capsys, argv)
    py = planner.plan(SMALL, "L4", optim="adamw_torch", num_generations=4, prompt_length=128).to_dict()
    assert cli["pinned"] == py["pinned"] == ["num_generations", "max_prompt_length", "optim"]
    assert cli["config"] == py["config"]
    assert {k: cli["assumptions"][k] for k in cli["pinned"]} == {k: py["assumptions"][k] for k in py["pinned"]}


def test_a_setting_given_twice_is_one_line():
    with pytest.raises(InvalidSetupError) as info:
        planner.plan(SMALL, "L4", lora_rank=8, lora_r=32)
    assert str(info.value) == "lora_rank=8 and lora_r=32 name one setting (lora_r); give one"
    with pytest.raises(InvalidSetupError) as info:
        planner.plan(SMALL, "L4", per_device_train_batch_size=4, pin={"per_device_train_batch_size": 8})
    assert str(info.value) == "per_device_train_batch_size is given twice: 4 as a keyword and 8 in pin"
    with pytest.raises(InvalidSetupError) as info:
        planner.estimate(SMALL, "L4", per_device_train_batch_size=8, batch_size=4)
    assert str(info.value).splitlines() == ["--batch-size 4 and --per-device-train-batch-size 8 name one setting "
                                            "(per_device_train_batch_size); give one"]


# -- estimate speaks TRL ----------------------------------------------------------------------------

def test_estimate_takes_trls_names_and_they_are_the_old_ones():
    new = planner.estimate(SMALL, "L4", per_device_train_batch_size=8, max_prompt_length=128,
                           max_completion_length=1024, lora_r=32, vllm_gpu_memory_utilization=0.4,
                           vllm_enable_sleep_mode=True, vllm_max_model_length=2048, gradient_accumulation_steps=2,
                           steps_per_generation=2, num_generations=8)
    old = planner.estimate(SMALL, "L4", batch_size=8, prompt_length=128, completion_length=1024, lora_rank=32,
                           vllm_gpu_memory_utilization=0.4, sleep_mode=True, vllm_max_model_len=2048,
                           gradient_accumulation_steps=2, steps_per_generation=2)
    assert new.to_dict() == old.to_dict()
    assert new.setup.batch_size == 8 and new.setup.lora_rank == 32 and new.vllm.max_model_len == 2048


def test_estimate_checks_num_generations():
    with pytest.raises(InvalidSetupError, match="^--num-generations must be at least 2"):
        planner.estimate(SMALL, "L4", num_generations=1)


def test_the_cli_estimate_is_the_python_estimate(capsys):
    cli = _json(capsys, ["estimate", "--model", SMALL, "--gpu", "L4", "--per_device_train_batch_size", "8",
                         "--max-completion-length", "1024", "--lora-r", "32", "--json"])
    py = planner.estimate(SMALL, "L4", per_device_train_batch_size=8, max_completion_length=1024, lora_r=32)
    assert cli["trainer"] == py.to_dict()["trainer"]


# -- rollout turns and layouts: the same answer, or the same refusal, everywhere --------------------

def test_rollout_turns_are_modelled_on_several_gpus_everywhere(capsys):
    cli = _json(capsys, ["estimate", "--model", SMALL, "--gpu", "L4", "--num-gpus", "2", "--rollout-turns", "3",
                         "--batch-size", "4", "--json"])
    py = planner.estimate_layout(SMALL, "L4", 2, rollout_turns=3, per_device_train_batch_size=4).to_dict()
    one_turn = planner.estimate_layout(SMALL, "L4", 2, per_device_train_batch_size=4).to_dict()
    assert cli["roles"] == py["roles"] and cli["roles"] != one_turn["roles"]
    plan = planner.plan(SMALL, "L4", num_gpus=2, rollout_turns=3)
    assert plan.setup.prompt_length == 3 * plan.turn_prompt_length


def test_rollout_turns_refusal_is_one_line_from_every_entry_point(capsys):
    base = ["--model", SMALL, "--gpu", "L4", "--runtime", "unsloth", "--rollout-turns", "2"]
    from_plan = _cli_error(capsys, base)
    from_estimate = _cli_error(capsys, ["estimate", *base])
    with pytest.raises(InvalidSetupError) as info:
        planner.plan(SMALL, "L4", runtime="unsloth", rollout_turns=2)
    assert len(from_plan) == 1 and from_plan == from_estimate
    assert str(info.value) == to_python(from_plan[0])
    assert str(info.value).startswith("rollout_turns is modelled with TRL only")


@pytest.mark.parametrize("flags,keywords", [
    (["--vllm-enforce-eager"], dict(vllm_enforce_eager=True)),
    (["--vllm-max-model-length", "4096"], dict(vllm_max_model_length=4096)),
    (["--completion-lengths", "fixed"], dict(completion_lengths="fixed")),
    (["--gradient-accumulation-steps", "4", "--steps-per-generation", "2"],
     dict(gradient_accumulation_steps=4, steps_per_generation=2)),
])
def test_what_a_layout_cannot_honour_is_refused_alike(capsys, flags, keywords):
    cli = _cli_error(capsys, ["estimate", "--model", SMALL, "--gpu", "L4", "--num-gpus", "2", *flags])
    with pytest.raises(InvalidSetupError) as info:
        planner.estimate_layout(SMALL, "L4", 2, **keywords)
    assert len(cli) == 1 and str(info.value) == to_python(cli[0])


def test_steps_per_generation_follows_the_accumulation_as_in_trl(capsys):
    # TRL's GRPOConfig: steps_per_generation unset = gradient_accumulation_steps (one generation per optimizer
    # step), so vLLM is sized for batch x 4 sequences; the CLI, planner.estimate and estimate_layout alike
    flags = ["estimate", "--model", SMALL, "--gpu", "L4", "--gradient-accumulation-steps", "4", "--json"]
    assert main([*flags, "--vllm-gpu-memory-utilization", "0.3"]) == 0
    assert json.loads(capsys.readouterr().out)["vllm"]["max_num_seqs"] == 4
    assert planner.estimate(SMALL, "L4", gradient_accumulation_steps=4, vllm_gpu_memory_utilization=0.3
                            ).vllm.max_num_seqs == 4
    assert main([*flags, "--num-gpus", "2"]) == 0
    cli = json.loads(capsys.readouterr().out)["config"]
    api = planner.estimate_layout(SMALL, "L4", 2, gradient_accumulation_steps=4).config
    assert cli["generation_batch_size"] == api["generation_batch_size"] == 1 * 4 * 2
    assert cli["gradient_accumulation_steps"] == api["gradient_accumulation_steps"] == 4


@pytest.mark.parametrize("kwargs", [{}, {"num_gpus": 2}, {"runtime": "unsloth"}])
def test_the_plan_json_names_each_setting_once(kwargs):
    # config carries the GRPOConfig's names; the vllm block does not repeat a setting under vLLM's name
    from planner.search.results import TRL_NAME_OF_ENGINE_ARG

    gpu = "T4" if kwargs.get("runtime") else "L4"
    d = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", gpu, **kwargs).to_dict()
    repeated = [k for k, trl_name in TRL_NAME_OF_ENGINE_ARG.items() if k in d["vllm"] and trl_name in d["config"]]
    assert repeated == []
    if not kwargs:
        assert d["config"]["vllm_max_model_length"] and "max_model_len" not in d["vllm"]
    if kwargs.get("runtime"):  # Unsloth: vLLM's utilisation is what it receives (config has none)
        assert "vllm_gpu_memory_utilization" not in d["config"] and d["vllm"]["gpu_memory_utilization"] > 0


def test_a_completed_request_keeps_what_was_given_and_holds_what_it_resolved_to():
    import typing

    from planner.api import complete_request
    from planner.search.request import PlanRequest
    from planner.specs.gpu import GpuSpec
    from planner.specs.model import ModelSpec

    req = planner.plan_request("Qwen/Qwen2.5-0.5B-Instruct", "L4")
    done = complete_request(req)
    assert (done.model, done.gpu, done.calibration) == ("Qwen/Qwen2.5-0.5B-Instruct", "L4", "auto")
    assert isinstance(done.resolved.model, ModelSpec) and done.resolved.model.model_id == "Qwen/Qwen2.5-0.5B-Instruct"
    assert isinstance(done.resolved.card, GpuSpec) and done.resolved.card.name == "L4"
    assert done.resolved.calibration is None  # no shipped profile for an L4
    assert done.with_options(num_gpus=2).resolved is None and done.with_options(margin=0.1).resolved is done.resolved
    hints = typing.get_type_hints(PlanRequest)
    assert typing.Any not in (hints["model"], hints["gpu"], hints["calibration"])
