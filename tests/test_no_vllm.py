"""use_vllm=False: transformers' generate in the trainer (planner.memory.generate), its phase, and its
spellings (planner.estimate(use_vllm=False), `plan estimate --no-vllm`, use_vllm: false in --config)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import planner
from planner.errors import InvalidSetupError
from planner.memory.generate import GenerationShape, generation_components, generation_kv_cache_bytes
from planner.memory.phases import PHASE_BLOCKS
from planner.search.trl_config import parse_grpo_config
from planner.specs.model import resolve_model

ROOT = Path(__file__).resolve().parents[1]
QWEN7 = "Qwen/Qwen2.5-7B-Instruct"  # 28 layers, 4 KV heads of 128


def test_the_kv_cache_is_every_layers_keys_and_values_for_the_generation_batch():
    spec = resolve_model(QWEN7)
    shape = GenerationShape(sequences=32, prompt_length=512, completion_length=1024)
    per_token = 28 * 2 * 4 * 128 * 2  # layers x (K, V) x heads x head_dim x bf16
    assert generation_kv_cache_bytes(spec, shape) == 32 * 1536 * per_token
    # fp32 weights generate in fp32: twice the cache
    assert generation_kv_cache_bytes(spec, GenerationShape(32, 512, 1024, compute_bytes=4)) == 2 * 32 * 1536 * per_token
    parts = generation_components(spec, shape)
    assert parts["generate.sampling"] == 32 * spec.vocab_size * (2 + 16)
    assert parts["generate.dequant"] == 0
    assert generation_components(spec, shape, quantized=True, largest_matrix_params=10)["generate.dequant"] == 20


def test_the_no_vllm_phases_have_a_generation_and_no_vllm_block():
    assert PHASE_BLOCKS[("generate", False)] == (("load", ("load",)), ("generation", ("resident", "generate")),
                                                 ("training", ("step",)))
    kw = dict(per_device_train_batch_size=8, steps_per_generation=4, max_prompt_length=512,
              max_completion_length=1024, calibration=None)
    e = planner.estimate(QWEN7, "H100-80GB", use_vllm=False, **kw)
    assert e.vllm is None and [p.name for p in e.phases.phases] == ["load", "generation", "training"]
    gen = e.phases["generation"].components
    assert not [k for k in gen if k.startswith("vllm.")]
    assert gen["generate.kv_cache"] == generation_kv_cache_bytes(resolve_model(QWEN7), GenerationShape(32, 512, 1024))
    # the training step is the trainer's own peak, as without the generation phase
    step_only = planner.estimate(QWEN7, "H100-80GB", **kw)
    assert step_only.phases is None
    assert e.phases["training"].peak_bytes == step_only.trainer.peak_bytes
    assert e.peak_bytes == max(p.peak_bytes for p in e.phases.phases) >= step_only.peak_bytes
    d = e.to_dict()
    assert d["phases"]["generation_backend"] == "transformers" and d["phases"]["binding_phase"] == "training"


def test_a_large_generation_batch_makes_generation_the_binding_phase():
    e = planner.estimate(QWEN7, "H100-80GB", use_vllm=False, per_device_train_batch_size=1, steps_per_generation=64,
                         max_prompt_length=2048, max_completion_length=4096, calibration=None)
    assert e.phases.binding_phase == "generation"
    assert e.peak_bytes > e.trainer.peak_bytes


def test_use_vllm_true_without_a_utilisation_is_trls_default_engine():
    e = planner.estimate(QWEN7, "H100-80GB", use_vllm=True, trl_version="1.16.0", calibration=None)
    assert e.vllm is not None and e.vllm.gpu_memory_utilization == 0.3


def test_refused_combinations_are_one_line_each():
    with pytest.raises(InvalidSetupError) as e:
        planner.estimate(QWEN7, "H100-80GB", use_vllm=False, vllm_gpu_memory_utilization=0.3,
                         vllm_enable_sleep_mode=True, rollout_turns=2)
    # planner.estimate names the CLI's flags, as its other refusals do
    assert str(e.value).splitlines() == [
        "--no-vllm and --vllm-gpu-memory-utilization: without vLLM there is no engine to give a share; drop one "
        "of them",
        "--no-vllm and --sleep-mode: sleep mode puts vLLM to sleep, and there is no vLLM; drop one of them",
        "--no-vllm with --rollout-turns: a multi-turn rollout_func is modelled with vLLM generating each turn; "
        "drop one of them"]


def test_a_trl_config_with_use_vllm_false_is_read_as_trl_reads_it():
    pytest.importorskip("trl")
    from trl import GRPOConfig
    from trl.scripts._hf_argparser import string_to_bool

    cfg = parse_grpo_config({"use_vllm": "false", "per_device_train_batch_size": 4}, "grpo.yaml")
    assert cfg.use_vllm is False is string_to_bool("false")
    assert GRPOConfig(output_dir="x", bf16=False, use_cpu=True, use_vllm=cfg.use_vllm).use_vllm is False


def _cli(*argv: str) -> subprocess.CompletedProcess:
    code = "import sys; from planner.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_the_cli_flag_and_the_config_key(tmp_path):
    r = _cli("estimate", "--model", QWEN7, "--gpu", "H100-80GB", "--no-vllm", "--steps-per-generation", "4")
    assert r.returncode == 0, r.stderr
    assert "generation without vLLM (transformers' generate):" in r.stdout and "colocated vLLM" not in r.stdout
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text("use_vllm: false\nper_device_train_batch_size: 8\n")
    r = _cli("estimate", "--config", str(cfg), "--model", QWEN7, "--gpu", "H100-80GB")
    assert r.returncode == 0, r.stderr
    assert "generation without vLLM" in r.stdout
    r = _cli("estimate", "--model", QWEN7, "--gpu", "H100-80GB", "--no-vllm", "--vllm-gpu-memory-utilization", "0.3")
    assert (r.returncode, r.stderr) == (2, "plan: error: --no-vllm and --vllm-gpu-memory-utilization: without vLLM "
                                           "there is no engine to give a share; drop one of them\n")
    r = _cli("estimate", "--model", QWEN7, "--gpu", "H100-80GB", "--no-vllm", "--num-gpus", "2")
    assert (r.returncode, r.stderr) == (2, "plan: error: --no-vllm is modelled on one GPU: drop --num-gpus, "
                                           "--num-nodes and --layout, or keep vLLM\n")


def test_the_search_plans_without_vllm():
    p = planner.plan(QWEN7, "H100-80GB", use_vllm=False, calibration=None)
    c = p.config
    assert c["use_vllm"] is False and not [k for k in c if k.startswith("vllm_")] and "vllm_mode" not in c
    assert p.vllm is None and p.topology.vllm_mode == "generate" and p.topology.num_engines == 0
    assert [ph.name for ph in p.training_rank.phases] == ["load", "generation", "training"]
    gen = p.training_rank.phase("generation").components
    assert not [k for k in gen if k.startswith("vllm.")]
    B, S = c["per_device_train_batch_size"], c["gradient_accumulation_steps"]
    spec = resolve_model(QWEN7)
    assert gen["generate.kv_cache"] == generation_kv_cache_bytes(spec, GenerationShape(B * S, 256, 512))
    assert p.peak_bytes <= p.training_rank.budget_bytes
    assert p.binding["limits"]["vllm_gpu_memory_utilization"]["constraint"] == "none"
    assert any("transformers' generate" in r for r in p.reasons)
    # the generation grows with the completions per step: a long completion on a small card binds it
    small = planner.plan(QWEN7, "L4", weights="nf4", use_vllm=False, calibration=None,
                         pin={"max_completion_length": 4096})
    assert small.training_rank.phase("generation").peak_bytes <= small.training_rank.budget_bytes


def test_a_no_vllm_plan_refuses_what_only_vllm_or_several_gpus_read():
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(QWEN7, "H100-80GB", use_vllm=False, num_gpus=2, vllm_gpu_memory_utilization=0.4)
    assert str(e.value).splitlines() == [
        "use_vllm=False is planned on one GPU: drop num_gpus, num_nodes and layout, or keep vLLM",
        "use_vllm=False with vllm_gpu_memory_utilization: it configures vLLM, and there is none; drop it or keep vLLM"]
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(QWEN7, "L4", use_vllm=False, runtime="unsloth")
    assert str(e.value) == ("use_vllm is not honoured by runtime='unsloth': fast_inference=True generates with "
                            "Unsloth's own vLLM")


def test_plan_no_vllm_on_the_cli_and_from_a_config(tmp_path):
    r = _cli("--model", QWEN7, "--gpu", "H100-80GB", "--no-vllm", "--json")
    assert r.returncode == 0, r.stderr
    assert '"use_vllm": false' in r.stdout and '"generation_backend"' not in r.stdout
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text("use_vllm: \"false\"\nper_device_train_batch_size: 8\n")
    r = _cli("--model", QWEN7, "--gpu", "H100-80GB", "--config", str(cfg), "--output", str(tmp_path / "out.yaml"))
    assert r.returncode == 0, r.stderr
    written = (tmp_path / "out.yaml").read_text()
    assert "use_vllm: false" in written and "vllm_gpu_memory_utilization" not in written
    assert "per_device_train_batch_size: 8" in written


def test_the_handed_off_grpo_config_generates_with_transformers(monkeypatch):
    pytest.importorskip("trl")
    from planner.runtimes import trl_handoff as handoff

    monkeypatch.setattr(handoff, "_runtime", lambda: (False, False, False))
    args = handoff.grpo_config_from_plan(planner.plan(QWEN7, "H100-80GB", use_vllm=False, calibration=None))
    assert args.use_vllm is False and args.per_device_train_batch_size > 0


def test_transformers_continuous_batching_is_refused_where_it_would_generate(tmp_path):
    from planner.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_grpo_config({"use_vllm": False, "use_transformers_continuous_batching": "true"}, "grpo.yaml")
    assert str(e.value) == ("--config grpo.yaml: use_transformers_continuous_batching: transformers' continuous "
                            "batching (a paged KV cache of its own) is not modelled; drop it to plan transformers' "
                            "generate, or set use_vllm: true")
    # with vLLM generating, TRL never reaches it (grpo_trainer.py: `if self.use_vllm: ... elif ...`)
    parse_grpo_config({"use_vllm": True, "use_transformers_paged": True}, "grpo.yaml")
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text("use_transformers_paged: true\nper_device_train_batch_size: 8\n")  # no use_vllm: TRL's False
    r = _cli("estimate", "--config", str(cfg), "--model", QWEN7, "--gpu", "H100-80GB")
    assert (r.returncode, r.stderr) == (2, f"plan: error: --config {cfg}: use_transformers_paged: transformers' "
                                           f"continuous batching (a paged KV cache of its own) is not modelled; drop "
                                           f"it to plan transformers' generate, or set use_vllm: true\n")
