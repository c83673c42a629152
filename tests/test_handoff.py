"""Hand-off to TRL: real GRPOConfig / LoraConfig / from_pretrained kwargs, and two real GRPO steps on CPU.

No network: the tokenizer is built here (a word-level vocabulary) and the model is a randomly
initialised 2-layer Llama; prompts are plain text, so no chat template is needed.
"""

import math
import warnings

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import torch  # noqa: E402
from plans import fixed_plan  # noqa: E402

import planner  # noqa: E402
from planner.checks import preflight as checks  # noqa: E402
from planner.errors import PreflightError  # noqa: E402
from planner.runtimes import trl_handoff as handoff  # noqa: E402
from planner.search.results import Plan  # noqa: E402

NO_CUDA = not torch.cuda.is_available()


def make_plan(gpu="L4", weights="bf16", finetune="lora", targets=None, rank=16, optim="adamw_8bit") -> Plan:
    return fixed_plan(gpu, weights=weights, finetune=finetune, targets=targets, rank=rank, optim=optim)


# -- GRPOConfig -------------------------------------------------------------------------------

@pytest.mark.skipif(not NO_CUDA, reason="checks the CPU fallback")
def test_grpo_config_is_real_and_falls_back_without_gpu():
    from trl import GRPOConfig

    plan = make_plan()
    with pytest.warns(UserWarning, match=r"this machine lacks a CUDA GPU, so use_vllm=False"):
        args = plan.grpo_config(learning_rate=3e-6)
    assert isinstance(args, GRPOConfig)
    assert args.use_vllm is False and args.bf16 is False  # no GPU here: no vLLM, no bf16
    assert (args.per_device_train_batch_size, args.steps_per_generation, args.num_generations) == (4, 2, 8)
    assert (args.max_completion_length, args.vllm_gpu_memory_utilization, args.vllm_max_model_length) == (256, 0.5, 384)
    assert args.optim == "adamw_8bit" and args.gradient_checkpointing is True
    assert args.output_dir == "grpo-output" and args.learning_rate == 3e-6
    assert args.model_init_kwargs == {"dtype": "bfloat16"}


def test_grpo_config_without_vllm_package(monkeypatch):
    monkeypatch.setattr(handoff, "_runtime", lambda: (True, False, False))  # a GPU without bf16 and no vllm
    with pytest.warns(UserWarning, match=r"this machine lacks the vllm package, so use_vllm=False"):
        args = handoff.grpo_config_from_plan(make_plan(), output_dir="x")
    assert args.use_vllm is False and args.bf16 is False and args.output_dir == "x"


