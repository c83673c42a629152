"""planner.MemoryCallback on the real trl.GRPOTrainer (CPU, a random 2-layer Llama, two optimizer steps
of two micro-batches each), with a scripted stats source: the record has every moment, the warning
fires once, the record round-trips through `plan compare`, and each moment's prediction is the plan's
moments (a TRL plan, an Unsloth plan, a plan without vLLM: three callbacks on one training run)."""

import json
import warnings

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from plans import fixed_plan  # noqa: E402

import planner  # noqa: E402
from planner.cli import main  # noqa: E402
from planner.profiler.run_record import MOMENT_PLAN_KEYS, MOMENTS, moment_predictions, predicted_moments  # noqa: E402

GIB = 2**30
MIB = 2**20


class Scripted:
    """Allocator and device figures per moment (what the callback has open when it reads), so each
    moment's peaks are known: allocated < reserved < device used."""

    def __init__(self, peaks: dict[str, int]):
        self.peaks = peaks
        self.callback = None
        self.resets = 0

    def _peak(self) -> int:
        return self.peaks[self.callback.moment or "between_steps"]

    def allocated_bytes(self) -> int:
        return self._peak() - 200 * MIB

    def reserved_bytes(self) -> int:
        return self._peak()

    def device_used_bytes(self) -> int:
        return self._peak() + 500 * MIB

    def reset_peaks(self) -> None:
        self.resets += 1

    def device_name(self) -> str:
        return "NVIDIA L4"


def _plan():
    return fixed_plan("L4", B=2, S=2, G=2, P=16, C=4, optim="adamw_torch")


def _peaks(plan, over: str | None):
    """Every moment 1 GiB under its prediction; ``over`` 1 GiB above its prediction plus the margin."""
    predicted = predicted_moments(plan)
    margin = round(plan.margin * plan.gpu.total_bytes)
    peaks = {m: predicted[m] - GIB - 500 * MIB for m in MOMENTS}
    if over:
        peaks[over] = predicted[over] + margin + GIB - 500 * MIB
    return peaks


