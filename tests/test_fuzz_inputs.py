"""Issue 14: bad input never gets a traceback, a silent wrong answer or a file; and every plan passes
its own checks and is reproduced by ``planner.estimate``.

- the fuzz grid: bad inputs across the CLI (``planner.cli.main`` in-process), the Python API and
  config.json content (files written to tmp_path). Each asserts the documented exit code (2: bad
  input; planner/cli/__init__.py), exactly one ``plan: error:`` line per problem, no traceback text, and no
  file written;
- the property test: seeded random valid requests (model x GPU x lengths x options), every plan has
  no error-level check, and ``planner.estimate`` of the chosen configuration gives the plan's
  phase peaks to the byte.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

import planner
from planner.cli import error_lines, main
from planner.errors import InfeasibleError, PlannerError

SMALL = "Qwen/Qwen2.5-0.5B-Instruct"
BASE = ["--model", SMALL, "--gpu", "L4"]


def _files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


def _run_cli(argv, tmp_path, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = e.code
    err = capsys.readouterr().err
    assert _files(tmp_path) == before, "a failed command wrote a file"
    return code, err


def _assert_lines(err: str, n: int) -> None:
    assert "Traceback" not in err and "Error:" not in err.replace("plan: error:", "")
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == n, err
    assert all(line.startswith("plan: error: ") for line in lines), err


# -- the CLI ------------------------------------------------------------------------------------

OUT = ["--output", "grpo.yaml"]  # a plan that fails must not write it
PLAN_CASES = [  # (extra argv for `plan`, number of problems)
    (["--num-gpus", "0"], 1), (["--num-gpus", "-1"], 1), (["--num-gpus", "100000"], 1), (["--num-nodes", "0"], 1),
    (["--num-nodes", "100000"], 1), (["--vllm-tensor-parallel-size", "0"], 1),
    (["--vllm-tensor-parallel-size", "8"], 1), (["--server-port", "70000"], 1), (["--server-port", "0"], 1),
    (["--lora-rank", "0"], 1), (["--lora-rank", "-1"], 1), (["--lora-rank", "100000"], 1),
    (["--lora-rank", "4096"], 1),  # > hidden size 896
    (["--lora-target-modules", "nonexistent"], 1), (["--lora-target-modules", "Q_PROJ"], 1),
    (["--lora-target-modules", "nonexistent,Q_PROJ"], 1), (["--lora-target-modules", ","], 1),
    (["--max-completion-length", "0"], 1), (["--max-completion-length", "-5"], 1),
    (["--max-completion-length", "10000000"], 1), (["--prompt-length", "-1"], 1),
    (["--prompt-length", "40000"], 1), (["--num-generations", "1"], 1), (["--num-generations", "0"], 1),
    (["--margin", "0.6"], 1), (["--margin", "-0.1"], 1), (["--margin", "nan"], 1), (["--margin", "inf"], 1),
    (["--utilization-range", "0.8,0.3"], 1), (["--utilization-range", "0,0.5"], 1),
    (["--utilization-range", "1.5"], 1), (["--utilization-range", "abc"], 1),
    (["--utilization-range", "0.3,0.5,0.7"], 1), (["--utilization-range", "nan,0.5"], 1),
    (["--weights", "int8"], 1), (["--finetune", "full", "--weights", "nf4"], 1),
    (["--layout", "server"], 1), (["--server-host", "a b"], 1), (["--vllm-version", " "], 1),
    (["--sleep-mode", "on", "--expandable-segments"], 1),
    (["--plot", "memory.bmp"], 1), (["--plot", "no/such/dir/memory.png"], 1),
    (["--lora-rank", "0", "--num-gpus", "0"], 2),
    (["--lora-rank", "0", "--margin", "0.9", "--server-port", "0"], 3),
    (["--num-generations", "1", "--prompt-length", "-2", "--max-completion-length", "0", "--num-nodes", "0"], 4),
    # argparse: one line, exit 2
    (["--lora-rank", "abc"], 1), (["--lora-rank", "1.5"], 1), (["--no-such-flag"], 1),
    (["--weights", "bf17"], 1), (["--sleep-mode", "maybe"], 1), (["--margin", "five"], 1),
    # --rechoose and --reserve
    (["--rechoose", "bogus"], 1), (["--rechoose", ","], 1), (["--rechoose", "all,bogus"], 1),
    (["--rechoose", "learning_rate"], 1), (["--reserve", "-1"], 1), (["--reserve", "nan"], 1),
    (["--reserve", "inf"], 1), (["--reserve", "1000"], 1), (["--reserve", "x"], 1),
    # pins that contradict each other or TRL's rules (held or refused, never replaced)
    (["--generation_batch_size", "64", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1"], 1),
    (["--num-generations", "1"], 1), (["--num-generations", "3", "--generation_batch_size", "8"], 1),
    (["--per_device_train_batch_size", "0"], 1), (["--vllm-gpu-memory-utilization", "1.5"], 1),
    (["--num-gpus", "3", "--vllm-tensor-parallel-size", "2"], 1),
    # the Unsloth runtime's flags: honoured or refused
    (["--runtime", "unsloth", "--layout", "server"], 1), (["--runtime", "unsloth", "--generation_batch_size", "16"], 1),
    (["--runtime", "unsloth", "--lora-target-modules", "q_proj,v_proj"], 1),
    (["--runtime", "unsloth", "--num-generations", "1"], 1), (["--runtime", "unsloth", "--num-gpus", "2"], 1),
    (["--runtime", "unsloth", "--finetune", "full"], 1), (["--max-seq-length", "1024"], 1),
]
MODEL_CASES = [  # (--model value, --gpu value)
    ("", "L4"), (" ", "L4"), ("a" * 300, "L4"), ("org/" + "a" * 300, "L4"), ("~nosuchuser/x", "L4"),
    ("/no/such/config.json", "L4"), ("./missing-dir", "L4"), ("Qwen/Qwen2.5-0.5B-Instrct", "L4"),
    ("qwen2.5-0.5b", "L4"), ("Qwen/Qwén-x", "L4"), (SMALL, "nope"), (SMALL, "H1000"), (SMALL, ""),
    (SMALL, "L4,nope"),
]
ESTIMATE_CASES = [  # (extra argv for `plan estimate`, number of problems)
    (["--batch-size", "0"], 1), (["--batch-size", "-1"], 1), (["--batch-size", "5000"], 1),
    (["--completion-length", "0"], 1), (["--completion-length", "-3"], 1), (["--prompt-length", "-1"], 1),
    (["--steps-per-generation", "0"], 1), (["--gradient-accumulation-steps", "0"], 1),
    (["--lora-rank", "0"], 1), (["--lora-target-modules", "nonexistent"], 1),
    (["--vllm-gpu-memory-utilization", "0"], 1), (["--vllm-gpu-memory-utilization", "1.5"], 1),
    (["--vllm-gpu-memory-utilization", "-0.3"], 1), (["--vllm-gpu-memory-utilization", "nan"], 1),
    (["--vllm-gpu-memory-utilization", "0.5", "--vllm-max-model-len", "100"], 1),
    (["--vllm-gpu-memory-utilization", "0.5", "--vllm-max-model-len", "10000000"], 1),
    (["--vllm-gpu-memory-utilization", "0.5", "--vllm-max-model-len", "0"], 1),
    (["--vllm-gpu-memory-utilization", "0.5", "--weights", "int8"], 1),
    (["--vllm-gpu-memory-utilization", "0.5", "--vllm-max-num-seqs", "0"], 1),
    (["--vllm-gpu-memory-utilization", "0.5", "--vllm-max-num-batched-tokens", "0"], 1),
    (["--vllm-gpu-memory-utilization", "0.5", "--vllm-tensor-parallel-size", "0"], 1),
    (["--prompt-length", "30000", "--completion-length", "10000"], 1),
    (["--finetune", "full", "--weights", "nf4"], 1), (["--num-gpus", "0"], 1), (["--num-nodes", "0"], 1),
    (["--num-gpus", "2", "--vllm-tensor-parallel-size", "0"], 1), (["--num-gpus", "2", "--batch-size", "0"], 1),
    (["--batch-size", "0", "--completion-length", "0", "--lora-rank", "0"], 3),
    (["--batch-size", "x"], 1), (["--completion-lengths", "random"], 1),
    (["--reserve", "-0.5"], 1), (["--reserve", "nan"], 1), (["--reserve", "23"], 1), (["--reserve", "two"], 1),
    (["--runtime", "unsloth", "--batch-size", "0"], 1), (["--runtime", "unsloth", "--num-generations", "1"], 1),
    (["--runtime", "unsloth", "--layout", "server"], 1),
    (["--runtime", "unsloth", "--lora-target-modules", "q_proj,v_proj"], 1),
]


@pytest.mark.parametrize("extra,n", PLAN_CASES, ids=[" ".join(a)[:40] for a, _ in PLAN_CASES])
def test_plan_bad_flags(extra, n, tmp_path, monkeypatch, capsys):
    code, err = _run_cli(BASE + extra + OUT, tmp_path, monkeypatch, capsys)
    assert code == 2
    _assert_lines(err, n)


@pytest.mark.parametrize("model,gpu", MODEL_CASES, ids=[f"{m[:20]}|{g}" for m, g in MODEL_CASES])
@pytest.mark.parametrize("command", ["plan", "estimate", "check"])
def test_bad_model_or_gpu(command, model, gpu, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never ask the Hub from a test
    head = [] if command == "plan" else [command]
    code, err = _run_cli(head + ["--model", model, "--gpu", gpu], tmp_path, monkeypatch, capsys)
    assert code == 2
    _assert_lines(err, 1)


@pytest.mark.parametrize("extra,n", ESTIMATE_CASES, ids=[" ".join(a)[:40] for a, _ in ESTIMATE_CASES])
def test_estimate_bad_flags(extra, n, tmp_path, monkeypatch, capsys):
    code, err = _run_cli(["estimate", *BASE, *extra], tmp_path, monkeypatch, capsys)
    assert code == 2
    _assert_lines(err, n)


def test_nothing_fits_is_exit_3_not_2(tmp_path, monkeypatch, capsys):
    code, err = _run_cli(["--model", "meta-llama/Llama-3.3-70B-Instruct", "--gpu", "L4", *OUT],
                         tmp_path, monkeypatch, capsys)
    assert code == 3
    _assert_lines(err, 1)


def test_an_estimate_that_does_not_fit_exits_1_and_says_why(tmp_path, monkeypatch, capsys):
    code, err = _run_cli(["estimate", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L4", "--batch-size", "16",
                          "--completion-length", "4096"], tmp_path, monkeypatch, capsys)
    assert code == 1
    assert err.startswith("plan: checks failed: ") and err.count("\n") == 1 and "does not fit" in err


def test_a_multi_gpu_estimate_rated_an_error_writes_nothing(tmp_path, monkeypatch, capsys):
    # 1 x 1 step x 2 ranks = 2 completions, not a multiple of 8 generations: TRL refuses it
    code, err = _run_cli(["estimate", "--model", SMALL, "--gpu", "H100-80GB", "--num-gpus", "2",
                          "--vllm-gpu-memory-utilization", "0.4", "--output-dir", "run"], tmp_path, monkeypatch, capsys)
    assert code == 1 and "trl-generation-batch" in err and "no file written" in err


def test_plan_with_an_error_level_check_exits_1_and_writes_nothing(tmp_path, monkeypatch, capsys):
    config = _config_dir(tmp_path, {**TINY, "model_type": "foobar"})
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--model", str(config), "--gpu", "H100-80GB", "--output", "grpo.yaml"]) == 1
    out, err = capsys.readouterr()
    assert "model-architecture" in out and "nearest modelled family is 'llama'" in out
    assert "plan profile --model" in out and not (tmp_path / "grpo.yaml").exists()
    # `plan` itself warns (and writes): the architecture is a guess, not a rule the run breaks
    assert main(["--model", str(config), "--gpu", "H100-80GB", "--json", "--output", "grpo.yaml"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert any("model_type 'foobar'" in w and "plan profile" in w for w in d["warnings"])
    assert (tmp_path / "grpo.yaml").exists()
    # the text says it once (it is both a plan warning and a flagged check)
    assert main(["--model", str(config), "--gpu", "H100-80GB"]) == 0
    assert capsys.readouterr().out.count("model_type 'foobar'") == 1


# -- the Python API -----------------------------------------------------------------------------

API_CASES = [  # (function, kwargs, number of problems)
    ("plan", dict(margin="0.05"), 1), ("plan", dict(margin=True), 1), ("plan", dict(margin=0.9), 1),
    ("plan", dict(margin=math.nan), 1), ("plan", dict(lora_rank=True), 1), ("plan", dict(lora_rank=1.5), 1),
    ("plan", dict(lora_rank="16"), 1), ("plan", dict(num_gpus=0), 1), ("plan", dict(num_gpus=True), 1),
    ("plan", dict(lora_target_modules="q_proj,v_proj"), 1), ("plan", dict(lora_target_modules=["nonexistent"]), 1),
    ("plan", dict(lora_target_modules=["Q_PROJ"]), 1), ("plan", dict(lora_target_modules=[]), 1),
    ("plan", dict(lora_target_modules=[1, 2]), 1), ("plan", dict(sleep_mode=True), 1),
    ("plan", dict(sleep_mode="of"), 1), ("plan", dict(weights="bf17"), 1),
    ("plan", dict(utilization_range=(0.7, 0.3)), 1), ("plan", dict(utilization_range="0.3,0.7"), 1),
    ("plan", dict(model=None), 1), ("plan", dict(model=123), 1), ("plan", dict(gpu=None), 1),
    ("plan", dict(calibration="yes"), 1), ("plan", dict(relax="no"), 1), ("plan", dict(server_port=70000), 1),
    ("plan", dict(prompt_length=True), 1), ("plan", dict(gradient_checkpointing="yes"), 1),
    ("plan", dict(max_completion_length=40000), 1),
    ("plan", dict(lora_rank=0, num_gpus=0, margin="x"), 3),
    ("estimate", dict(sleep_mode="off"), 1), ("estimate", dict(sleep_mode="on"), 1),
    ("estimate", dict(sleep_mode=1), 1), ("estimate", dict(lora_rank=True), 1),
    ("estimate", dict(prompt_length=True), 1), ("estimate", dict(batch_size=True), 1),
    ("estimate", dict(batch_size=0), 1), ("estimate", dict(completion_length=0), 1),
    ("estimate", dict(completion_length=2.5), 1), ("estimate", dict(lora_target_modules="q_proj,v_proj"), 1),
    ("estimate", dict(lora_target_modules=["nonexistent"]), 1), ("estimate", dict(completion_lengths="random"), 1),
    ("estimate", dict(vllm_gpu_memory_utilization=1.5), 1), ("estimate", dict(vllm_gpu_memory_utilization="0.5"), 1),
    ("estimate", dict(vllm_gpu_memory_utilization=True), 1),
    ("estimate", dict(vllm_gpu_memory_utilization=0.5, vllm_max_model_len=100), 1),
    ("estimate", dict(vllm_gpu_memory_utilization=0.5, weights="int8"), 1),
    ("estimate", dict(prompt_length=40000), 1), ("estimate", dict(vllm_enforce_eager="yes"), 1),
    ("estimate", dict(calibration=5), 1), ("estimate", dict(weights="bf17", optim="sgd"), 2),
    ("estimate", dict(steps_per_generation=0, gradient_accumulation_steps=-1), 2),
    ("estimate", dict(model=None), 1), ("estimate", dict(gpu="nope"), 1),
    ("preflight", dict(plan_or_options=None), 1), ("preflight", dict(plan_or_options=5), 1),
    ("preflight", dict(plan_or_options="x"), 1),
    ("estimate_layout", dict(num_gpus=2, vllm_tensor_parallel_size=0), 1),
    ("estimate_layout", dict(num_gpus=2, sleep_mode="off"), 1),
]


@pytest.mark.parametrize("fn,kwargs,n", API_CASES, ids=[f"{f}-{k}"[:60] for f, k, _ in API_CASES])
def test_python_api_bad_input(fn, kwargs, n, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kw = dict(kwargs)
    if fn != "preflight":
        kw = {"model": SMALL, "gpu": "L4", **kw}
    with pytest.raises(PlannerError) as info:
        getattr(planner, fn)(**kw)
    assert not isinstance(info.value, InfeasibleError)
    assert len(error_lines(info.value)) == n, str(info.value)
    assert _files(tmp_path) == set()


@pytest.mark.parametrize("fn", ["plan", "estimate", "estimate_layout"])
def test_an_unknown_keyword_is_pythons_type_error(fn):
    # the keywords are typed parameters (tests/test_api_vocabulary.py): a misspelt one is a TypeError, as anywhere
    with pytest.raises(TypeError, match="unknown_option"):
        getattr(planner, fn)(SMALL, "L4", unknown_option=1)


def test_all_linear_means_every_linear_projection():
    every = planner.estimate(SMALL, "L4")
    for spelling in ("all-linear", ["all-linear"], ("all-linear",)):
        e = planner.estimate(SMALL, "L4", lora_target_modules=spelling)
        assert e.trainer.components["adapters"] == every.trainer.components["adapters"] > 0
    p = planner.plan(SMALL, "L4", lora_target_modules="all-linear")
    assert p.setup.lora_target_modules is None


def test_estimate_sleep_mode_is_a_bool_and_off_stays_off():
    off = planner.estimate(SMALL, "L4", vllm_gpu_memory_utilization=0.4, sleep_mode=False)
    assert off.phases.sleep_mode is False
    with pytest.raises(PlannerError, match="sleep_mode must be True or False, got 'off'"):
        planner.estimate(SMALL, "L4", vllm_gpu_memory_utilization=0.4, sleep_mode="off")


# -- config.json content ------------------------------------------------------------------------

TINY = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000, "intermediate_size": 512, "max_position_embeddings": 4096,
        "tie_word_embeddings": True}


def _config_dir(tmp_path: Path, cfg=None, raw: bytes | None = None) -> Path:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_bytes(raw if raw is not None else json.dumps(cfg).encode())
    return d


def _deep(n: int) -> bytes:
    return ('{"model_type": "llama", "x": ' + "[" * n + "]" * n + "}").encode()


RAW_CASES = {  # name -> bytes of config.json (one problem each)
    "non-utf8": b'\xff\xfe{"model_type": "llama"}',
    "latin1": json.dumps({**TINY, "model_type": "llama"}).encode()[:-1] + ', "name": "caf\xe9"}'.encode("latin-1"),
    "nan": json.dumps({**TINY, "hidden_size": math.nan}).encode(),
    "infinity": json.dumps({**TINY, "vocab_size": math.inf}).encode(),
    "-infinity": json.dumps({**TINY, "final_logit_softcapping": -math.inf}).encode(),
    "deep-nesting": _deep(100_000),
    "truncated": json.dumps(TINY).encode()[:40],
    "empty": b"",
    "array": b"[1, 2, 3]",
    "null": b"null",
    "string": b'"llama"',
    "trailing-comma": b'{"model_type": "llama",}',
}
FIELD_CASES = {  # name -> changes to a valid config (None deletes the key); one problem each
    "num_experts-string": {"num_experts": "8"}, "num_experts-negative": {"num_experts": -4},
    "num_experts-fraction": {"num_experts": 2.5}, "num_experts-bool": {"num_experts": True},
    "sliding_window-string": {"sliding_window": "4096"}, "sliding_window-negative": {"sliding_window": -1},
    "layer_types-string": {"layer_types": "sliding_attention"}, "layer_types-ints": {"layer_types": [1, 2]},
    "layer_types-length": {"layer_types": ["full_attention"]},
    "quantization_config-string": {"quantization_config": "awq"}, "quantization_config-list": {"quantization_config": [1]},
    "quant_method-int": {"quantization_config": {"quant_method": 4}},
    "moe_layer_freq-0": {"n_routed_experts": 4, "moe_intermediate_size": 64, "moe_layer_freq": 0},
    "decoder_sparse_step-0": {"num_experts": 4, "moe_intermediate_size": 64, "decoder_sparse_step": 0},
    "mlp_only_layers-string": {"mlp_only_layers": "1,2"},
    "tie_word_embeddings-string": {"tie_word_embeddings": "false"}, "attention_bias-string": {"attention_bias": "yes"},
    "use_sliding_window-int": {"use_sliding_window": 1},
    "hidden_size-string": {"hidden_size": "256"}, "hidden_size-0": {"hidden_size": 0},
    "hidden_size-negative": {"hidden_size": -1}, "hidden_size-fraction": {"hidden_size": 1.5},
    "hidden_size-bool": {"hidden_size": True}, "hidden_size-missing": {"hidden_size": None},
    "vocab_size-list": {"vocab_size": [1000]}, "heads-not-multiple": {"num_key_value_heads": 3},
    "max_position_embeddings-0": {"max_position_embeddings": 0}, "model_type-int": {"model_type": 5},
    "model_type-missing": {"model_type": None}, "torch_dtype-int": {"torch_dtype": 16},
    "softcapping-string": {"final_logit_softcapping": "30"}, "kv_lora_rank-negative": {"kv_lora_rank": -512},
    "text_config-string": {"text_config": "x"},
    "text_config-bad-field": {"text_config": {**TINY, "num_hidden_layers": "2"}},
    "vision_config-bad-field": {"text_config": dict(TINY), "vision_config": {"patch_size": 0}},
}
FIELD_LINES = {"moe_layer_freq-0": 1}


def _changed(changes: dict) -> dict:
    cfg = dict(TINY)
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_config_json_bytes(name, tmp_path, monkeypatch, capsys):
    d = _config_dir(tmp_path, raw=RAW_CASES[name])
    code, err = _run_cli(["estimate", "--model", str(d), "--gpu", "L4"], tmp_path, monkeypatch, capsys)
    assert code == 2
    _assert_lines(err, 1)
    assert str(d / "config.json") in err  # names the file


@pytest.mark.parametrize("name", sorted(FIELD_CASES))
def test_config_json_fields(name, tmp_path, monkeypatch, capsys):
    changes = FIELD_CASES[name]
    d = _config_dir(tmp_path, _changed(changes))
    code, err = _run_cli(["estimate", "--model", str(d), "--gpu", "L4"], tmp_path, monkeypatch, capsys)
    assert code == 2
    _assert_lines(err, 1)
    assert str(d / "config.json") in err
    if "heads" not in name and "missing" not in name and "length" not in name:
        key = next(iter(k for k in changes if k not in ("n_routed_experts", "num_experts", "moe_intermediate_size")
                        or len(changes) == 1))
        assert f"'{key}" in err or f"'text_config.{key}" in err or "vision_config." in err or key in err
    with pytest.raises(PlannerError):  # the Python API alike
        planner.estimate(str(d), "L4")


def test_config_json_every_problem_at_once(tmp_path, monkeypatch, capsys):
    d = _config_dir(tmp_path, _changed({"num_experts": -4, "tie_word_embeddings": "false", "sliding_window": "x"}))
    code, err = _run_cli(["--model", str(d), "--gpu", "L4", *OUT], tmp_path, monkeypatch, capsys)
    assert code == 2
    _assert_lines(err, 3)


def test_a_valid_config_json_still_plans(tmp_path):
    assert planner.estimate(str(_config_dir(tmp_path, TINY)), "L4").fits


# -- TRL config files (--config, planner.search.trl_config) --------------------------------------------

def _laughs(levels: int, width: int) -> bytes:
    """A "billion laughs" file: each level an anchored list of ``width`` aliases of the one before."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


