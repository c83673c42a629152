"""Plans of one fixed setup (no search), for the tests of what reads a plan: checks, hand-off, YAML."""

from dataclasses import replace

from planner import estimate_layout
from planner.search.results import Plan


def fixed_plan(gpu="L4", *, weights="bf16", finetune="lora", targets=None, rank=16, optim="adamw_8bit", B=4, S=2,
               G=8, P=128, C=256, util=0.5, sleep=False, **config) -> Plan:
    """Qwen2.5-0.5B-Instruct on ``gpu`` as given (``planner.estimate_layout`` on one GPU), with the
    GRPOConfig keys ``config`` overrides. vLLM 0.27: the newest release with bitsandbytes, so nf4
    trainer weights can be modelled. int8 cannot be planned (TRL refuses it with vLLM): its plan is
    an nf4 one relabelled, for the checks that must refuse it."""
    p = estimate_layout("Qwen/Qwen2.5-0.5B-Instruct", gpu, 1, weights="nf4" if weights == "int8" else weights,
                        finetune=finetune, lora_rank=rank, lora_target_modules=targets, optim=optim, batch_size=B,
                        steps_per_generation=S, num_generations=max(G, 2), prompt_length=P, completion_length=C,
                        vllm_gpu_memory_utilization=util, sleep_mode=sleep, vllm_version="0.27.0")
    cfg = dict(per_device_train_batch_size=B, gradient_accumulation_steps=S, steps_per_generation=S,
               num_generations=G, max_completion_length=C, use_vllm=True, vllm_mode="colocate",
               vllm_gpu_memory_utilization=util, vllm_max_model_length=P + C, vllm_enable_sleep_mode=sleep,
               vllm_tensor_parallel_size=1, gradient_checkpointing=True, bf16=p.gpu.bf16, optim=optim)
    cfg.update(config)
    return replace(p, config=cfg, setup=replace(p.setup, weights=weights), checks=())
