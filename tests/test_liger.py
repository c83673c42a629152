"""use_liger_kernel: the Liger heads per TRL release, their bytes, the refusals, and the flag, --config and
Python spellings down to the GRPOConfig the hand-off builds."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import planner
from planner.errors import ConfigError, InvalidSetupError
from planner.memory.logprob_head import (
    LIGER_TOKEN_TILE,
    LIGER_VOCAB_TILE,
    TILE_BYTES_PER_ELEMENT,
    liger_loss_bytes,
    liger_seq_loss_bytes,
    logprob_head_bytes,
    scoring_pass_bytes,
)
from planner.search.estimation import default_logprob_head
from planner.search.trl_config import parse_grpo_config
from planner.specs.model import resolve_model
from planner.specs.versions import trl_facts

ROOT = Path(__file__).resolve().parents[1]
QWEN7 = "Qwen/Qwen2.5-7B-Instruct"  # vocabulary 152064


def test_every_liger_head_is_below_the_full_logits_for_a_large_vocabulary():
    spec = resolve_model(QWEN7)
    B, C = 8, 1024
    plain = logprob_head_bytes(spec, "plain", B, C)  # 16 B per logit of B x C x V (the backward's)
    # TRL 0.17-1.13 still score outside the loss with the no-grad full logits: 8 B per logit, half the plain head
    assert logprob_head_bytes(spec, "liger", B, C) == scoring_pass_bytes(spec, B, C) == plain // 2
    assert logprob_head_bytes(spec, "liger-seq", B, C) == plain // 2
    # TRL 1.14 scores through its chunked path too: no term grows with batch x vocabulary
    chunked = logprob_head_bytes(spec, "chunked", B, C)
    assert chunked < plain / 20
    assert logprob_head_bytes(spec, "chunked", 2 * B, C) - chunked < plain / 50


def test_liger_loss_bytes_are_the_tile_the_gradients_and_the_inputs():
    spec = resolve_model(QWEN7)
    h, V, B, C = spec.hidden_size, spec.vocab_size, 4, 3000
    tile = LIGER_TOKEN_TILE * LIGER_VOCAB_TILE * TILE_BYTES_PER_ELEMENT  # 3000 tokens: one full 2048-token tile
    frozen = tile + C * h * 6 + 2 * B * C * h * 2
    assert liger_loss_bytes(spec, B, C) == frozen
    # a trained head: fp32 gradient + its bf16 cast + the loss's bf16 accumulator
    assert liger_loss_bytes(spec, B, C, lm_head_trainable=True) == frozen + V * h * 8
    # the head is the larger of the loss and the scoring pass (they never coexist)
    assert logprob_head_bytes(spec, "liger", B, C) == max(frozen, B * C * V * 8)
    # before liger-kernel 0.8.0 the weight gradient is built even for a frozen head
    assert liger_seq_loss_bytes(spec, B, C) == C * V * 14 + 2 * V * h * 2 + 2 * B * C * h * 2
    tiny = liger_seq_loss_bytes(spec, 1, 16)
    assert logprob_head_bytes(spec, "liger-seq", 1, 16) == max(tiny, 16 * V * 8)


@pytest.mark.parametrize("release, head, field", [
    ("0.16.0", None, None), ("0.17.0", "liger", "use_liger_loss"), ("0.24.0", "liger", "use_liger_loss"),
    ("0.25.0", "liger", "use_liger_kernel"), ("1.13.0", "liger", "use_liger_kernel"),
    ("1.14.2", "chunked", "use_liger_kernel"), ("1.15.0", "fused", "use_liger_kernel"),
    ("1.16.0", "fused", "use_liger_kernel")])
def test_the_liger_head_and_field_per_trl_release(release, head, field):
    facts = trl_facts(release)
    assert (facts.liger_head, facts.liger_field) == (head, field)
    if head is not None:
        assert default_logprob_head(release, liger=True) == head
    assert default_logprob_head(release, liger=False) == default_logprob_head(release)


def _plan_error(**kw) -> str:
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(QWEN7, "H100-80GB", **kw)
    return str(e.value)


def test_refused_combinations_are_one_line_each():
    # the Python API names keywords where the CLI names flags (planner.report.hints)
    assert _plan_error(use_liger_kernel=True, trl_version="0.16.0") == (
        "use_liger_kernel: TRL 0.16.0 has no Liger GRPO loss (use_liger_loss from TRL 0.17.0, use_liger_kernel "
        "from 0.25.0); plan for trl_version='0.17.0' or later")
    assert _plan_error(use_liger_kernel=True, trl_version="1.12.0", logprob_head="plain") == (
        "logprob_head='plain' contradicts use_liger_kernel: TRL 1.12.0 with Liger uses the 'liger' head "
        "(or liger-seq for liger-kernel before 0.8.0)")
    assert _plan_error(logprob_head="liger") == (
        "logprob_head='liger' is TRL's head with use_liger_kernel: add use_liger_kernel")
    assert _plan_error(use_liger_kernel=True, trl_version="1.12.0", lora_target_modules=["q_proj", "lm_head"]) == (
        "use_liger_kernel with a LoRA adapter on lm_head: TRL raises: the chunked projection reads lm_head.weight "
        "directly; remove lm_head from lora_target_modules")
    assert _plan_error(use_liger_kernel=True, trl_version="0.25.0", lora_target_modules=["lm_head"]) == (
        "use_liger_kernel with a LoRA adapter on lm_head: Liger reads lm_head.weight directly, so the adapter on "
        "the head is never trained; remove lm_head from lora_target_modules")
    assert _plan_error(use_liger_kernel=True, runtime="unsloth") == (
        "use_liger_kernel is not honoured by runtime='unsloth': Unsloth computes the loss in chunks (its own head)")
    # an older liger-kernel's head is accepted beside the flag
    p = planner.plan(QWEN7, "H100-80GB", use_liger_kernel=True, trl_version="1.12.0", logprob_head="liger-seq")
    assert p.setup.logprob_head == "liger-seq"


def test_the_plan_writes_the_releases_field_and_says_which_head():
    for release, key, head in (("0.20.0", "use_liger_loss", "liger"), ("1.12.0", "use_liger_kernel", "liger"),
                               ("1.16.0", "use_liger_kernel", "fused")):
        p = planner.plan(QWEN7, "H100-80GB", use_liger_kernel=True, trl_version=release)
        assert p.config[key] is True and p.setup.logprob_head == head
        assert "use_liger_kernel" in p.assumptions["logprob_head"]["note"]
    plain = planner.plan(QWEN7, "H100-80GB", trl_version="1.12.0")
    assert "use_liger_kernel" not in plain.config and plain.setup.logprob_head == "plain"
    # the memory the head no longer needs buys a larger micro-batch on the same card
    liger = planner.plan(QWEN7, "H100-80GB", use_liger_kernel=True, trl_version="1.12.0")
    assert liger.config["per_device_train_batch_size"] > plain.config["per_device_train_batch_size"]


def test_a_trl_config_reads_use_liger_kernel_as_trl_does():
    pytest.importorskip("trl")
    from trl import GRPOConfig

    cfg = parse_grpo_config({"use_liger_kernel": "true", "per_device_train_batch_size": 8}, "grpo.yaml")
    assert cfg.options["use_liger_kernel"] is True and "use_liger_kernel" not in cfg.passthrough
    # TRL's own reading of the same string (TrlParser: argparse converts a string default with string_to_bool)
    from trl.scripts._hf_argparser import string_to_bool

    assert string_to_bool("true") is True
    args = GRPOConfig(output_dir="x", bf16=False, use_cpu=True, use_liger_kernel=string_to_bool("true"))
    assert args.use_liger_kernel is True
    assert not parse_grpo_config({"use_liger_kernel": False}, "grpo.yaml").options.get("use_liger_kernel")
    with pytest.raises(ConfigError, match=r"grpo.yaml: use_liger_kernel: "):
        parse_grpo_config({"use_liger_kernel": "maybe"}, "grpo.yaml")


def test_a_trl_config_with_what_liger_refuses_is_one_line_each():
    with pytest.raises(ConfigError) as e:
        parse_grpo_config({"use_liger_kernel": True, "top_entropy_quantile": 0.2, "off_policy_mask_threshold": 0.5,
                           "importance_sampling_level": "sequence_token"}, "grpo.yaml", trl_version="1.12.0")
    assert str(e.value).splitlines() == [
        "--config grpo.yaml: use_liger_kernel with top_entropy_quantile 0.2: TRL 1.12.0 raises (Liger kernels don't "
        "support masking token positions by entropy); use 1.0 or drop use_liger_kernel",
        "--config grpo.yaml: use_liger_kernel with importance_sampling_level 'sequence_token': TRL 1.12.0's Liger "
        "loss takes token or sequence",
        "--config grpo.yaml: use_liger_kernel with off_policy_mask_threshold: TRL 1.12.0 raises (the Liger loss has "
        "no off-policy mask); drop one of them"]
    # from TRL 1.15 Liger only patches the layers: nothing to refuse
    parse_grpo_config({"use_liger_kernel": True, "top_entropy_quantile": 0.2}, "grpo.yaml", trl_version="1.16.0")


def test_the_handed_off_grpo_config_sets_use_liger_kernel(monkeypatch):
    pytest.importorskip("trl")
    from trl import GRPOConfig

    from planner.runtimes import trl_handoff as handoff

    monkeypatch.setattr(handoff, "_runtime", lambda: (False, False, False))
    p = planner.plan(QWEN7, "H100-80GB", use_liger_kernel=True, trl_version="1.16.0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = handoff.grpo_config_from_plan(p)
    assert isinstance(args, GRPOConfig) and args.use_liger_kernel is True
    # a plan for TRL 0.20 names use_liger_loss, which the installed TRL no longer has: its successor is set
    old = planner.plan(QWEN7, "H100-80GB", use_liger_kernel=True, trl_version="0.20.0")
    assert old.config["use_liger_loss"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert handoff.grpo_config_from_plan(old).use_liger_kernel is True


def _cli(*argv: str) -> subprocess.CompletedProcess:
    code = "import sys; from planner.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.parametrize("flag", ["--use-liger-kernel", "--use_liger_kernel"])
def test_the_flag_in_both_spellings(flag):
    r = _cli("estimate", "--model", QWEN7, "--gpu", "H100-80GB", "--trl-version", "1.12.0", flag, "--json")
    assert r.returncode == 0, r.stderr
    assert '"logprob_head": "liger"' in r.stdout
    r = _cli("estimate", "--model", QWEN7, "--gpu", "H100-80GB", "--trl-version", "0.16.0", flag)
    assert (r.returncode, r.stderr) == (2, "plan: error: --use-liger-kernel: TRL 0.16.0 has no Liger GRPO loss "
                                           "(use_liger_loss from TRL 0.17.0, use_liger_kernel from 0.25.0); plan for "
                                           "--trl-version 0.17.0 or later\n")


def test_the_preflight_checks_say_liger_kernel_is_needed(monkeypatch):
    from planner.checks import preflight as checks

    p = planner.plan(QWEN7, "H100-80GB", use_liger_kernel=True, trl_version="1.12.0")
    monkeypatch.setattr(checks, "_installed", lambda dist: None if dist == "liger-kernel" else "1.16.0")
    found = [c for c in planner.preflight(p, for_training=True) if c.id == "liger-installed"]
    assert [(c.severity, c.message) for c in found] == [
        ("error", "use_liger_kernel needs liger-kernel, which is not installed (TRL raises ImportError)")]
    monkeypatch.setattr(checks, "_installed", lambda dist: "0.8.5" if dist == "liger-kernel" else "1.16.0")
    found = [c for c in planner.preflight(p) if c.id == "liger-installed"]
    assert [(c.severity, c.message) for c in found] == [("info", "liger-kernel 0.8.5 installed for use_liger_kernel")]
    plain = planner.plan(QWEN7, "H100-80GB", trl_version="1.12.0")
    assert not [c for c in planner.preflight(plain) if c.id == "liger-installed"]