def test_grpo_config_overrides_win(monkeypatch):
    monkeypatch.setattr(handoff, "_runtime", lambda: (False, False, False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        args = handoff.grpo_config_from_plan(make_plan(), generation_batch_size=16, num_generations=4,
                                             report_to="none")
    # the plan's steps_per_generation is dropped so that TRL accepts generation_batch_size
    assert (args.generation_batch_size, args.steps_per_generation, args.num_generations) == (16, 4, 4)


# -- from_pretrained and LoRA -----------------------------------------------------------------

def test_model_init_kwargs_dtypes():
    assert make_plan(weights="bf16").model_init_kwargs() == {"dtype": "bfloat16"}
    assert make_plan(weights="fp32", finetune="full", optim="adamw_torch").model_init_kwargs() == {"dtype": "float32"}
    assert make_plan("T4", weights="fp16").model_init_kwargs() == {"dtype": "float16"}


def test_model_init_kwargs_nf4():
    kw = make_plan(weights="nf4").model_init_kwargs()
    q = kw["quantization_config"]
    assert kw["dtype"] == "bfloat16"
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    # a card without bf16 computes in fp16
    t4 = make_plan("T4", weights="nf4").model_init_kwargs()["quantization_config"]
    assert t4.bnb_4bit_compute_dtype == torch.float16


def test_model_init_kwargs_int8():
    q = make_plan(weights="int8").model_init_kwargs()["quantization_config"]
    assert q.load_in_8bit and not q.load_in_4bit


def test_peft_config():
    from peft import LoraConfig

    c = make_plan(rank=8).peft_config()
    assert isinstance(c, LoraConfig)
    assert (c.r, c.lora_alpha, c.target_modules, c.lora_dropout, c.task_type) == (8, 16, "all-linear", 0.0, "CAUSAL_LM")
    assert make_plan(targets=("q_proj", "v_proj")).peft_config().target_modules == {"q_proj", "v_proj"}
    assert make_plan(weights="bf16", finetune="full", optim="adamw_torch").peft_config() is None


# -- train ------------------------------------------------------------------------------------

def tiny_model_and_tokenizer():
    """A word-level tokenizer over a few words and a random 2-layer Llama (hidden 64, 4 heads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "zero one two three four five six seven eight nine ten count add the and".split()
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                        unk_token="<unk>", padding_side="left")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return LlamaForCausalLM(config), tokenizer, words


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def test_train_runs_two_real_grpo_steps_with_the_planned_batch(tmp_path):
    from datasets import Dataset

    # the batch shape a real plan chose for a small model on a 24 GB card
    plan = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", max_completion_length=256)
    B, G = plan.config["per_device_train_batch_size"], plan.config["num_generations"]
    S = plan.config["generation_batch_size"] // B
    model, tokenizer, words = tiny_model_and_tokenizer()
    prompts_per_step = B * S // G
    prompts = [" ".join(words[(i + j) % len(words)] for j in range(4)) for i in range(2 * prompts_per_step)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = planner.train(model, length_reward, Dataset.from_dict({"prompt": prompts}), plan=plan,
                                processing_class=tokenizer, max_completion_length=8,  # short: CPU
                                optim="adamw_torch",  # no bitsandbytes on CPU
                                max_steps=2, logging_steps=1, save_strategy="no", output_dir=str(tmp_path))
    args = trainer.args
    assert (args.per_device_train_batch_size, args.steps_per_generation, args.num_generations) == (B, S, G)
    if NO_CUDA:
        assert args.use_vllm is False  # vLLM needs a GPU: generated with transformers
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # two optimizer steps really ran: Adam counted them, and LoRA's B matrices (zero at init) moved
    steps = {int(s["step"]) for s in trainer.optimizer.state.values() if "step" in s}
    assert steps == {2}
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(bool(p.detach().abs().sum() > 0) for p in lora_b)


def test_train_refuses_a_plan_that_fails_preflight(monkeypatch):
    from datasets import Dataset

    monkeypatch.setattr(checks, "_installed", lambda dist: {"trl": "1.16.0", "peft": "0.21.0"}.get(dist))
    with pytest.raises(PreflightError, match=r"^1 pre-flight check failed: bitsandbytes-optimizer: "
                                             r"optim='adamw_8bit' needs bitsandbytes, which is not installed"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            planner.train("unused/never-loaded", length_reward, Dataset.from_dict({"prompt": ["a"]}),
                          plan=make_plan(), use_vllm=False)


# -- precision: fp16 mixed precision on a card without bf16 ---------------------------------------

def test_a_card_without_bf16_trains_in_fp16(monkeypatch, tmp_path):
    import json

    from trl import GRPOConfig, ModelConfig, TrlParser

    from planner.report.emit import accelerate_config, deepspeed_json, grpo_config_body, write_grpo_yaml

    t4 = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "T4")
    assert t4.config["bf16"] is False
    assert handoff.mixed_precision(t4) == {"bf16": False, "fp16": True}
    body = grpo_config_body(t4)
    assert (body["bf16"], body["fp16"]) == (False, True)
    assert list(body).index("fp16") == list(body).index("bf16") + 1
    real = handoff._build_config(__import__("trl"), t4, handoff._config_kwargs(t4, {}, runtime=False))
    assert isinstance(real, GRPOConfig) and (real.fp16, real.bf16) == (True, False)
    args, _ = TrlParser((GRPOConfig, ModelConfig)).parse_args_and_config(
        ["--config", str(write_grpo_yaml(t4, tmp_path / "grpo.yaml"))])
    assert (args.fp16, args.bf16) == (True, False)  # trl grpo --config reads it so
    monkeypatch.setattr(handoff, "_runtime", lambda: (True, False, True))  # the T4 itself: CUDA, no bf16, vllm
    on_t4 = handoff.grpo_config_from_plan(t4)
    assert (on_t4.fp16, on_t4.bf16) == (True, False)
    monkeypatch.setattr(handoff, "_runtime", lambda: (False, False, True))  # no GPU at all: no mixed precision
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert handoff.grpo_config_from_plan(t4).fp16 is False
    # a layout of T4s: DeepSpeed's fp16 must match the GRPOConfig's (transformers refuses a mismatch)
    zero = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "T4", num_gpus=2, engine="zero2")
    ds = json.loads(deepspeed_json(zero))
    assert ds["fp16"]["enabled"] is True and ds["bf16"]["enabled"] is False
    ddp = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "T4", num_gpus=2, engine="ddp")
    assert accelerate_config(ddp)["mixed_precision"] == "fp16" and grpo_config_body(ddp)["fp16"] is True


def test_bf16_cards_and_fp32_weights_add_no_fp16():
    from planner.report.emit import accelerate_config, grpo_config_body

    h100 = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB")
    assert handoff.mixed_precision(h100) == {} and "fp16" not in grpo_config_body(h100)
    assert grpo_config_body(h100)["bf16"] is True
    fp32 = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "T4", weights="fp32")
    assert handoff.mixed_precision(fp32) == {} and "fp16" not in grpo_config_body(fp32)
    ddp = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "H100-80GB", num_gpus=2, engine="ddp")
    assert accelerate_config(ddp)["mixed_precision"] == "bf16"
