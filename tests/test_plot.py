"""plot_phases: a readable PNG of the per-phase memory."""

import pytest

pytest.importorskip("matplotlib")

from planner import plan  # noqa: E402
from planner.errors import InvalidSetupError  # noqa: E402
from planner.report.plot import plot_phases  # noqa: E402
from planner.search.estimation import estimate  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def colocated_estimate(**kw):
    return estimate("Qwen/Qwen2.5-0.5B-Instruct", "L4", batch_size=4, prompt_length=128, completion_length=256,
                    vllm_gpu_memory_utilization=0.5, vllm_max_model_len=384, steps_per_generation=2, **kw)


def read_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    return imread(path)


def test_plot_of_a_plan_is_a_png(tmp_path):
    p = plan("Qwen/Qwen2.5-7B-Instruct", "L40S", max_completion_length=1024)
    out = plot_phases(p, tmp_path / "memory.png")
    assert out == tmp_path / "memory.png"
    image = read_png(out)
    height, width = image.shape[:2]
    assert width > 600 and height > 400


def test_plot_of_an_estimate_with_sleep_mode_and_a_live_card(tmp_path):
    from dataclasses import replace

    from planner.specs.gpu import resolve_gpu

    live = replace(resolve_gpu("L4"), free_bytes=18 * 2**30, other_process_bytes=4 * 2**30)
    e = estimate("Qwen/Qwen2.5-0.5B-Instruct", live, batch_size=4, prompt_length=128, completion_length=256,
                 vllm_gpu_memory_utilization=0.5, vllm_max_model_len=384, sleep_mode=True)
    read_png(plot_phases(e, tmp_path / "sleep.png", margin=0.1))


def test_plot_needs_colocated_phases(tmp_path):
    e = estimate("Qwen/Qwen2.5-0.5B-Instruct", "L4")  # no vLLM: the trainer alone
    with pytest.raises(InvalidSetupError, match=r"^nothing to plot: the estimate has no colocated phases"):
        plot_phases(e, tmp_path / "x.png")


def test_legend_names_are_human_and_the_title_names_the_config():
    from planner.report.plot import _grouped, config_line, human_name

    assert human_name("trainer.optimizer_state") == "trainer: optimizer state"
    assert human_name("vllm.kv_cache") == "vLLM: KV cache"
    assert human_name("trainer.something_new") == "trainer: something new"
    p = plan("Qwen/Qwen2.5-7B-Instruct", "L40S", max_completion_length=1024)
    c = p.config
    line = config_line(p)
    assert f"batch {c['per_device_train_batch_size']} x {c['gradient_accumulation_steps']} steps" in line
    assert f"{c['generation_batch_size']} completions/step" in line and f"completion {c['max_completion_length']}" in line
    # small components are summed per side, nothing is lost
    comps = p.training_rank.phases[-1].components
    small = {k for k, v in comps.items() if v < 2**30}
    grouped = _grouped(comps, small)
    assert sum(grouped.values()) == sum(max(0, v) for v in comps.values())
    assert not small & set(grouped)


def test_the_budget_line_follows_the_margin():
    from planner.report.plot import budget_margin
    from planner.search.margins import MEMORY_MODEL_MARGIN

    # an estimate keeps no margin: the line is drawn at its memory model's band
    assert budget_margin(colocated_estimate()) == MEMORY_MODEL_MARGIN["analytic"]  # no profile for an L4
    calibrated = estimate("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", batch_size=4, vllm_gpu_memory_utilization=0.5)
    assert calibrated.memory_model.startswith("calibrated")
    assert budget_margin(calibrated) == MEMORY_MODEL_MARGIN["calibrated"]
    # a plan's own margin, whatever it is
    assert budget_margin(plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", margin=0.1)) == 0.1
