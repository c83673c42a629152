"""A TRL GRPO config read as `trl grpo --config` reads it (planner.search.trl_config): values converted as
TRL's parser converts them, the env: block, unknown and removed keys, PyYAML as a core dependency.
Malformed files (encodings, limits, aliases) are in tests/test_fuzz_inputs.py."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from config_files import run_cli as _run
from config_files import write_config as _write

from planner.errors import ConfigError
from planner.search import trl_config
from planner.search.trl_config import _KINDS, parse_grpo_config, read_grpo_config
from planner.specs import versions

ROOT = Path(__file__).resolve().parents[1]
SMALL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture(autouse=True)
def shipped_profiles_only(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(tmp_path / "no-profiles"))
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)




# -- values as TRL converts them ------------------------------------------------------------------------

CONVERTED = [  # (key, the file's string, what TRL's parser makes of it)
    ("use_peft", "false", False), ("use_peft", "FALSE", False), ("load_in_4bit", "n", False),
    ("load_in_4bit", "Yes", True), ("gradient_checkpointing", "0", False), ("vllm_enable_sleep_mode", "t", True),
    ("per_device_train_batch_size", "4", 4), ("lora_r", " 32 ", 32), ("max_completion_length", "none", None),
    ("num_generations", "NULL", None), ("generation_batch_size", "64", 64), ("vllm_gpu_memory_utilization", "0.4", 0.4),
    ("vllm_gpu_memory_utilization", "4e-1", 0.4), ("dtype", "bfloat16", "bfloat16"),
]
REFUSED = [  # (key, the file's string): TRL's parser exits with an error
    ("use_peft", "maybe"), ("load_in_4bit", "on"), ("gradient_checkpointing", "none"), ("lora_r", "4.0"),
    ("per_device_train_batch_size", "four"), ("max_completion_length", ""), ("vllm_gpu_memory_utilization", "half"),
]


@pytest.mark.parametrize("key, text, value", CONVERTED)
def test_a_string_value_is_converted_as_trl_converts_it(key, text, value, tmp_path):
    cfg = read_grpo_config(_write(tmp_path, f"{key}: {json.dumps(text)}\n"))
    expected = read_grpo_config(_write(tmp_path, f"{key}: {json.dumps(value)}\n", "typed.yaml"))
    assert (cfg.pins, cfg.options) == (expected.pins, expected.options)


@pytest.mark.parametrize("key, text", REFUSED)
def test_a_value_trl_refuses_is_one_error_naming_the_key_and_the_file(key, text, tmp_path, capsys):
    path = _write(tmp_path, f"model_name_or_path: {SMALL}\n{key}: {json.dumps(text)}\n")
    for command in (["--output", str(tmp_path / "o.yaml")], ["estimate"], ["check"]):
        code, out, err = _run(capsys, [*command, "--config", path, "--gpu", "L4"])
        assert code == 2 and out == ""
        assert err.startswith(f"plan: error: {path}: {key}: '{text}' is not ") and err.count("\n") == 1, err
    assert not (tmp_path / "o.yaml").exists()


@pytest.mark.parametrize("text, says", [
    ("123", "model_name_or_path: 123 (int) is not a model name or path: give a Hugging Face model id or a local "
            "folder (a folder named 123: quote it, model_name_or_path: \"123\")"),
    ("[a, b]", "model_name_or_path: ['a', 'b'] (list) is not a model name or path"),
    ("true", "model_name_or_path: True (bool) is not a model name or path"),
    ("''", "model_name_or_path is empty: give a Hugging Face model id or a local folder"),
])
def test_a_model_name_that_is_not_one_says_so_not_that_model_is_missing(text, says, tmp_path, capsys):
    path = _write(tmp_path, f"model_name_or_path: {text}\n")
    for command in (["--output", str(tmp_path / "o.yaml")], ["estimate"], ["check"]):
        code, out, err = _run(capsys, [*command, "--config", path, "--gpu", "L4"])
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith(f"plan: error: {path}: {says}") and "required" not in err
    assert not (tmp_path / "o.yaml").exists()
    # absent or null: the model is missing, and --model gives it
    path = _write(tmp_path, "model_name_or_path: null\n", "null.yaml")
    code, _, err = _run(capsys, ["--config", path, "--gpu", "L4"])
    assert code == 2 and err == "plan: error: --model is required (or model_name_or_path in the --config file)\n"
    code, _, err = _run(capsys, ["--model", " ", "--gpu", "L4"])
    assert code == 2 and err.startswith("plan: error: --model ' ' is not a model name or path")
    quoted = _write(tmp_path, f"model_name_or_path: {json.dumps(SMALL)}\n", "quoted.yaml")
    assert read_grpo_config(quoted).model == SMALL


def test_every_problem_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_grpo_config({"use_peft": "maybe", "lora_r": "x", 3: 1, "env": [1]}, "f.yaml")
    lines = str(e.value).splitlines()
    assert len(lines) == 4 and all(line.startswith("f.yaml: ") for line in lines)


def test_quoted_false_plans_what_unquoted_false_plans(tmp_path, capsys):
    # the bug: "false" (a non-empty string) was taken as true: LoRA, nf4 weights, checkpointing on
    quoted = _write(tmp_path, f'model_name_or_path: {SMALL}\nuse_peft: "false"\nload_in_4bit: "false"\n'
                              f'gradient_checkpointing: "false"\n')
    plain = _write(tmp_path, f"model_name_or_path: {SMALL}\nuse_peft: false\nload_in_4bit: false\n"
                             f"gradient_checkpointing: false\n", "plain.yaml")
    plans = []
    for path in (quoted, plain):
        code, out, _ = _run(capsys, ["estimate", "--config", path, "--gpu", "H100-80GB", "--json"])
        assert code in (0, 1)
        plans.append(json.loads(out)["setup"])
    assert plans[0] == plans[1]
    assert (plans[0]["finetune"], plans[0]["weights"], plans[0]["gradient_checkpointing"]) == ("full", "bf16", False)


def _trl_parser():
    pytest.importorskip("trl")
    from trl.scripts.grpo import make_parser

    return make_parser()


def _trl_reads(key: str, text: str):
    """What TRL's grpo parser makes of ``key: text`` in a config file: its own set_defaults_with_config,
    then argparse (the dataclasses' __post_init__ checks left out)."""
    parser = _trl_parser()
    assert parser.set_defaults_with_config(**{key: text}) == []
    return getattr(parser.parse_known_args([])[0], key)


def test_the_conversion_kinds_are_trls_own():
    # each modelled key's argparse type in TRL's own grpo parser (HfArgumentParser._parse_dataclass_field)
    parser = _trl_parser()
    from trl.scripts._hf_argparser import string_to_bool

    for key, kind in _KINDS.items():
        action = parser._option_string_actions.get(f"--{key}")
        if action is None:  # the planner's own names, and keys TRL no longer has
            assert key in ("max_prompt_length", "completions_per_step", "use_liger_loss")
            continue
        t = action.type
        expected = {"bool": string_to_bool, "int": int, "float": float}.get(kind)
        if kind == "int?":
            assert t("none") is None and t("7") == 7, key
        else:
            assert t is expected, key


@pytest.mark.parametrize("key, text, value", [c for c in CONVERTED if c[0] != "dtype"])
def test_trl_itself_agrees(key, text, value):
    assert _trl_reads(key, text) == value
    assert trl_config.trl_value(key, text) == value


@pytest.mark.parametrize("key, text", REFUSED)
def test_trl_itself_refuses(key, text, capsys):
    with pytest.raises(SystemExit):
        _trl_reads(key, text)
    with pytest.raises(ValueError):
        trl_config.trl_value(key, text)


# -- env: -------------------------------------------------------------------------------------------------

ENV_RUN = (f"model_name_or_path: {SMALL}\nuse_vllm: true\nper_device_train_batch_size: 4\nnum_generations: 4\n"
           f"max_completion_length: 1024\nlearning_rate: 1.0e-6\n")


@pytest.mark.parametrize("variable", ["PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"])
def test_the_env_block_plans_as_the_environment_variable_does(variable, tmp_path, capsys, monkeypatch):
    with_block = _write(tmp_path, ENV_RUN + f"env:\n  {variable}: expandable_segments:True\n")
    without = _write(tmp_path, ENV_RUN, "plain.yaml")
    out = tmp_path / "out.yaml"
    code, text, err = _run(capsys, ["--config", with_block, "--gpu", "L4", "--json", "--output", str(out)])
    assert code == 0, err
    from_file = json.loads(text)
    monkeypatch.setenv(variable, "expandable_segments:True")
    code, text, _ = _run(capsys, ["--config", without, "--gpu", "L4", "--json"])
    from_variable = json.loads(text)
    assert from_file["config"].pop("env") == {variable: "expandable_segments:True"}
    for d in (from_file, from_variable):  # where the setting came from: the file, or the environment
        assert d["assumptions"].pop("expandable_segments")["value"] is True
    assert from_file.pop("passthrough") == ["learning_rate", "env"] and from_variable.pop("passthrough") == [
        "learning_rate"]
    assert from_file.pop("written") == {"out.yaml": str(out)}
    steps = from_file.pop("next_steps")  # the file and the output written are named; the rest is the same plan
    assert steps["command"].startswith(f"trl grpo --config {out} ") and not steps["write_first"]
    assert steps["plan"].startswith(f"plan --config {with_block} ") and steps["plan"].endswith(f"--output {out}")
    assert from_variable.pop("next_steps")["plan"].startswith(f"plan --config {without} ")
    assert from_file == from_variable
    monkeypatch.delenv(variable)
    _, text, _ = _run(capsys, ["--config", without, "--gpu", "L4", "--json"])
    assert json.loads(text) != from_variable  # the allocator setting moves this plan
    # the block is kept in the grpo.yaml written, as TRL reads it
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(out.read_text())["env"] == {variable: "expandable_segments:True"}


def test_the_env_block_in_an_estimate_and_a_flag_wins(tmp_path, capsys):
    path = _write(tmp_path, ENV_RUN + "env:\n  PYTORCH_CUDA_ALLOC_CONF: expandable_segments:True\n")
    base = ["estimate", "--config", path, "--gpu", "L4", "--json"]
    peaks = {}
    for extra in ([], ["--expandable-segments"], ["--no-expandable-segments"]):
        code, out, err = _run(capsys, base + extra)
        peaks[tuple(extra)] = json.loads(out)["peak_bytes"]
    assert peaks[()] == peaks[("--expandable-segments",)] != peaks[("--no-expandable-segments",)]


def test_an_env_block_without_the_allocator_leaves_it_to_the_environment(tmp_path):
    cfg = read_grpo_config(_write(tmp_path, "env:\n  WANDB_PROJECT: grpo\n  NCCL_DEBUG: 1\n"))
    assert "expandable_segments" not in cfg.options
    assert cfg.env == {"WANDB_PROJECT": "grpo", "NCCL_DEBUG": "1"}  # str(value), as TRL exports it
    assert cfg.passthrough["env"] == {"WANDB_PROJECT": "grpo", "NCCL_DEBUG": 1}  # written as the file has it
    off = read_grpo_config(_write(tmp_path, "env:\n  PYTORCH_CUDA_ALLOC_CONF: max_split_size_mb:128\n", "b.yaml"))
    assert off.options["expandable_segments"] is False


@pytest.mark.parametrize("block, what", [("env: [A, B]", "list"), ("env: null", "NoneType"), ("env: x", "str")])
def test_an_env_that_is_not_a_mapping_is_trls_error(block, what, tmp_path, capsys):
    path = _write(tmp_path, f"model_name_or_path: {SMALL}\n{block}\n")
    code, _, err = _run(capsys, ["--config", path, "--gpu", "L4"])
    assert code == 2
    assert err == (f"plan: error: {path}: env: must be a mapping of environment variables (TRL: \"`env` field "
                   f"should be a dict in the YAML file\"), got {what}\n")


# -- unknown and removed keys -----------------------------------------------------------------------------

MISSPELT = f"model_name_or_path: {SMALL}\nper_device_train_batchsize: 4\nlearning_rate: 1.0e-6\n"


@pytest.fixture(params=["installed", "table"])
def key_source(request, monkeypatch):
    """The keys read from the installed TRL (when there is one) and from the shipped table."""
    if request.param == "table":
        monkeypatch.setattr(trl_config, "_installed_trl", lambda: None)
    elif trl_config.installed_script_keys() is None or not trl_config._installed_trl():
        pytest.skip("TRL is not installed")
    return request.param


def test_plan_warns_of_an_unknown_key_and_leaves_it_out(key_source, tmp_path, capsys):
    path = _write(tmp_path, MISSPELT)
    out = tmp_path / "out.yaml"
    code, _, err = _run(capsys, ["--config", path, "--gpu", "L4", "--output", str(out)])
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("plan: warning: ")]
    assert len(warnings) == 1
    assert re.fullmatch(rf"plan: warning: {re.escape(path)}: unknown key 'per_device_train_batchsize', did you "
                        r"mean 'per_device_train_batch_size'\? TRL 1\.\d+\.\d+'s `trl grpo --config` does not "
                        r"accept it; left out of the written config", warnings[0])
    written = out.read_text()
    assert "per_device_train_batchsize" not in written and "learning_rate: 1.0e-06" in written