_TEXT = "model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct\nper_device_train_batch_size: 4\n"
GRPO_CONFIG_CASES = {  # name -> the file's bytes (one problem each)
    "latin-1": "model_name_or_path: caf\xe9\n".encode("latin-1"),
    "utf-16-bom": _TEXT.encode("utf-16"),
    "utf-16-le-no-bom": _TEXT.encode("utf-16-le"),
    "utf-32": _TEXT.encode("utf-32"),
    "binary": bytes(range(256)) * 4,
    "huge": b"# " + b"x" * (1 << 20) + b"\nlearning_rate: 1.0e-6\n",
    "deep-flow": b"model_init_kwargs: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep-block": "".join(f"{'  ' * i}k{i}:\n" for i in range(40)).encode() + b"  " * 40 + b"v: 1\n",
    "billion-laughs": _laughs(10, 10),
    "too-many-aliases": b"a: &a 1\nb: [" + b", ".join([b"*a"] * 1001) + b"]\n",
    "recursive-alias": b"a: &a [1, *a]\n",
    "undefined-alias": b"a: *nowhere\n",
    "int-key": b"1: 4\n",
    "bool-key": b"yes: 4\n",
    "null-key": b"null: 4\nlearning_rate: 1.0e-6\n",
    "complex-key": b"? [a, b]\n: 4\n",
    "top-list": b"- per_device_train_batch_size\n- 4\n",
    "top-scalar": b"per_device_train_batch_size\n",
    "empty": b"",
    "comments-only": b"# nothing here\n",
    "two-documents": b"a: 1\n---\nb: 2\n",
    "bad-timestamp": b"created: 2024-13-45\n",
    "long-int": b"seed: " + b"9" * 5000 + b"\n",
    "tab-indent": b"env:\n\tA: 1\n",
    "env-list": b"env: [PYTORCH_CUDA_ALLOC_CONF]\n",
    "env-int-key": b"env:\n  1: x\n",
    "bool-refused": b"use_peft: 'maybe'\n",
    "int-refused": b"per_device_train_batch_size: '4.5'\n",
}


