"""`plan estimate --config` and `plan check --config`: a TRL GRPO config file read as `plan --config`
reads it (planner.search.trl_config); flags win over the file; a bad file is one line and exit code 2."""

import json

import pytest
from config_files import run_cli as _run
from config_files import write_config as _write

from planner.specs.versions import trl_facts

MODEL = "Qwen/Qwen2.5-7B-Instruct"
RUN = """\
    model_name_or_path: Qwen/Qwen2.5-7B-Instruct
    use_peft: true
    lora_r: 32
    dtype: bfloat16
    optim: adamw_8bit
    use_vllm: true
    vllm_mode: colocate
    per_device_train_batch_size: 8
    gradient_accumulation_steps: 4
    num_generations: 8
    max_prompt_length: 512
    max_completion_length: 1536
    vllm_gpu_memory_utilization: 0.4
    vllm_enable_sleep_mode: true
    learning_rate: 1.0e-6
    beta: 0.04
    reward_funcs: [accuracy_reward]
    """
# the same run as flags (steps_per_generation = gradient_accumulation_steps, TRL's default)
FLAGS = ["--lora-rank", "32", "--weights", "bf16", "--optim", "adamw_8bit", "--batch-size", "8",
         "--gradient-accumulation-steps", "4", "--steps-per-generation", "4", "--num-generations", "8",
         "--prompt-length", "512", "--completion-length", "1536", "--vllm-gpu-memory-utilization", "0.4",
         "--sleep-mode"]


@pytest.fixture(autouse=True)
def shipped_profiles_only(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(tmp_path / "no-profiles"))




def _json(capsys, argv):
    code, out, err = _run(capsys, argv)
    assert code == 0, err
    return json.loads(out)


# -- plan estimate --config ---------------------------------------------------------------------

def test_estimate_reads_the_run_a_trl_config_describes(tmp_path, capsys):
    cfg = _write(tmp_path, RUN)
    from_file = _json(capsys, ["estimate", "--config", cfg, "--gpu", "H100-80GB", "--json"])
    from_flags = _json(capsys, ["estimate", "--model", MODEL, "--gpu", "H100-80GB", *FLAGS, "--json"])
    assert from_file == from_flags
    s = from_file["setup"]
    assert (s["batch_size"], s["prompt_length"], s["completion_length"], s["lora_rank"],
            s["gradient_accumulation_steps"]) == (8, 512, 1536, 32, 4)
    assert from_file["phases"]["sleep_mode"] is True and from_file["vllm"]["max_num_seqs"] == 8 * 4
    # every memory-deciding key is in the file: no warning about defaults
    assert not [w for w in from_file["warnings"] if "--config" in w]


def test_estimate_flags_win_over_the_file(tmp_path, capsys):
    cfg = _write(tmp_path, RUN)
    d = _json(capsys, ["estimate", "--config", cfg, "--gpu", "H100-80GB", "--batch-size", "2",
                       "--lora-r", "16", "--completion-length", "512", "--json"])
    s = d["setup"]
    assert (s["batch_size"], s["lora_rank"], s["completion_length"], s["prompt_length"]) == (2, 16, 512, 512)
    # steps_per_generation still follows the file's gradient_accumulation_steps: 2 x 4 sequences to vLLM
    assert d["vllm"]["max_num_seqs"] == 2 * 4


def test_estimate_model_flag_wins_over_model_name_or_path(tmp_path, capsys):
    cfg = _write(tmp_path, RUN)
    d = _json(capsys, ["estimate", "--config", cfg, "--model", "Qwen/Qwen2.5-3B-Instruct", "--gpu", "L4", "--json"])
    assert d["model"]["id"] == "Qwen/Qwen2.5-3B-Instruct"