def test_estimate_warns_and_check_refuses_an_unknown_key(key_source, tmp_path, capsys):
    path = _write(tmp_path, MISSPELT)
    code, _, err = _run(capsys, ["estimate", "--config", path, "--gpu", "L4"])
    assert code == 0 and err.count("plan: warning: ") == 1 and "'per_device_train_batchsize'" in err
    out = tmp_path / "out.yaml"
    code, stdout, err = _run(capsys, ["check", "--config", path, "--gpu", "L4", "--output", str(out)])
    assert code == 2 and stdout == "" and not out.exists()
    assert err.startswith(f"plan: error: {path}: unknown key 'per_device_train_batchsize', did you mean "
                          f"'per_device_train_batch_size'?") and err.count("\n") == 1
    assert err.endswith("(plan check refuses unknown keys)\n")


def test_every_unknown_key_is_named_and_the_planners_own_spellings_point_to_trls(tmp_path):
    cfg = read_grpo_config(_write(tmp_path, "lora_rank: 8\ntorch_dtype: float16\nzzz_qqq: 1\nbeta: 0.0\n"))
    assert cfg.pins == {"lora_r": 8} and cfg.options == {"weights": "fp16"}
    assert cfg.passthrough == {"beta": 0.0}
    lines = cfg.warnings
    assert len(lines) == 3
    assert "unknown key 'lora_rank', did you mean 'lora_r'?" in lines[0] and lines[0].endswith("read as lora_r, not "
                                                                                                 "written to the output")
    assert "unknown key 'torch_dtype', did you mean 'dtype'?" in lines[1]
    assert "unknown key 'zzz_qqq':" in lines[2] and lines[2].endswith("left out of the written config")
    with pytest.raises(ConfigError) as e:
        read_grpo_config(_write(tmp_path, "lora_rank: 8\nzzz_qqq: 1\n", "b.yaml"), unknown="error")
    assert len(str(e.value).splitlines()) == 2


