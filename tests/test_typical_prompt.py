"""The prompt length a batch pads to (``typical_prompt_length``) beside TRL's bound (``max_prompt_length``):
the trainer is planned at the first, vLLM at the second, and the plan says which it used."""

import pytest

import planner
from planner.errors import InvalidSetupError

QWEN7 = "Qwen/Qwen2.5-7B-Instruct"


def test_the_trainer_plans_at_the_typical_length_and_vllm_at_the_bound():
    kw = dict(weights="nf4", max_prompt_length=2048, max_completion_length=1024)
    bound = planner.plan(QWEN7, "L4", **kw)
    typical = planner.plan(QWEN7, "L4", typical_prompt_length=300, **kw)
    assert bound.setup.prompt_length == 2048 and typical.setup.prompt_length == 300
    # vLLM's length and the pinned bound are held either way
    assert bound.config["vllm_max_model_length"] == typical.config["vllm_max_model_length"] == 2048 + 1024
    assert typical.pin_value("max_prompt_length") == 2048
    # shorter padded batches leave room for more completions per micro-batch
    assert typical.config["per_device_train_batch_size"] > bound.config["per_device_train_batch_size"]
    assert bound.assumptions["trained_prompt_length"]["value"] == 2048
    assert bound.assumptions["trained_prompt_length"]["source"] == "default"
    assert typical.assumptions["trained_prompt_length"]["value"] == 300
    assert typical.assumptions["trained_prompt_length"]["source"] == "option"


def test_a_typical_length_beyond_the_bound_is_one_line():
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(QWEN7, "H100-80GB", max_prompt_length=256, typical_prompt_length=300)
    assert str(e.value) == ("typical_prompt_length=300 is longer than the longest prompt (256 tokens, "
                            "max_prompt_length): a batch pads to its longest prompt, never beyond it")
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(QWEN7, "H100-80GB", typical_prompt_length=0)
    assert str(e.value) == "typical_prompt_length must be a positive integer, got 0"


def test_the_estimate_trains_and_generates_at_the_typical_length():
    kw = dict(per_device_train_batch_size=8, steps_per_generation=8, max_prompt_length=2048, use_vllm=False,
              calibration=None)
    bound = planner.estimate(QWEN7, "H100-80GB", **kw)
    typical = planner.estimate(QWEN7, "H100-80GB", typical_prompt_length=300, **kw)
    assert typical.setup.prompt_length == 300 and bound.setup.prompt_length == 2048
    assert typical.phases["generation"].components["generate.kv_cache"] * (2048 + 512) == \
        bound.phases["generation"].components["generate.kv_cache"] * (300 + 512)
    assert typical.to_dict()["assumptions"]["trained_prompt_length"]["value"] == 300
    assert "trained_prompt_length" not in bound.to_dict().get("assumptions", {})