def test_estimate_generation_batch_size_sets_steps_per_generation(tmp_path, capsys):
    cfg = _write(tmp_path, """\
        per_device_train_batch_size: 4
        generation_batch_size: 24
        use_vllm: true
        vllm_mode: colocate
        vllm_gpu_memory_utilization: 0.3
        """)
    d = _json(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB", "--json"])
    assert d["vllm"]["max_num_seqs"] == 24  # TRL: steps_per_generation = 24 / (4 x 1 GPU) = 6


def test_estimate_runs_vllm_as_trl_does(tmp_path, capsys):
    # use_vllm: true without a utilisation: colocated (1.16's default mode) at the release's default
    cfg = _write(tmp_path, "use_vllm: true\nper_device_train_batch_size: 4\nnum_generations: 4\n")
    d = _json(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB", "--trl-version",
                       "1.16.0", "--json"])
    assert d["vllm"]["gpu_memory_utilization"] == trl_facts("1.16.0").vllm_gpu_memory_utilization_default == 0.3
    # without use_vllm: true TRL starts no engine, whatever utilisation the file names; the output says so
    cfg = _write(tmp_path, "vllm_gpu_memory_utilization: 0.5\nper_device_train_batch_size: 4\nnum_generations: 4\n",
                 "no_vllm.yaml")
    d = _json(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB", "--json"])
    # ... and generates with transformers' generate in the trainer (use_vllm=False): that phase, no vLLM block
    assert d.get("vllm") is None and d["phases"]["generation_backend"] == "transformers"
    assert [k for k in d["phases"]["generation"]["components"] if k.startswith("vllm.")] == []
    assert d["phases"]["generation"]["components"]["generate.kv_cache"] > 0
    assert f"--config {cfg} does not set use_vllm: true, so TRL starts no vLLM engine and its " \
           f"vllm_gpu_memory_utilization is not used (--vllm-gpu-memory-utilization adds one)" in d["warnings"]
    # a flag adds it back
    d = _json(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB",
                       "--vllm-gpu-memory-utilization", "0.4", "--json"])
    assert d["vllm"]["gpu_memory_utilization"] == 0.4
    # vllm_mode: server puts vLLM on GPUs of its own: a layout, which one GPU cannot hold
    cfg = _write(tmp_path, "use_vllm: true\nvllm_mode: server\n", "server.yaml")
    code, _, err = _run(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB"])
    # (the line speaks Python: plan estimate's layouts go through planner.estimate_layout, as before)
    assert code == 2 and err == ("plan: error: layout='server' needs at least 2 GPUs (one serves, one trains); use "
                                 "num_gpus=2 or more\n")
    d = _json(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB", "--num-gpus", "2",
                       "--batch-size", "8", "--json"])
    assert d["topology"]["vllm_mode"] == "server"


def test_estimate_names_the_defaults_that_are_not_trls(tmp_path, capsys):
    cfg = _write(tmp_path, """\
        per_device_train_batch_size: 4
        num_generations: 4
        learning_rate: 1.0e-6
        """)
    d = _json(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB", "--json"])
    notes = [w for w in d["warnings"] if w.startswith("--config")]
    assert notes == [f"--config {cfg} sets no use_peft, dtype, optim: estimated with LoRA, bf16, adamw_8bit "
                     f"(plan estimate's defaults); for TRL's own: --finetune full --weights trl-default "
                     f"--optim trl-default"]
    # a flag counts as setting it
    d = _json(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "H100-80GB", "--finetune", "lora",
                       "--weights", "bf16", "--json"])
    assert [w for w in d["warnings"] if w.startswith("--config")] == [
        f"--config {cfg} sets no optim: estimated with adamw_8bit (plan estimate's defaults); for TRL's own: "
        f"--optim trl-default"]


def test_estimate_with_several_gpus_reads_the_file(tmp_path, capsys):
    cfg = _write(tmp_path, RUN)
    d = _json(capsys, ["estimate", "--config", cfg, "--gpu", "H100-80GB", "--num-gpus", "2", "--json"])
    c = d["config"]
    assert (c["per_device_train_batch_size"], c["gradient_accumulation_steps"], c["max_completion_length"],
            c["vllm_gpu_memory_utilization"], c["vllm_enable_sleep_mode"]) == (8, 4, 1536, 0.4, True)
    assert c["generation_batch_size"] == 8 * 4 * 2
    # the file's lora_r 32 holds twice the adapter parameters of a flag's 16
    r16 = _json(capsys, ["estimate", "--config", cfg, "--gpu", "H100-80GB", "--num-gpus", "2", "--lora-r", "16",
                         "--json"])
    assert d["trainer"]["trainable_params"] == 2 * r16["trainer"]["trainable_params"]


