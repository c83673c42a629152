"""The step time in plans and estimates (planner.search.timing): JSON, text and the two inputs."""

import json

import pytest

import planner
from planner.cli import main
from planner.errors import InvalidSetupError

MODEL, GPU = "Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB"


@pytest.fixture(scope="module")
def plan():
    return planner.plan(MODEL, GPU)


def test_plan_json_carries_the_step_time(plan):
    t = plan.to_dict()["time"]
    assert t["step_seconds"] == pytest.approx(sum(t["phases"].values()), abs=0.01)
    assert {"generation", "logprob", "training", "optimizer", "weight_sync"} <= set(t["phases"])
    assert t["completions_per_hour"] == pytest.approx(t["completions_per_step"] * 3600 / t["step_seconds"], rel=1e-3)
    assert t["completions_per_step"] == plan.option.completions
    assert any("cap" in a for a in t["assumptions"])


def test_shorter_completions_and_slower_rewards_move_the_time(plan):
    base = plan.step_time()
    short = planner.plan(MODEL, GPU, expected_completion_length=64).step_time()
    assert short.phases["generation"] < base.phases["generation"] and short.step_seconds < base.step_seconds
    slow = planner.plan(MODEL, GPU, reward_seconds_per_completion=0.5).step_time()
    assert slow.phases["reward"] == pytest.approx(0.5 * plan.option.completions_per_device)


def test_bad_time_inputs_are_one_line_each():
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(MODEL, GPU, expected_completion_length=0, reward_seconds_per_completion=-1)
    lines = str(e.value).splitlines()
    assert any("expected" in x for x in lines) and any("reward_seconds_per_completion" in x for x in lines)


