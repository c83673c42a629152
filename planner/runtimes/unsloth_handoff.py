"""Hand-off for the Unsloth runtime: build Unsloth's model and TRL's GRPOTrainer from a plan for it
(planner.search.results.Plan with ``runtime == "unsloth"``).

    trainer = planner.train("meta-llama/Llama-3.1-8B-Instruct", [reward], ds, gpu="T4", runtime="unsloth",
                            plan_kwargs={"weights": "nf4", "lora_rank": 32, "max_seq_length": 1024})

The environment variables are set before ``unsloth`` is imported (it reads UNSLOTH_VLLM_STANDBY at
import), and ``unsloth`` is imported before ``trl`` (it patches GRPOTrainer). Needs a GPU, unsloth,
vLLM and TRL; imports are inside the function.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..errors import MissingDependencyError

DEFAULT_OUTPUT_DIR = "grpo-output"


def train_unsloth(model: str, reward_funcs: Any, train_dataset: Any, plan: Any, *, dry_run: bool = False,
                  **overrides: Any) -> Any:
    """Load with Unsloth as ``plan`` says (planned and checked by planner.api.train), build GRPOTrainer,
    train, return it.

    ``model``: the Hub id or path from_pretrained loads. ``overrides``: GRPOConfig fields, applied
    last. ``dry_run=True`` returns the trainer untrained."""
    kw = plan.runtime_details.kwargs(plan.config)  # from_pretrained, get_peft_model, grpo_config, env
    os.environ.update(kw["env"])
    try:
        unsloth = importlib.import_module("unsloth")  # before trl: it patches GRPOTrainer
        trl = importlib.import_module("trl")
    except ImportError as e:
        raise MissingDependencyError(f"planner.train(runtime='unsloth') needs {e.name}: pip install unsloth "
                                     "vllm (on a CUDA machine)") from None
    fp = dict(kw["from_pretrained"], model_name=model)
    loaded, tokenizer = unsloth.FastLanguageModel.from_pretrained(**fp)
    peft_model = unsloth.FastLanguageModel.get_peft_model(loaded, **kw["get_peft_model"])
    config = trl.GRPOConfig(**{"output_dir": DEFAULT_OUTPUT_DIR, **kw["grpo_config"], **overrides})
    trainer = trl.GRPOTrainer(model=peft_model, processing_class=tokenizer, reward_funcs=reward_funcs, args=config,
                              train_dataset=train_dataset)
    if not dry_run:
        trainer.train()
    return trainer
