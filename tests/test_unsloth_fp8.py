"""--weights fp8 with the Unsloth runtime: from_pretrained(load_in_fp8=True), vLLM's FP8 weights shared
with the trainer (planner.specs.versions.UNSLOTH_LOAD_IN_FP8_FROM and its note)."""

import pytest

import planner
from planner.errors import InvalidSetupError
from planner.runtimes.unsloth import unsloth_checks, unsloth_estimate

MODEL = "meta-llama/Llama-3.2-1B-Instruct"


def _plan(gpu="L4", **kw):
    kw.setdefault("unsloth_version", "2025.11.4")
    return planner.plan(MODEL, gpu, runtime="unsloth", weights="fp8", vllm_version="0.11.2", **kw)


def test_fp8_plan_loads_fp8_weights_once_in_vllm():
    p = _plan()
    e = p.runtime_details.estimate
    fp = p.runtime_details.from_pretrained_kwargs()
    assert fp["load_in_fp8"] is True and fp["load_in_4bit"] is False
    assert e.capacity.quantization == "fp8" and p.setup.weights == "fp8"
    bf16 = unsloth_estimate(MODEL, "L4", load_in_4bit=False, unsloth_version="2025.11.4", vllm_version="0.11.2")
    fp8 = unsloth_estimate(MODEL, "L4", load_in_4bit=False, weights_fp8=True, unsloth_version="2025.11.4",
                           vllm_version="0.11.2")
    # the quantised linears at 1 B instead of 2; embeddings stay 16-bit
    assert 0.4 < fp8.capacity.weights_bytes / bf16.capacity.weights_bytes < 0.75
    assert "load_in_fp8=True," in p.runtime_details.snippet(p.config)


def test_fp8_refused_before_load_in_fp8_existed():
    with pytest.raises(InvalidSetupError) as e:
        _plan(unsloth_version="2025.11.3")
    assert str(e.value) == ("weights='fp8' needs Unsloth >= 2025.11.4 (from_pretrained(load_in_fp8=True)); planned "
                            "for Unsloth 2025.11.3: pass unsloth_version='2025.11.4' or newer")


def test_fp8_refused_below_vllm_fp8_capability():
    with pytest.raises(InvalidSetupError) as e:
        _plan(gpu="T4")
    assert str(e.value) == ("FP8 weights need compute capability >= 8.0 (vLLM's fp8 quantization; W8A16 Marlin on "
                            "Ampere); T4 has 7.5: use weights='nf4'")
    with pytest.raises(InvalidSetupError, match="load_in_fp8 and load_in_4bit exclude each other"):
        unsloth_estimate(MODEL, "L4", load_in_4bit=True, weights_fp8=True)


def test_trl_runtime_refuses_fp8_weights():
    with pytest.raises(InvalidSetupError) as e:
        planner.plan(MODEL, "L4", weights="fp8")
    assert str(e.value) == ("weights='fp8' is planned with runtime='unsloth' only (from_pretrained(load_in_fp8=True): "
                            "vLLM's FP8 weights shared with the trainer)")


def test_cli_lines(capsys):
    from planner.cli import main
    assert main(["--runtime", "unsloth", "--model", MODEL, "--gpu", "L4", "--weights", "fp8", "--unsloth-version",
                 "2025.10.1"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: --weights fp8 needs Unsloth >= 2025.11.4 (from_pretrained(load_in_fp8=True)); planned for Unsloth "
        "2025.10.1: pass --unsloth-version 2025.11.4 or newer")
    assert main(["estimate", "--model", MODEL, "--gpu", "L4", "--weights", "fp8"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: --weights fp8 is planned with --runtime unsloth only (from_pretrained(load_in_fp8=True): vLLM's FP8 "
        "weights shared with the trainer)")


@pytest.mark.parametrize("gpu, warned", [("L4", True), ("A100-40GB", True), ("H100", False)])
def test_on_the_fly_quantisation_needs_hopper(gpu, warned):
    e = unsloth_estimate(MODEL, gpu, load_in_4bit=False, weights_fp8=True, unsloth_version="2025.11.4",
                         vllm_version="0.11.2")
    ids = {c.id: c for c in unsloth_checks(e)}
    assert ("unsloth-fp8-weights" in ids) is warned
    if warned:
        assert ids["unsloth-fp8-weights"].severity == "warning"


def test_cli_estimate_fp8(capsys):
    import json

    from planner.cli import main
    rc = main(["estimate", "--runtime", "unsloth", "--model", MODEL, "--gpu", "L4", "--weights", "fp8",
               "--unsloth-version", "2025.12.1", "--vllm-version", "0.11.2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    assert json.loads(out)["unsloth"]["from_pretrained"]["load_in_fp8"] is True