@pytest.mark.parametrize("command", [["--output", "grpo.yaml"], ["estimate"], ["check", "--output", "grpo.yaml"]],
                         ids=["plan", "estimate", "check"])
@pytest.mark.parametrize("name", sorted(GRPO_CONFIG_CASES))
def test_malformed_grpo_config(name, command, tmp_path, monkeypatch, capsys):
    path = tmp_path / "in.yaml"
    path.write_bytes(GRPO_CONFIG_CASES[name])
    code, err = _run_cli([*command, "--config", str(path), "--model", SMALL, "--gpu", "L4"], tmp_path, monkeypatch,
                         capsys)
    assert code == 2
    _assert_lines(err, 1)
    assert str(path) in err
    assert len(err) < 600  # one readable line, not the file echoed back


# -- calibration profiles read from disk ---------------------------------------------------------

def _profile(models) -> bytes:
    return json.dumps({"schema": 1, "gpu": {"name": "L4"}, "versions": {}, "models": models}).encode()


GOOD_LINE = {"slope": 1.0, "intercept": 0.0, "n": 2, "x_min": 1, "x_max": 2}
PROFILE_CASES = {
    "models-string": _profile("x"),
    "entry-string": _profile(["x"]),
    "fits-dict": _profile([{"fingerprint": {}, "fits": {}}]),
    "fit-string": _profile([{"fingerprint": {}, "fits": ["x"]}]),
    "slope-string": _profile([{"fingerprint": {}, "fits": [{"model": "m", "weights": "bf16", "finetune": "lora",
                                                              "activation": {"gc": {**GOOD_LINE, "slope": "x"}}}]}]),
    "slope-nan": _profile([{"fingerprint": {}, "fits": [{"model": "m", "weights": "bf16", "finetune": "lora",
                                                           "activation": {"gc": {**GOOD_LINE, "slope": math.nan}}}]}]),
    "weights-missing": _profile([{"fingerprint": {}, "fits": [{"model": "m", "finetune": "lora"}]}]),
    "line-list": _profile([{"fingerprint": {}, "fits": [{"model": "m", "weights": "bf16", "finetune": "lora",
                                                           "reserve": {"gc": [1, 2]}}]}]),
}