def test_estimate_and_cli_show_the_time(capsys):
    e = planner.estimate(MODEL, GPU, vllm_gpu_memory_utilization=0.3, per_device_train_batch_size=4)
    assert e.to_dict()["time"]["completions_per_step"] == 4
    assert planner.estimate(MODEL, GPU).to_dict().get("time") is None  # no vLLM: no generation modelled
    assert main(["estimate", "--model", MODEL, "--gpu", GPU, "--vllm-gpu-memory-utilization", "0.3", "--json",
                 "--expected-completion-length", "100"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert "100 tokens" in d["time"]["assumptions"][0]
    main(["--model", MODEL, "--gpu", GPU])
    assert "s per optimizer step (" in capsys.readouterr().out


def test_unsloth_plan_shares_weights():
    t = planner.plan("Qwen/Qwen2.5-3B-Instruct", "T4", runtime="unsloth").step_time()
    assert t.phases["weight_sync"] == 0 and t.phases["sleep_wake"] == 0 and t.phases["generation"] > 0


def test_time_decides_only_beyond_the_tolerance():
    from planner.search.objective import Candidate, ranked, why_lost

    fast = Candidate(512, 64, 1, 8, 0.5, False, step_seconds=100.0)
    big_slow = Candidate(512, 64, 1, 16, 0.5, False, step_seconds=110.0)  # larger micro-batch, 10% slower
    big_close = Candidate(512, 64, 1, 16, 0.5, False, step_seconds=101.0)  # larger micro-batch, within 2%
    keys = [k for _, _, k in ranked([fast, big_slow])]
    assert keys[0] > keys[1] and why_lost(keys[0], keys[1]).startswith("slower")
    keys = [k for _, _, k in ranked([fast, big_close])]
    assert keys[1] > keys[0] and why_lost(keys[1], keys[0]) == "a smaller micro-batch"
    # times are computed lazily, only where they can decide: a candidate with fewer completions loses first
    fewer = Candidate(512, 32, 1, 8, 0.5, False)
    (_, c0, k0), (_, c1, k1) = ranked([fast, fewer], [lambda: 1.0, lambda: 1.0])
    assert c0.step_seconds == 1.0 and c1.step_seconds == 0 and k0 > k1
    assert [i for i, _, _ in ranked([fast, fewer], contenders_only=True)] == [0]


def test_plan_top_lists_runners_up(capsys):
    assert main(["--model", MODEL, "--gpu", GPU, "--top", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runners_up"]
    assert 2 <= len(rows) <= 4 and rows[0]["why_lost"] == "chosen"
    assert all(r["why_lost"] != "chosen" and r["step_seconds"] > 0 and r["peak_bytes"] > 0 for r in rows[1:])
    assert main(["--model", MODEL, "--gpu", GPU, "--top", "2"]) == 0
    assert "runners-up" in capsys.readouterr().out


def test_unsloth_estimate_json_carries_the_time(capsys):
    assert main(["estimate", "--runtime", "unsloth", "--model", "Qwen/Qwen2.5-3B-Instruct", "--gpu", "T4",
                 "--max-seq-length", "1024", "--json", "--expected-completion-length", "200"]) == 0
    t = json.loads(capsys.readouterr().out)["time"]
    assert t["phases"]["weight_sync"] == 0 and t["step_seconds"] > 0 and "200 tokens" in t["assumptions"][0]


def test_generation_without_vllm_is_timed_as_transformers_generate(capsys):
    from planner.timing import phases as ph

    p = planner.plan(MODEL, "L4", use_vllm=False)
    t = p.to_dict()["time"]
    assert p.to_dict()["config"]["use_vllm"] is False
    # no weight sync, no sleep, no old-policy pass (TRL computes it for vLLM's importance sampling only)
    assert t["phases"]["weight_sync"] == 0 and t["phases"]["sleep_wake"] == 0 and t["phases"]["logprob"] == 0
    # the whole generation batch in one generate call: at least the host's launches per token step
    host = p.setup.completion_length * (p.model.num_layers * ph.GENERATE_SECONDS_PER_LAYER
                                        + ph.GENERATE_SECONDS_PER_STEP)
    assert t["phases"]["generation"] >= host
    # more sequences in the batch cost more (the cache read per token step grows with the batch)
    fewer = planner.plan(MODEL, "L4", use_vllm=False, max_completions_per_step=64).step_time()
    assert 0 < fewer.phases["generation"] < t["phases"]["generation"]
    # plan estimate --no-vllm: the B x steps_per_generation batch, per optimizer step
    assert main(["estimate", "--model", MODEL, "--gpu", "L4", "--no-vllm", "--json",
                 "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "2"]) == 0
    e = json.loads(capsys.readouterr().out)["time"]
    assert e["completions_per_step"] == 8 and e["phases"]["generation"] > 0 and e["phases"]["logprob"] == 0


def _top(capsys, *argv: str) -> dict:
    assert main(["--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "A100-40GB", "--prompt-length", "128",
                 "--max-completion-length", "256", "--top", "8", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_time_decides_how_a_fixed_batch_runs_not_the_batch(capsys):
    """The objective's design (planner.search.objective): the completions per step are fixed before
    time; time then picks how they run. Qwen2.5-7B on an A100-40GB, prompt 128, completion 256, 32
    completions per step (plan --top 5): without time the larger micro-batch with sleep mode would win;
    sleep's wake-up costs more than 2% of this short step, so the plan runs micro-batch 8 without it."""
    from planner.search.objective import Candidate, score

    d = _top(capsys, "--generation-batch-size", "32")
    rows = d["runners_up"]
    chosen = rows[0]
    assert (chosen["completions_per_step"], chosen["micro_batch"], chosen["sleep"]) == (32, 8, False)
    slept = [r for r in rows if r["sleep"] and r["micro_batch"] > chosen["micro_batch"]]
    assert slept and all(r["why_lost"].startswith("slower") for r in slept)
    assert all(r["step_seconds"] > chosen["step_seconds"] * 1.02 for r in slept)
    # the order without time (score) prefers the sleeping, larger micro-batch: time decided
    cands = [Candidate(256, 32, 1, r["micro_batch"], r["utilization"], r["sleep"]) for r in (chosen, slept[0])]
    assert score(cands[1]) > score(cands[0])
    assert "never traded" in d["objective"][1] and "seconds per optimizer step" in d["objective"][3]
    # with the batch left to the solver, more completions per step win even where a smaller batch's
    # step is shorter: the effective batch is never traded for speed
    rows = _top(capsys, "--max-batch", "16", "--max-completions-per-step", "16")["runners_up"]
    fewer = [r for r in rows if r["completions_per_step"] < rows[0]["completions_per_step"]]
    assert fewer and all(r["why_lost"].startswith("fewer completions") for r in fewer)
    assert all(r["step_seconds"] < rows[0]["step_seconds"] for r in fewer)


@pytest.mark.parametrize("release, use_vllm, accumulation, steps, runs", [
    ("0.17.0", True, 4, 4, False),  # num_iterations > 1 only
    ("0.18.0", True, 4, 8, True), ("0.18.0", True, 8, 4, False),  # steps_per_generation > accumulation
    ("0.22.0", True, 4, 4, False), ("0.22.0", True, 6, 4, True),  # accumulation not a multiple
    ("0.23.0", True, 4, 4, True), ("1.16.0", True, 4, 4, True),  # vLLM's importance sampling
    ("1.16.0", False, 4, 4, False), ("1.16.0", False, 6, 4, True),
])
def test_the_old_policy_pass_per_trl_release(release, use_vllm, accumulation, steps, runs):
    from planner.specs.versions import trl_old_logprob_pass

    assert trl_old_logprob_pass(release, use_vllm, accumulation, steps) is runs


def test_old_pass_and_liger_head_in_plans_and_estimates(capsys):
    def phases(*argv: str) -> dict:
        assert main(["--model", MODEL, "--gpu", GPU, "--json", *argv]) == 0
        return json.loads(capsys.readouterr().out)["time"]["phases"]

    new, old = phases("--trl-version", "1.16.0"), phases("--trl-version", "0.22.0")
    assert new["logprob"] > 0 and old["logprob"] == 0  # importance sampling's pass from TRL 0.23.0
    # TRL 1.13's Liger loss: the head over the completion tokens, recomputed, its gradient matmul in fp32
    liger = phases("--trl-version", "1.13.0", "--use-liger-kernel")
    plain = phases("--trl-version", "1.13.0")
    assert liger["training"] > plain["training"] and liger["generation"] == plain["generation"]
    # TRL 1.15 on: use_liger_kernel keeps the fused head, no change in time
    assert phases("--trl-version", "1.16.0", "--use-liger-kernel")["training"] == new["training"]
    for release, pass_ in (("0.22.0", False), ("1.16.0", True)):
        assert main(["estimate", "--model", MODEL, "--gpu", GPU, "--vllm-gpu-memory-utilization", "0.3",
                     "--trl-version", release, "--json"]) == 0
        assert (json.loads(capsys.readouterr().out)["time"]["phases"]["logprob"] > 0) is pass_


def _config_time(capsys, tmp_path, text: str, *argv: str) -> dict:
    path = tmp_path / "grpo.yaml"
    path.write_text(f"model_name_or_path: {MODEL}\nbf16: true\nnum_generations: 8\n" + text)
    assert main(["estimate", "--config", str(path), "--gpu", GPU, "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)["time"]


def test_estimate_from_a_trl_config_carries_the_time(capsys, tmp_path):
    # the plan's own config file, read back: the same step time as the plan
    assert main(["--model", MODEL, "--gpu", GPU, "--output", str(tmp_path / "grpo.yaml"), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)["time"]
    assert main(["estimate", "--config", str(tmp_path / "grpo.yaml"), "--gpu", GPU, "--json"]) == 0
    read = json.loads(capsys.readouterr().out)["time"]
    assert read["step_seconds"] == planned["step_seconds"] and read["phases"] == planned["phases"]
    # no max_completion_length in the file: TRL's default cap, the expected length unless given
    vllm = "use_vllm: true\nvllm_mode: colocate\nper_device_train_batch_size: 8\n"
    t = _config_time(capsys, tmp_path, vllm)
    assert t["assumptions"][0].startswith("completions 512 tokens: the cap")
    short = _config_time(capsys, tmp_path, vllm, "--expected-completion-length", "100")
    assert "100 tokens: given" in short["assumptions"][0] and short["step_seconds"] < t["step_seconds"]
    # without vLLM: transformers' generate of the generation batch (TRL's rule: generation_batch_size /
    # per-device batch = 8 steps per generation), every 8 micro-steps: half a generation per optimizer
    # step of 4; the old policy's pass runs (4 is not a multiple of 8)
    gen = "use_vllm: false\nper_device_train_batch_size: 8\nmax_completion_length: 256\n"
    half = _config_time(capsys, tmp_path, gen + "gradient_accumulation_steps: 4\ngeneration_batch_size: 64\n")
    whole = _config_time(capsys, tmp_path, gen + "gradient_accumulation_steps: 8\ngeneration_batch_size: 64\n")
    assert half["completions_per_step"] == 32 and whole["completions_per_step"] == 64
    assert half["phases"]["generation"] == pytest.approx(whole["phases"]["generation"] / 2, rel=0.01)
    assert half["phases"]["logprob"] > 0 and whole["phases"]["logprob"] == 0