def test_accelerate_launch_keys_are_accepted(tmp_path):
    # trl grpo hands the keys its parser leaves to `accelerate launch` (trl/cli/commands/training.py)
    cfg = read_grpo_config(_write(tmp_path, "num_processes: 2\naccelerate_config: zero2\nmixed_precision: bf16\n"),
                           unknown="error")
    assert cfg.warnings == () and set(cfg.passthrough) == {"num_processes", "accelerate_config", "mixed_precision"}


def test_a_removed_key_is_named_as_removed_in_the_release_planned_for(key_source, tmp_path, capsys):
    path = _write(tmp_path, f"model_name_or_path: {SMALL}\nmax_prompt_length: 300\n")
    for command in ([], ["check"], ["estimate"]):  # a warning everywhere: the planner knows what it meant
        code, _, err = _run(capsys, [*command, "--config", path, "--gpu", "L4", "--trl-version", "1.16.0"])
        assert code == 0, err
        removed = (f"plan: warning: {path}: max_prompt_length was removed from TRL in 0.28.0 (planning for TRL "
                   f"1.16.0): read as the planner's max_prompt_length, not written to the output\n")
        # a file without use_vllm: true: `plan check` checks the planner's plan for it, and says so
        no_vllm = (f"plan: warning: --config {path} does not set use_vllm: true (TRL would generate with "
                   f"transformers, which plan check does not model): checking the planner's plan for it instead\n")
        assert err == (no_vllm + removed if command == ["check"] else removed)
    cfg = read_grpo_config(path, trl_version="1.16.0")
    assert cfg.pins["max_prompt_length"] == 300 and "max_prompt_length" not in cfg.passthrough
    assert read_grpo_config(path, trl_version="0.27.0", unknown="error").warnings == ()  # still a field there