@pytest.mark.parametrize("name", sorted(PROFILE_CASES))
def test_corrupt_calibration_profile(name, tmp_path, monkeypatch, capsys):
    store = tmp_path / "cal"
    store.mkdir()
    (store / "bad.json").write_bytes(PROFILE_CASES[name])
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(store))
    code, err = _run_cli(["estimate", *BASE], tmp_path, monkeypatch, capsys)
    assert code == 2
    _assert_lines(err, 1)
    assert str(store / "bad.json") in err and "fix or delete it" in err


def test_files_that_are_not_profiles_are_skipped(tmp_path, monkeypatch, capsys):
    store = tmp_path / "cal"
    store.mkdir()
    (store / "broken.json").write_bytes(b"\xff{not json")
    (store / "other.json").write_text(json.dumps({"schema": 99, "models": "x"}))
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(store))
    code, err = _run_cli(["estimate", *BASE], tmp_path, monkeypatch, capsys)
    assert code == 0 and err == ""


# -- the process --------------------------------------------------------------------------------

def test_ascii_terminal_gets_escapes_not_an_exception(tmp_path, monkeypatch):
    import io
    import sys

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert main(["--model", "Qwen/Qwén-x", "--gpu", "L4"]) == 2
    stream.flush()
    text = raw.getvalue().decode("ascii")
    assert text.startswith("plan: error: unknown model 'Qwen/Qw\\xe9n-x'") and text.count("\n") == 1


