"""planner.report.emit: every file must load with the parser or schema of the engine that reads it.

- grpo.yaml: TRL's ``TrlParser((GRPOConfig, ModelConfig))`` (what ``trl grpo --config`` reads; the
  same file ``plan --output`` writes) and TRL's own GRPO script parser with launch.sh's arguments;
- accelerate.yaml: accelerate's ``ClusterConfig.from_yaml_file``, then ``accelerate launch``'s own
  validation, environment and plugin (``DeepSpeedPlugin`` / ``FullyShardedDataParallelPlugin``);
- deepspeed.json: transformers' ``HfTrainerDeepSpeedConfig`` (fills the "auto" values from the
  GRPOConfig) and DeepSpeed's ``DeepSpeedConfig`` / ``DeepSpeedZeroConfig`` (pydantic);
- vllm_serve.sh / launch.sh: run by bash with stub ``trl`` / ``accelerate`` executables that record
  their argv, which then goes through ``trl vllm-serve``'s and ``accelerate launch``'s parsers.
CPU only, no network.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("yaml")
pytest.importorskip("trl")
pytest.importorskip("accelerate")

import torch  # noqa: E402
import yaml  # noqa: E402
from trl import GRPOConfig, ModelConfig, TrlParser  # noqa: E402

from planner import plan as plan_distributed  # noqa: E402
from planner.report.emit import to_yaml, write_configs  # noqa: E402
from planner.specs.topology import DEEPSPEED_DEFAULTS  # noqa: E402

CPU = not (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
BASH = shutil.which("bash")

PLANS = {
    # the brief's end-to-end case: whatever auto picks for a 32B model on one 8-GPU node
    "32b-auto": dict(model="Qwen/Qwen2.5-32B-Instruct", gpu="H100-80GB", num_gpus=8),
    "32b-server-zero2": dict(model="Qwen/Qwen2.5-32B-Instruct", gpu="H100-80GB", num_gpus=8, layout="server",
                             engine="zero2"),
    "8b-colocate-zero3": dict(model="meta-llama/Llama-3.1-8B-Instruct", gpu="H100-80GB", num_gpus=4,
                              layout="colocate", engine="zero3"),
    "32b-colocate-fsdp": dict(model="Qwen/Qwen2.5-32B-Instruct", gpu="H100-80GB", num_gpus=8, layout="colocate",
                              engine="fsdp"),
    "8b-two-nodes-zero2": dict(model="meta-llama/Llama-3.1-8B-Instruct", gpu="H100-80GB", num_gpus=8, num_nodes=2,
                               layout="colocate", engine="zero2"),
    "1b-one-gpu": dict(model="Qwen/Qwen2.5-1.5B-Instruct", gpu="L4", num_gpus=1),
}


@pytest.fixture(scope="module")
def plans():
    out = {}
    for name, kw in PLANS.items():
        kw = dict(kw)
        out[name] = plan_distributed(kw.pop("model"), kw.pop("gpu"), **kw)
    return out


@pytest.fixture(scope="module")
def written(plans, tmp_path_factory):
    return {name: write_configs(p, tmp_path_factory.mktemp(name)) for name, p in plans.items()}


def test_end_to_end_32b_auto_writes_every_file(plans, written):
    dp, files = plans["32b-auto"], written["32b-auto"]
    assert dp.fits
    expected = {"grpo.yaml", "accelerate.yaml", "launch.sh"}
    if dp.topology.vllm_mode == "server":
        expected.add("vllm_serve.sh")
    if dp.deepspeed is not None:
        expected.add("deepspeed.json")
    assert set(files) == expected
    for path in files.values():
        assert path.is_file() and path.read_text().strip()


def test_files_per_layout(plans, written):
    assert "deepspeed.json" in written["32b-server-zero2"] and "vllm_serve.sh" in written["32b-server-zero2"]
    assert "deepspeed.json" in written["8b-colocate-zero3"] and "vllm_serve.sh" not in written["8b-colocate-zero3"]
    assert "deepspeed.json" not in written["32b-colocate-fsdp"]


# -- grpo.yaml -----------------------------------------------------------------------------------

def _parse_grpo(path: Path, tmp_path: Path) -> GRPOConfig:
    return _parse_grpo_and_model(path)[0]


def _parse_grpo_and_model(path: Path):
    # transformers refuses bf16=True without a bf16 device; a CPU test machine adds --use_cpu
    # (the written file keeps bf16: true for the training GPUs)
    return TrlParser((GRPOConfig, ModelConfig)).parse_args_and_config(
        ["--config", str(path)] + (["--use_cpu", "true"] if CPU else []))


@pytest.mark.parametrize("name", list(PLANS))
def test_grpo_yaml_loads_with_trls_parser(plans, written, name, tmp_path):
    dp = plans[name]
    args = _parse_grpo(written[name]["grpo.yaml"], tmp_path)
    for key, value in dp.config.items():
        assert getattr(args, key) == value, key
    assert args.model_init_kwargs == {"dtype": "bfloat16"}
    _, model_args = _parse_grpo_and_model(written[name]["grpo.yaml"])
    assert model_args.model_name_or_path == dp.model.model_id and model_args.dtype == "bfloat16"
    assert model_args.use_peft is True and model_args.lora_r == dp.setup.lora_rank
    # TRL's rule at the real world size (grpo_config.py __post_init__): steps_per_generation =
    # generation_batch_size / (B x world) = the planned accumulation, and divisible by G
    cfg, world = dp.config, dp.topology.world_size
    gbs, B = cfg["generation_batch_size"], cfg["per_device_train_batch_size"]
    assert gbs % (B * world) == 0 and gbs // (B * world) == cfg["gradient_accumulation_steps"]
    assert gbs % cfg["num_generations"] == 0


def test_grpo_yaml_server_and_colocate_fields(plans, written):
    server = yaml.safe_load(written["32b-server-zero2"]["grpo.yaml"].read_text())
    assert server["vllm_mode"] == "server" and server["vllm_server_port"] == 8000
    assert "vllm_gpu_memory_utilization" not in server
    colo = yaml.safe_load(written["8b-colocate-zero3"]["grpo.yaml"].read_text())
    assert colo["vllm_mode"] == "colocate"
    assert colo["vllm_tensor_parallel_size"] == plans["8b-colocate-zero3"].topology.vllm_tensor_parallel_size


# -- accelerate.yaml -----------------------------------------------------------------------------

def _cluster(path):
    from accelerate.commands.config.config_args import ClusterConfig

    return ClusterConfig.from_yaml_file(str(path))


@pytest.mark.parametrize("name", list(PLANS))
def test_accelerate_yaml_loads_with_accelerates_config_class(plans, written, name):
    dp, files = plans[name], written[name]
    c = _cluster(files["accelerate.yaml"])
    t = dp.topology
    expected = {"ddp": "MULTI_GPU", "zero1": "DEEPSPEED", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED",
                "fsdp": "FSDP"}[t.engine] if t.world_size > 1 else "NO"
    assert c.distributed_type.value == expected
    assert c.compute_environment.value == "LOCAL_MACHINE"
    assert c.num_processes == t.world_size and c.num_machines == t.training_nodes
    if expected == "DEEPSPEED":
        assert c.mixed_precision is None  # accelerate refuses it beside a DeepSpeed config file
        # relative to the folder (it can be moved); launch.sh passes the full path
        assert c.deepspeed_config["deepspeed_config_file"] == "deepspeed.json"
        assert c.deepspeed_config["zero3_init_flag"] == (t.engine == "zero3")
    else:
        assert c.mixed_precision == "bf16"
    if expected == "FSDP":
        assert c.fsdp_config["fsdp_version"] == 2


def _launch_args(config_file):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py", "--config", "g.yaml"])
    return _validate_launch_command(args)


@pytest.mark.parametrize("name", ["32b-server-zero2", "8b-colocate-zero3"])
def test_accelerate_launch_builds_the_deepspeed_plugin(plans, written, name, monkeypatch):
    pytest.importorskip("deepspeed")
    monkeypatch.chdir(written[name]["accelerate.yaml"].parent)  # accelerate.yaml names deepspeed.json relatively
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, mp_from_config = _launch_args(written[name]["accelerate.yaml"])
    assert args.use_deepspeed and args.num_processes == plans[name].topology.world_size
    # what `accelerate launch` does before starting the DeepSpeed launcher (commands/launch.py)
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    for k, v in env.items():
        if k.startswith("ACCELERATE_"):
            monkeypatch.setenv(k, v)
    plugin = DeepSpeedPlugin()  # runs _deepspeed_config_checks and reads deepspeed.json
    assert plugin.zero_stage == int(plans[name].topology.engine[-1])
    assert plugin.hf_ds_config.config["zero_optimization"]["reduce_bucket_size"] == 500_000_000


def test_accelerate_launch_builds_the_fsdp_plugin(written, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _launch_args(written["32b-colocate-fsdp"]["accelerate.yaml"])
    assert args.use_fsdp and args.num_processes == 8
    env = prepare_multi_gpu_env(args)
    for k, v in env.items():
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert type(plugin.cpu_offload).__name__ == "OffloadPolicy"  # FSDP2's no-offload policy
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"


def test_accelerate_launch_accepts_the_ddp_config(plans, written):
    name = "32b-auto"
    if plans[name].accelerate["distributed_type"] != "MULTI_GPU":
        pytest.skip("auto did not pick DDP here")
    args, _, _ = _launch_args(written[name]["accelerate.yaml"])
    assert args.multi_gpu and args.mixed_precision == "bf16"


# -- deepspeed.json ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["32b-server-zero2", "8b-colocate-zero3", "8b-two-nodes-zero2"])
def test_deepspeed_json_loads_with_deepspeeds_config(plans, written, name, tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    dp, files = plans[name], written[name]
    raw = json.loads(files["deepspeed.json"].read_text())
    stage = int(dp.topology.engine[-1])
    zero = DeepSpeedZeroConfig(**raw["zero_optimization"])  # pydantic: unknown keys / bad values raise
    assert zero.stage == stage and zero.reduce_bucket_size == DEEPSPEED_DEFAULTS["reduce_bucket_size"]
    assert zero.offload_optimizer.device == "none"
    if stage == 3:
        assert zero.prefetch_bucket_size == DEEPSPEED_DEFAULTS["stage3_prefetch_bucket_size"]
        assert zero.param_persistence_threshold == DEEPSPEED_DEFAULTS["stage3_param_persistence_threshold"]
    else:
        assert zero.allgather_bucket_size == DEEPSPEED_DEFAULTS["allgather_bucket_size"]
    # the "auto" values, filled from the GRPOConfig as the HF Trainer does, then DeepSpeed's own config
    args = _parse_grpo(files["grpo.yaml"], tmp_path)
    hf = HfTrainerDeepSpeedConfig(str(files["deepspeed.json"]))
    hf.trainer_config_process(args)

    class _Model:  # trainer_config_finalize reads hidden_size only for hidden-size "auto" keys (none here)
        class config:
            hidden_size = dp.model.hidden_size

    hf.trainer_config_finalize(args, _Model, 100)
    ds = DeepSpeedConfig(hf.config)
    assert ds.zero_optimization_stage == stage
    assert ds.bfloat16_config.enabled is True
    assert ds.train_micro_batch_size_per_gpu == dp.config["per_device_train_batch_size"]
    assert ds.gradient_accumulation_steps == dp.config["gradient_accumulation_steps"]


# -- the shell scripts ---------------------------------------------------------------------------

def _stub_bin(tmp_path: Path) -> Path:
    """`trl` and `accelerate` stand-ins that print their argv and CUDA_VISIBLE_DEVICES as JSON."""
    if (tmp_path / "bin").is_dir():
        return tmp_path / "bin"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("trl", "accelerate"):
        stub = bindir / name
        stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        "print(json.dumps({'argv': sys.argv[1:], 'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}))\n")
        stub.chmod(0o755)
    return bindir


def _run(script: Path, tmp_path: Path, **env) -> dict:
    full = dict(os.environ, PATH=f"{_stub_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}", TRAIN_SCRIPT="train.py")
    full.pop("CUDA_VISIBLE_DEVICES", None)
    full.update(env)
    out = subprocess.run([BASH, str(script)], capture_output=True, text=True, env=full, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("name", ["32b-server-zero2", "32b-auto"])
def test_vllm_serve_sh_parses_with_trl_vllm_serve(plans, written, name, tmp_path):
    from trl.scripts.vllm_serve import build_command, make_parser

    dp = plans[name]
    if dp.server is None:
        pytest.skip("colocated plan")
    script = written[name]["vllm_serve.sh"]
    subprocess.run([BASH, "-n", str(script)], check=True)
    got = _run(script, tmp_path)
    assert got["argv"][0] == "vllm-serve" and got["cuda"] == dp.topology.server_devices
    (sa,) = make_parser().parse_args_and_config(args=got["argv"][1:])  # fails on an unknown flag
    s = dp.server
    assert (sa.model, sa.tensor_parallel_size, sa.data_parallel_size) == (s["model"], s["tensor_parallel_size"],
                                                                         s["data_parallel_size"])
    assert sa.gpu_memory_utilization == s["gpu_memory_utilization"] and sa.max_model_len == s["max_model_len"]
    assert sa.port == dp.config["vllm_server_port"]
    cmd = build_command(sa)  # the `vllm serve` line trl would exec
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == str(s["tensor_parallel_size"])
    assert len(got["cuda"].split(",")) == s["tensor_parallel_size"] * s["data_parallel_size"]


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("name", list(PLANS))
def test_launch_sh_parses_with_accelerate_launch(plans, written, name, tmp_path):
    from accelerate.commands.launch import launch_command_parser

    dp, files = plans[name], written[name]
    script = files["launch.sh"]
    subprocess.run([BASH, "-n", str(script)], check=True)
    env = {"NODE_RANK": "1", "MAIN_PROCESS_IP": "10.0.0.2"} if dp.topology.training_nodes > 1 else {}
    got = _run(script, tmp_path, **env)
    assert got["argv"][0] == "launch" and got["cuda"] == dp.topology.training_devices
    args = launch_command_parser().parse_args(got["argv"][1:])
    assert Path(args.config_file) == files["accelerate.yaml"]
    if "deepspeed.json" in files:  # the full path on the command line wins over accelerate.yaml's relative one
        assert Path(args.deepspeed_config_file) == files["deepspeed.json"]
    assert args.training_script == "train.py"
    rest = args.training_script_args
    assert Path(rest[rest.index("--config") + 1]) == files["grpo.yaml"]
    if dp.topology.training_nodes > 1:
        assert (args.machine_rank, args.main_process_ip) == (1, "10.0.0.2")
    if dp.server is not None:  # server and trainers on disjoint GPUs
        assert set(dp.topology.server_devices.split(",")).isdisjoint(got["cuda"].split(","))
    # the script arguments go through TRL's own GRPO script parser (model flags + --config)
    from trl.scripts.grpo import make_parser

    assert "--model_name_or_path" not in rest  # the model settings come from grpo.yaml, not the shell
    script_args = [a for a in rest]
    if CPU:
        script_args += ["--use_cpu", "true"]
    _, training_args, model_args, _ = make_parser().parse_args_and_config(args=script_args + ["--dataset_name", "x"])
    assert model_args.model_name_or_path == dp.model.model_id
    assert model_args.use_peft is True and model_args.lora_r == dp.setup.lora_rank
    assert training_args.per_device_train_batch_size == dp.config["per_device_train_batch_size"]


def test_to_yaml_round_trips():
    d = {"a": 1, "b": 0.5, "c": True, "d": None, "e": "x: y", "f": {"g": [1, 2], "h": {}}, "i": "all"}
    assert yaml.safe_load(to_yaml(d)) == d