BAD_FILES = [
    ("- a\n- b\n", "{path}: a TRL config must be a YAML mapping of GRPOConfig keys, got list"),
    ("per_device_train_batch_size: [8\n", "--config {path} is not valid YAML: while parsing a flow sequence: expected "
     "',' or ']', but got '<stream end>' (line 2, column 1)"),
    ("per_device_train_batch_size: eight\n", "{path}: per_device_train_batch_size: 'eight' is not an integer (TRL "
     "converts the string with int(), which refuses it)"),
    ("per_device_train_batch_size: 4\ngeneration_batch_size: 10\n",
     "--config {path}: generation_batch_size 10 is not divisible by the global batch per_device_train_batch_size 4 "
     "x 1 process(es) = 4 (TRL's rule, GRPOConfig)"),
]


@pytest.mark.parametrize("text, line", BAD_FILES, ids=["list", "yaml", "value", "generation-batch"])
def test_estimate_bad_config_is_one_line_and_exit_2(text, line, tmp_path, capsys):
    cfg = _write(tmp_path, text)
    code, out, err = _run(capsys, ["estimate", "--config", cfg, "--model", MODEL, "--gpu", "L4"])
    assert code == 2 and out == ""
    assert err == f"plan: error: {line.format(path=cfg)}\n"


def test_estimate_missing_config_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    code, out, err = _run(capsys, ["estimate", "--config", missing, "--model", MODEL, "--gpu", "L4"])
    assert code == 2 and err == f"plan: error: cannot read --config {missing}: No such file or directory\n"


def test_estimate_needs_a_model_from_a_flag_or_the_file(tmp_path, capsys):
    cfg = _write(tmp_path, "per_device_train_batch_size: 4\n")
    code, _, err = _run(capsys, ["estimate", "--config", cfg, "--gpu", "L4"])
    assert code == 2 and err == "plan: error: --model is required (or model_name_or_path in the --config file)\n"


def test_estimate_without_config_keeps_its_defaults(capsys):
    d = _json(capsys, ["estimate", "--model", MODEL, "--gpu", "H100-80GB", "--json"])
    s = d["setup"]
    assert (s["batch_size"], s["prompt_length"], s["completion_length"], s["gradient_accumulation_steps"]) == \
        (1, 256, 512, 1)
    assert not [w for w in d["warnings"] if "--config" in w]


def test_the_unsloth_runtime_refuses_a_config_file(tmp_path, capsys):
    cfg = _write(tmp_path, RUN)
    for command in (["estimate"], []):
        code, _, err = _run(capsys, [*command, "--runtime", "unsloth", "--config", cfg, "--model", MODEL,
                                     "--gpu", "L4"])
        assert code == 2
        assert "plan: error: --config is read for the TRL runtime; with --runtime unsloth give its settings as " \
               "flags\n" in err


# -- plan check --config --------------------------------------------------------------------------

def test_check_holds_the_files_settings(tmp_path, capsys):
    cfg = _write(tmp_path, RUN)
    code, out, _ = _run(capsys, ["check", "--config", cfg, "--gpu", "H100-80GB"])
    assert code == 0
    assert out.splitlines()[0] == (f"pre-flight checks for {MODEL} on H100-80GB (batch 8 x 4 steps, 8 generations, "
                                   f"completion 1536, vLLM utilisation 0.4; planning only: missing packages are "
                                   f"warnings)")


def test_check_flags_win_over_the_file(tmp_path, capsys):
    cfg = _write(tmp_path, RUN)
    code, out, _ = _run(capsys, ["check", "--config", cfg, "--gpu", "H100-80GB", "--per-device-train-batch-size",
                                 "4", "--max-completion-length", "1024"])
    assert code == 0
    assert "(batch 4 x 4 steps, 8 generations, completion 1024, vLLM utilisation 0.4;" in out.splitlines()[0]


@pytest.mark.parametrize("text, line", BAD_FILES[:2], ids=["list", "yaml"])
def test_check_bad_config_is_one_line_and_exit_2(text, line, tmp_path, capsys):
    cfg = _write(tmp_path, text)
    code, out, err = _run(capsys, ["check", "--config", cfg, "--model", MODEL, "--gpu", "L4"])
    assert code == 2 and out == ""
    assert err == f"plan: error: {line.format(path=cfg)}\n"