def _train(tmp_path, callbacks):
    from datasets import Dataset
    from test_handoff import length_reward, tiny_model_and_tokenizer
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer, words = tiny_model_and_tokenizer()
    prompts = [" ".join(words[(i + j) % len(words)] for j in range(3)) for i in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5: gradient_checkpointing's new name
        args = _config(GRPOConfig, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = GRPOTrainer(model=model, reward_funcs=length_reward, args=args,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                              callbacks=callbacks)
        trainer.train()
    return trainer, [w for w in caught if issubclass(w.category, planner.PlanExceededWarning)]


def _config(GRPOConfig, tmp_path):
    return GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                      num_generations=2, max_completion_length=4, max_steps=2, use_vllm=False, report_to=[],
                      logging_steps=1, save_strategy="no", optim="adamw_torch", use_cpu=True, bf16=False,
                      gradient_checkpointing=True)


def _unsloth_plan():
    return planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", runtime="unsloth", calibration=None)


def _no_vllm_plan():
    return planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", use_vllm=False, calibration=None)


def _callback(plan, over, output=None):
    stats = Scripted(_peaks(plan, over=over))
    cb = planner.MemoryCallback(plan, stats=stats, output=output)
    stats.callback = cb
    return cb


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real training run measured by three callbacks: the TRL plan's (optimizer_step scripted over
    its plan), an Unsloth plan's and a no-vLLM plan's (every moment within), each with its own record."""
    tmp = tmp_path_factory.mktemp("run")
    plan = _plan()
    cb = _callback(plan, "optimizer_step")
    others = {"unsloth": _unsloth_plan(), "no_vllm": _no_vllm_plan()}
    more = {k: _callback(p, None, tmp / f"{k}.json") for k, p in others.items()}
    trainer, caught = _train(tmp, [cb, *more.values()])
    return plan, cb, trainer, caught, tmp / "planner_memory_record.json", more


def test_the_record_has_every_moment_of_the_real_trainer(run):
    plan, cb, trainer, _, path, _ = run
    assert trainer.state.global_step == 2 and cb.path == path and path.is_file()
    record = json.loads(path.read_text())
    assert set(record["run"]["moments"]) == set(MOMENTS)
    # each step: its first micro-batch (generation), the second, the optimizer step, what follows
    assert [s["step"] for s in record["run"]["steps"]] == [1, 2]
    assert all(set(s["moments"]) == set(MOMENTS) - {"load"} for s in record["run"]["steps"])
    # the calibration rows: env, load, one step row per optimizer step, as data/calibration has them
    stages = [r["stage"] for r in record["models"][0]["rows"]]
    assert stages == ["env", "load", "step", "step"]
    step = record["models"][0]["rows"][2]
    # the micro-batch as the model saw it in training: 2 sequences, the prompt padded to the longest
    # (3 words), the completion (up to 4 tokens) the labelled tail
    assert (step["batch"], step["grad_ckpt"], step["shape_source"]) == (2, True, "observed")
    assert step["prompt_len"] == 3 and 1 <= step["completion_len"] <= 4
    peaks = cb.stats.peaks
    assert step["peak_reserved_step_mib"] == max(peaks[m] for m in MOMENTS[1:4]) / MIB
    assert step["peak_alloc_fwdbwd_mib"] == (max(peaks[m] for m in MOMENTS[1:3]) - 200 * MIB) / MIB
    # the device-level peak: the NVML reading at the moment's end, here 500 MiB over the reserved peak
    moment = record["run"]["moments"]["later_micro_batches"]
    assert moment["device_peak_bytes"] == moment["peak_reserved_bytes"] + 500 * MIB == moment["measured_bytes"]
    assert record["models"][0]["fits"] and record["gpu"]["name"] == plan.gpu.name == "L4"


def test_the_warning_fires_once_naming_the_moment(run):
    plan, cb, _, caught, path, _ = run
    assert len(caught) == 1 and cb.warned == "optimizer_step"
    message = str(caught[0].message)
    assert message.startswith("planner: optimizer_step peaked at ") and "over the plan's" in message
    assert " GiB (weight_sync (kept reserved)) plus its " in message  # the plan moment its prediction comes from
    comparison = json.loads(path.read_text())["run"]["comparison"]
    assert [m for m, c in comparison.items() if c["over_plan"]] == ["optimizer_step"]


def test_no_warning_when_every_moment_is_within_the_plan(tmp_path):
    # the hooks in the order Trainer._run_epoch calls them (one step of two micro-batches), no trainer;
    # the second process of a run: its own record, compared with the plan's training rank
    from types import SimpleNamespace

    plan = _plan()
    cb = _callback(plan, None, tmp_path / "r.json")
    args = SimpleNamespace(per_device_train_batch_size=2, max_completion_length=4, gradient_checkpointing=True,
                           optim="adamw_torch", output_dir=str(tmp_path), process_index=1)
    state = SimpleNamespace(global_step=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for hook in ("on_train_begin", "on_step_begin", "on_substep_end", "on_pre_optimizer_step",
                     "on_optimizer_step", "on_train_end"):
            getattr(cb, hook)(args, state, None)
    assert caught == [] and cb.warned is None and cb.path == tmp_path / "r.rank1.json"
    record = json.loads(cb.path.read_text())
    assert (record["run"]["plan"]["role"], record["run"]["plan"]["rank"]) == ("training_rank", 1)
    assert not any(c["over_plan"] for c in record["run"]["comparison"].values())
    # no model seen training: the step's shape is TRL's bounds and the plan's prompt length
    step = record["models"][0]["rows"][2]
    assert (step["batch"], step["prompt_len"], step["completion_len"], step["shape_source"]) == (2, 16, 4, "bounds")
    assert set(record["run"]["moments"]) == set(MOMENTS)


def test_the_record_round_trips_through_plan_compare(run, capsys):
    plan, cb, _, _, path, _ = run
    assert main(["compare", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["moment"] for m in out["moments"]] == list(MOMENTS)
    by = {m["moment"]: m for m in out["moments"]}
    assert by["optimizer_step"]["over_plan"] and not by["load"]["over_plan"]
    assert by["load"]["planned_bytes"] == plan.training_rank.phase("load").peak_bytes
    assert by["optimizer_step"]["set_by"] == "weight_sync (kept reserved)"
    assert by["optimizer_step"]["own_bytes"] == {"optimizer_step": plan.training_rank.rank.moments["optimizer_step"]
                                                 + sum(plan.training_rank.blocks["vllm_awake"].values())}
    assert out["over_plan"] == ["optimizer_step"] and (out["role"], out["rank"]) == ("training_rank", 0)
    assert main(["compare", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    # a row per moment: planned, the plan moment that sets it, the moment's own, measured; the last line
    # names the moment over the plan
    assert table[2].split()[:7] == ["moment", "planned", "(GiB)", "set", "by", "own", "(GiB)"]
    row = next(r for r in table if r.startswith("optimizer_step "))
    gib = by["optimizer_step"]
    assert row.split()[:5] == ["optimizer_step", f"{gib['planned_bytes'] / GIB:.2f}", "weight_sync", "(kept",
                               "reserved)"]
    assert row.split()[5] == f"{gib['own_bytes']['optimizer_step'] / GIB:.2f}" and row.endswith("OVER")
    assert table[-1].startswith(f"over the plan: optimizer_step ({gib['measured_bytes'] / GIB:.2f} GiB measured, "
                                f"planned {gib['planned_bytes'] / GIB:.2f} GiB + ")
    # reading a record back imports neither torch nor transformers
    import subprocess
    import sys

    code = (f"import sys; from planner.cli import main; assert main(['compare', {str(path)!r}]) == 0; "
            "print([m for m in ('torch', 'transformers', 'trl') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


def test_the_record_is_a_calibration_profile_for_the_next_plan(run, tmp_path, monkeypatch, capsys):
    from planner.memory.calibration import find_calibration

    plan, _, _, _, path, _ = run
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(tmp_path / "cal"))
    assert main(["compare", str(path), "--save-calibration"]) == 0
    saved = capsys.readouterr().out.strip().splitlines()[-1]
    assert saved.startswith("calibration profile written to ")
    cal = find_calibration(plan.model, plan.gpu)
    assert cal is not None and cal.path.startswith(str(tmp_path / "cal"))
    assert cal.fit_for("bf16", "lora", 16) is not None


def test_bad_records_are_one_line_per_problem(tmp_path, capsys):
    missing = tmp_path / "missing.json"
    assert main(["compare", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"plan: error: {missing}: no such file"
    other = tmp_path / "other.json"
    other.write_text('{"schema": 1}')
    assert main(["compare", str(other)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"plan: error: {other}: not a planner.MemoryCallback record (no 'run' block of kind "
        f"'planner.MemoryCallback')"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema": 1, "models": [], "run": {
        "kind": "planner.MemoryCallback", "version": 1, "plan": {"model": "m", "gpu": "L4", "margin": 0.04,
                                                                  "margin_bytes": "1", "gpu_total_bytes": 1,
                                                                  "moments": {}},
        "moments": {"load": {"peak_allocated_bytes": 1, "peak_reserved_bytes": None, "measured_bytes": 1}}}}))
    assert main(["compare", str(broken)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"plan: error: {broken}: 'run.plan.margin_bytes' must be a number"
    assert f"plan: error: {broken}: 'run.plan.moments.load' must be a number" in lines
    assert lines[-1] == f"plan: error: {broken}: 'run.moments.load.peak_reserved_bytes' must be a number"
    text = tmp_path / "text.json"
    text.write_text("not json")
    assert main(["compare", str(text)]) == 2
    assert capsys.readouterr().err.startswith(f"plan: error: {text}: not JSON (")


def _blocks(role) -> dict[str, int]:
    return {name: sum(parts.values()) for name, parts in role.blocks.items()}


def _own(record, moment) -> dict[str, int]:
    return record["run"]["plan"]["moment_sources"][moment]["own_bytes"]


def test_a_trl_plans_moments_are_its_step_moments_and_phases(run):
    plan, _, _, _, path, _ = run
    record = json.loads(path.read_text())
    role = plan.training_rank
    trainer, phases, blocks = role.rank.moments, {p.name: p.peak_bytes for p in role.phases}, _blocks(role)
    awake = blocks["vllm_awake"]  # no sleep mode: vLLM stays awake beside the training step
    assert record["run"]["plan"]["moments"] == predicted_moments(plan)
    # each callback moment's own plan moments: the trainer's step moments with vLLM beside them
    assert _own(record, "optimizer_step") == {"optimizer_step": trainer["optimizer_step"] + awake}
    assert _own(record, "later_micro_batches") == {m: trainer[m] + awake
                                                   for m in ("forward", "logprob_head", "backward", "clip_grad")}
    assert _own(record, "between_steps") == {"resident": blocks["resident"] + awake}
    first = _own(record, "generation_and_backward")
    assert first == {"weight_sync": phases["weight_sync"], "generation": phases["generation"],
                     **{m: trainer[m] + awake for m in ("forward", "logprob_head", "backward")}}
    # the planned (device-level) figure: the load phase, then the largest trainer pool so far in the step
    # (here the weight sync's: the previous step's pool plus the merge's transient) with vLLM beside it
    planned = record["run"]["plan"]["moments"]
    assert planned["load"] == phases["load"]
    assert planned["generation_and_backward"] == max(first.values()) == phases["weight_sync"] == plan.peak_bytes
    for m in ("later_micro_batches", "optimizer_step", "between_steps"):
        assert planned[m] == phases["weight_sync"]
        assert record["run"]["plan"]["moment_sources"][m]["set_by"] == "weight_sync (kept reserved)"
    assert record["run"]["plan"]["moment_sources"]["load"] == {"own_bytes": {"load": phases["load"]},
                                                                "set_by": "load", "fallback": None}
    assert tuple(MOMENT_PLAN_KEYS) == MOMENTS


def test_with_sleep_mode_the_step_has_vllm_asleep_beside_it():
    plan = fixed_plan("L4", B=2, S=2, G=2, P=16, C=4, optim="adamw_torch", sleep=True)
    role = plan.training_rank
    trainer, phases, blocks = role.rank.moments, {p.name: p.peak_bytes for p in role.phases}, _blocks(role)
    pred = moment_predictions(plan)
    asleep = blocks["vllm_asleep"]
    assert pred["optimizer_step"].own == {"optimizer_step": trainer["optimizer_step"] + asleep}
    assert pred["between_steps"].own == {"resident": blocks["resident"] + asleep}
    # TRL empties the cache before waking vLLM: generation starts from the resident state, and the
    # step's pool is the largest micro-batch moment (the training phase), kept through the step
    assert pred["generation_and_backward"].planned == phases["weight_sync"] > phases["training"]
    biggest = max(("forward", "logprob_head", "backward"), key=lambda m: trainer[m])
    assert pred["later_micro_batches"].planned == phases["training"] == trainer[biggest] + asleep
    assert pred["later_micro_batches"].set_by == biggest
    assert pred["optimizer_step"].planned == pred["between_steps"].planned == phases["training"]
    assert pred["optimizer_step"].set_by == f"{biggest} (kept reserved)"


def test_an_unsloth_plan_falls_back_to_its_phases_and_says_so(run, capsys):
    _, _, _, caught, _, more = run
    cb = more["unsloth"]
    record = json.loads(cb.path.read_text())
    phases = {p.name: p.peak_bytes for p in cb.plan.training_rank.phases}
    assert cb.plan.runtime == "unsloth" and not cb.plan.trainer.moments
    assert record["run"]["plan"]["moments"] == {
        "load": phases["load"], "generation_and_backward": max(phases["generation"], phases["training"]),
        "later_micro_batches": phases["training"], "optimizer_step": phases["training"],
        "between_steps": phases["training"]}
    comparison = record["run"]["comparison"]
    assert comparison["load"]["fallback"] is None
    assert comparison["optimizer_step"]["fallback"] == (
        "the unsloth runtime's plan models phases, not the trainer's moments: the training phase stands for "
        "this moment")
    assert not any(c["over_plan"] for c in comparison.values()) and cb.warned is None and len(caught) == 1
    # plan compare prints the fallback under the table, and that no moment was over
    assert main(["compare", str(cb.path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "optimizer_step: the unsloth runtime's plan models phases" in "\n".join(lines)
    assert lines[-1] == "every moment within the plan plus its margin"


def test_a_no_vllm_plans_moments_have_nothing_beside_the_trainer(run):
    _, _, _, _, _, more = run
    cb = more["no_vllm"]
    record = json.loads(cb.path.read_text())
    role = cb.plan.training_rank
    trainer, phases, blocks = role.rank.moments, {p.name: p.peak_bytes for p in role.phases}, _blocks(role)
    assert role.placement == "generate" and record["run"]["plan"]["moments"] == predicted_moments(cb.plan)
    assert _own(record, "optimizer_step") == {"optimizer_step": trainer["optimizer_step"]}
    assert _own(record, "between_steps") == {"resident": blocks["resident"]}
    # generation by transformers' generate (the generate phase) and the first micro-batch share a moment
    first = _own(record, "generation_and_backward")
    assert first == {"generation": phases["generation"], **{m: trainer[m] for m in ("forward", "logprob_head",
                                                                                      "backward")}}
    assert record["run"]["plan"]["moments"]["generation_and_backward"] == max(first.values()) == cb.plan.peak_bytes
    assert all(c["fallback"] is None for c in record["run"]["comparison"].values())


def test_a_multi_gpu_plan_predicts_from_the_training_ranks_sharded_moments():
    plan = planner.estimate_layout("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", 3, layout="server", engine="zero3",
                                   finetune="full", optim="adamw_torch", batch_size=2, steps_per_generation=2,
                                   num_generations=4, prompt_length=64, completion_length=64, calibration=None)
    role = plan.training_rank
    assert plan.topology.world_size == 2 and role.placement == "none"
    pred = moment_predictions(plan)
    # ZeRO-3's rank: its own optimizer-step moment (the step's temporaries sharded), not one process's
    assert pred["optimizer_step"].own == {"optimizer_step": role.rank.moments["optimizer_step"]}
    assert role.rank.moments["optimizer_step"] != plan.trainer.moments["optimizer_step"]
    # no vLLM on a training rank of a server layout: the weight sync is in the first micro-batch's moment
    assert set(pred["generation_and_backward"].own) == {"weight_sync", "forward", "logprob_head", "backward"}
    with pytest.raises(planner.PlannerError, match="^role 'server_gpu' runs vLLM's server, no trainer"):
        moment_predictions(plan, "server_gpu")
    with pytest.raises(planner.PlannerError, match="^the plan has no role 'x'"):
        moment_predictions(plan, "x")


def test_import_planner_stays_torch_free_and_a_non_plan_is_refused():
    import subprocess
    import sys

    code = ("import sys, planner; planner.__all__; "
            "print([m for m in ('torch', 'transformers', 'trl') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    with pytest.raises(planner.PlannerError, match="^MemoryCallback needs a planner.Plan"):
        planner.MemoryCallback({"phases": {}})


def test_the_record_calibrates_a_plan_from_python(run):
    from planner.profiler.run_record import record_calibration

    plan, _, _, _, path, _ = run
    cal = record_calibration(path)
    est = planner.estimate(plan.model.model_id, "L4", calibration=cal, per_device_train_batch_size=2,
                           max_prompt_length=16, max_completion_length=4)
    assert est.memory_model == cal.label and cal.label.startswith("calibrated (L4, trl ")
    analytic = planner.estimate(plan.model.model_id, "L4", calibration=None, per_device_train_batch_size=2,
                                max_prompt_length=16, max_completion_length=4)
    assert est.trainer.components["activations"] != analytic.trainer.components["activations"]


def test_a_record_without_a_steady_step_cannot_calibrate(run, tmp_path, capsys):
    plan, _, _, _, path, _ = run
    data = json.loads(path.read_text())
    data["models"][0]["fits"] = []
    one_step = tmp_path / "one.json"
    one_step.write_text(json.dumps(data))
    assert main(["compare", str(one_step), "--save-calibration"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"plan: error: {one_step}: no steady training step to calibrate from (the first step, which creates the "
        f"optimizer state, is left out: record at least 2 optimizer steps)")


def test_the_default_stats_need_cuda(tmp_path):
    from types import SimpleNamespace

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    cb = planner.MemoryCallback(_plan())
    with pytest.raises(planner.PlannerError, match="^MemoryCallback: no CUDA device visible to torch"):
        cb.on_train_begin(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=0), None)


def test_the_default_stats_read_torch_cuda_and_this_process_in_nvml(monkeypatch):
    import os
    import sys
    from types import SimpleNamespace

    import torch

    from planner.profiler.callback import CudaStats

    peaks = {"reserved": 5 * GIB, "allocated": 4 * GIB}
    for name, value in {"is_available": lambda: True, "current_device": lambda: 0,
                        "max_memory_reserved": lambda d: peaks["reserved"],
                        "max_memory_allocated": lambda d: peaks["allocated"],
                        "reset_peak_memory_stats": lambda d: peaks.update(reserved=3 * GIB, allocated=2 * GIB),
                        "mem_get_info": lambda d: (10 * GIB, 80 * GIB)}.items():
        monkeypatch.setattr(torch.cuda, name, value, raising=False)
    processes = [SimpleNamespace(pid=1, usedGpuMemory=9 * GIB), SimpleNamespace(pid=os.getpid(), usedGpuMemory=6 * GIB)]
    nvml = SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: "h",
                           nvmlDeviceGetComputeRunningProcesses=lambda h: processes)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    stats = CudaStats()
    assert stats.source == "nvml_process" and stats.device_used_bytes() == 6 * GIB  # this process, not pid 1's
    assert (stats.reserved_bytes(), stats.allocated_bytes()) == (5 * GIB, 4 * GIB)
    stats.reset_peaks()
    assert (stats.reserved_bytes(), stats.allocated_bytes()) == (3 * GIB, 2 * GIB)
    processes.pop()  # a container that hides this PID from the driver: the device-wide figure
    assert CudaStats().source == "device_wide" and CudaStats().device_used_bytes() == 70 * GIB


def test_a_plan_without_the_trainers_moments_falls_back_to_its_phases():
    from dataclasses import replace

    plan = _plan()
    rank = replace(plan.training_rank.rank, moment_components={})
    bare = replace(plan, roles={"training_rank": replace(plan.training_rank, rank=rank)},
                   trainer=replace(plan.trainer, moment_components={}))
    pred = moment_predictions(bare)
    phases = {p.name: p.peak_bytes for p in plan.training_rank.phases}
    assert {m: p.planned for m, p in pred.items()} == {
        "load": phases["load"], "generation_and_backward": phases["weight_sync"],
        "later_micro_batches": phases["training"], "optimizer_step": phases["training"],
        "between_steps": phases["training"]}
    assert pred["optimizer_step"].fallback == ("the plan has no moments of the trainer's step: the training phase "
                                               "stands for this moment")