def test_the_shipped_table_is_the_installed_trls():
    pytest.importorskip("trl")
    import accelerate
    import transformers
    import trl
    from accelerate.commands.launch import launch_command_parser

    if (trl.__version__, transformers.__version__) != (versions.TRL_SCRIPT_KEYS_RELEASE,
                                                       versions.TRL_SCRIPT_KEYS_TRANSFORMERS):
        pytest.skip(f"the table is TRL {versions.TRL_SCRIPT_KEYS_RELEASE} with transformers "
                    f"{versions.TRL_SCRIPT_KEYS_TRANSFORMERS}")
    fields = {f.name for dc in _trl_parser().dataclass_types for f in dataclasses.fields(dc) if f.init}
    assert versions.TRL_SCRIPT_KEYS == fields
    if accelerate.__version__ == versions.ACCELERATE_LAUNCH_KEYS_RELEASE:
        dests = {a.dest for a in launch_command_parser()._actions if a.option_strings}
        assert versions.ACCELERATE_LAUNCH_KEYS == (dests - {"help", "env"}) | {"accelerate_config"}


def test_the_installed_fields_read_from_source_are_the_dataclasses_fields():
    parser = _trl_parser()
    fields = {f.name for dc in parser.dataclass_types for f in dataclasses.fields(dc) if f.init}
    assert trl_config.installed_script_keys() == fields


def test_reading_a_config_imports_neither_torch_nor_trl(tmp_path):
    path = _write(tmp_path, MISSPELT)
    code = (f"import sys; from planner.search.trl_config import read_grpo_config; "
            f"c = read_grpo_config({path!r}); assert len(c.warnings) == 1, c.warnings; "
            f"bad = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- PyYAML, a core dependency ---------------------------------------------------------------------------------

def test_pyyaml_is_a_core_dependency():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"pyyaml\s*>=\s*6", d, re.I) for d in project["dependencies"])
    assert project["optional-dependencies"].get("yaml", []) == []


def test_install_hints_name_the_distribution():
    # `planner` on PyPI is an unrelated project: every hint names grpo-vram-planner
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in [*(ROOT / "planner").rglob("*.py"), ROOT / "README.md"]
                 for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"['\"`]planner\[", line)]
    assert offenders == []
    from planner.report import outputs

    assert "grpo-vram-planner" in Path(outputs.__file__).read_text()