def test_a_closed_stdout_ends_quietly(tmp_path):
    import subprocess
    import sys

    script = ("import sys; sys.path.insert(0, %r); from planner.cli import main; sys.exit(main())"
              % str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", script, "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    proc.stdout.read(1)
    proc.stdout.close()  # `| head -c1`
    err = proc.stderr.read().decode()
    code = proc.wait()
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert code in (0, 141)  # 141: the write after head exited; 0: everything fit the pipe before


def test_ctrl_c_during_start_up(monkeypatch, capsys):
    import planner.cli as cli

    def interrupted(_name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_load", interrupted)
    assert cli.main(["estimate", *BASE]) == 130
    assert capsys.readouterr().err == "plan: interrupted\n"


# -- the property test: random valid requests ---------------------------------------------------

MODELS = ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B",
          "google/gemma-3-1b-it", "Qwen/Qwen2.5-3B-Instruct", "microsoft/Phi-4-mini-instruct",
          "google/gemma-2-2b-it", "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"]
GPUS = ["L4", "RTX-4090", "A100-40GB", "H100-80GB", "RTX-3090", "A10G", "L40S"]
DRAWS = 30


def _draw(rng: random.Random) -> tuple[str, str, dict]:
    weights = rng.choice(["bf16", "bf16", "nf4"])
    finetune = "full" if weights == "bf16" and rng.random() < 0.15 else "lora"
    opts = dict(weights=weights, finetune=finetune, lora_rank=rng.choice([8, 16, 32, 64]),
                max_completion_length=rng.choice([256, 512, 1024, 2048]), prompt_length=rng.choice([64, 256, 512]),
                optim=rng.choice(["adamw_8bit", "adamw_torch"]), sleep_mode=rng.choice(["auto", "auto", "off"]),
                expandable_segments=rng.random() < 0.2)
    if rng.random() < 0.3:
        opts["num_generations"] = rng.choice([4, 8, 16])
    if rng.random() < 0.2:
        opts["lora_target_modules"] = ["q_proj", "v_proj"]
    return rng.choice(MODELS), rng.choice(GPUS), opts


def test_random_valid_requests_pass_their_own_checks_and_estimate_reproduces_them(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    rng = random.Random(14)
    planned = 0
    for _ in range(DRAWS):
        model, gpu, opts = _draw(rng)
        try:
            p = planner.plan(model, gpu, **opts)
        except InfeasibleError:
            continue
        planned += 1
        errors = [c for c in p.checks if c.severity == "error"]
        assert not errors, (model, gpu, opts, errors)
        cfg, s = p.config, p.setup
        S = p.option.steps_per_generation
        e = planner.estimate(model, gpu, weights=s.weights, finetune=s.finetune, lora_rank=s.lora_rank,
                             lora_target_modules=s.lora_target_modules, optim=s.optim,
                             gradient_checkpointing=s.gradient_checkpointing, logprob_head=s.logprob_head,
                             expandable_segments=s.expandable_segments, batch_size=cfg["per_device_train_batch_size"],
                             prompt_length=s.prompt_length, completion_length=cfg["max_completion_length"],
                             vllm_gpu_memory_utilization=cfg["vllm_gpu_memory_utilization"],
                             vllm_max_model_len=cfg["vllm_max_model_length"],
                             sleep_mode=cfg["vllm_enable_sleep_mode"], steps_per_generation=S,
                             gradient_accumulation_steps=S, completion_lengths=s.completion_lengths)
        assert e.fits, (model, gpu, opts)
        plan_phases = {ph.name: ph.peak_bytes for ph in p.training_rank.phases}
        est_phases = {ph.name: ph.peak_bytes for ph in e.phases.phases}
        assert est_phases["training"] == plan_phases["training"], (model, gpu, opts)
        assert est_phases == plan_phases, (model, gpu, opts)
    assert planned >= DRAWS // 2  # most draws fit somewhere: the test is not vacuous
