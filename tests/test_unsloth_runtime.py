"""The Unsloth runtime end to end: the search, the hand-off script, the runtime checks, the CLI, train()."""

import ast
import json
import sys
import types

import pytest

import planner
from planner import cli
from planner.errors import InvalidSetupError, PreflightError
from planner.runtimes.unsloth import adjusted_batch_size, requested_utilization, unsloth_checks, unsloth_estimate
from planner.search.results import Plan
from planner.search.unsloth_solver import kept_batches, unsloth_plan, utilization_candidates, with_unsloth_checks
from planner.specs.units import GIB
from planner.specs.versions import unsloth_facts, unsloth_trl_ceiling, unsloth_vllm_version

LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"
DONE_WHEN = ["--runtime", "unsloth", "--model", LLAMA8, "--gpu", "T4", "--weights", "nf4", "--lora-rank", "32",
             "--max-seq-length", "1024", "--json"]


def _installed(versions):
    return lambda dist: versions.get(dist)


@pytest.fixture
def no_packages(monkeypatch):
    """A planning machine: none of unsloth, TRL, vLLM installed."""
    monkeypatch.setattr("planner.specs.versions.installed_version", _installed({}))


def _run(capsys, argv):
    rc = cli.main(argv)
    out = capsys.readouterr().out
    return rc, out


# -- the done-when commands ---------------------------------------------------------------------------

def test_cli_plan_done_when(capsys):
    rc, out = _run(capsys, DONE_WHEN)
    assert rc == 0
    d = json.loads(out)
    assert d["runtime"] == "unsloth" and d["fits"] is True
    u = d["unsloth"]
    fp = u["from_pretrained"]
    assert fp["fast_inference"] is True and fp["load_in_4bit"] is True and fp["max_seq_length"] == 1024
    assert fp["max_lora_rank"] == 32 and 0 < fp["gpu_memory_utilization"] <= 1
    # what vLLM really gets: the request times free/total, below the request (memory in use before vLLM)
    assert u["vllm_gpu_memory_utilization"] == u["vllm"]["gpu_memory_utilization"] == \
        d["vllm"]["gpu_memory_utilization"]
    assert u["vllm_gpu_memory_utilization"] < fp["gpu_memory_utilization"] == u["gpu_memory_utilization_asked"]
    assert d["peak_bytes"] <= d["budget_bytes"] < 15 * GIB
    cfg = d["config"]
    assert (cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]) % cfg["num_generations"] == 0
    assert cfg["max_completion_length"] == 1024 - 256
    assert u["vllm"]["version"] == "0.9.2" and "assumed" in u["vllm"]["version_reason"]  # T4: Unsloth's pairing


def test_cli_estimate_done_when(capsys):
    rc, out = _run(capsys, ["estimate", *DONE_WHEN])
    assert rc == 0
    d = json.loads(out)  # the one Plan schema, as `plan` prints it
    v = d["unsloth"]["vllm"]
    assert 0.45 < v["gpu_memory_utilization"] < 0.5   # Unsloth's default request 0.5, shrunk by free/total
    assert v["kv_cache_bytes"] > 0 and v["weights_bytes"] > 4 * GIB and isinstance(d["fits"], bool)
    # shared flags left at their defaults mean Unsloth's defaults: 4 x 2 x 8
    g = d["config"]
    assert (g["per_device_train_batch_size"], g["gradient_accumulation_steps"], g["num_generations"]) == (4, 2, 8)
    assert d["runtime"] == "unsloth" and "assumptions" in d and "next_steps" in d


def test_cli_estimate_explicit_batch_is_kept_and_adjusted(capsys):
    rc, out = _run(capsys, ["estimate", *DONE_WHEN, "--batch-size", "3", "--gradient-accumulation-steps", "1",
                            "--num-generations", "8"])
    d = json.loads(out)
    assert d["config"]["per_device_train_batch_size"] == 8 and "3 -> 8" in d["unsloth"]["batch_adjusted"]


def test_cli_trl_runtime_unchanged_by_marked_defaults(capsys):
    """The TRL runtime reads a marked default exactly as the same value typed out."""
    base = ["estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "L4", "--json"]
    rc1, implicit = _run(capsys, base)
    rc2, explicit = _run(capsys, [*base, "--weights", "bf16", "--batch-size", "1", "--completion-length", "512",
                                  "--gradient-accumulation-steps", "1"])
    assert rc1 == rc2 == 0 and json.loads(implicit) == json.loads(explicit)


def test_cli_plan_text_prints_the_script(capsys):
    rc, out = _run(capsys, DONE_WHEN[:-1])
    assert rc == 0
    script = out.split("# the script (plan.runtime_details.snippet(plan.config)):\n", 1)[1]
    ast.parse(script)
    assert "FastLanguageModel.from_pretrained(" in script


def test_cli_unsloth_refuses_what_it_does_not_plan(capsys):
    rc = cli.main(["--runtime", "unsloth", "--model", LLAMA8, "--gpu", "T4", "--finetune", "full"])
    assert rc == 2 and "LoRA" in capsys.readouterr().err


def test_cli_check_exit_code(capsys, no_packages):
    rc, out = _run(capsys, ["check", *DONE_WHEN])
    d = json.loads(out)
    ids = {c["id"] for c in d["checks"]}
    assert {"unsloth-installed", "unsloth-vllm-installed", "unsloth-utilization", "unsloth-memory"} <= ids
    assert rc == 0   # planning only: missing packages are warnings
    rc, out = _run(capsys, ["check", *DONE_WHEN, "--for-training"])
    assert rc == 1   # training here: they are errors


# -- the search honours Unsloth's rules -----------------------------------------------------------------

def test_standby_plan_renders_the_value_unsloth_uses():
    """2026.10.9 replaces any standby request by a card tier: the plan passes that tier, so nothing is rewritten."""
    p = unsloth_plan("Qwen/Qwen2.5-3B-Instruct", "RTX-4090", standby=True, lora_rank=16, max_seq_length=1024,
                     unsloth_version="2026.10.9", vllm_version="0.11.0")
    facts = unsloth_facts("2026.10.9")
    asked = p.runtime_details.from_pretrained_kwargs()["gpu_memory_utilization"]
    kept, _ = requested_utilization(facts, asked, True, p.gpu.total_bytes, "0.11.0")
    assert kept == pytest.approx(asked, abs=1e-4)
    assert not any("->" in c and "gpu_memory_utilization" in c for c in p.runtime_details.changes)
    assert p.runtime_details.env()["UNSLOTH_VLLM_STANDBY"] == "1"
    # the same request estimated: 0.8 asked with standby is replaced, and the check says by what
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "RTX-4090", gpu_memory_utilization=0.8, standby=True,
                         unsloth_version="2026.10.9", vllm_version="0.11.0")
    c = next(c for c in unsloth_checks(e, trl_version="0.24.0") if c.id == "unsloth-utilization")
    assert c.severity == "warning" and f"{kept:.4g}" in c.fix


def test_utilization_candidates_collapse_under_standby():
    facts = unsloth_facts("2026.10.9")
    total = int(23.63 * GIB)
    assert len(utilization_candidates(facts, True, total, "0.11.0", None)) == 1   # tiers_set: one value
    raise_only = unsloth_facts("2025.11.3")
    cands = utilization_candidates(raise_only, True, total, "0.11.0", None)
    assert min(cands) == pytest.approx(0.875, abs=1e-4)   # below the tier Unsloth raises: not tried
    assert utilization_candidates(facts, False, total, "0.11.0", None)[0] == 0.3


def test_rank_rounding_in_the_plan():
    p = unsloth_plan("Qwen/Qwen2.5-3B-Instruct", "L4", lora_rank=24, max_seq_length=1024, vllm_version="0.11.0")
    assert p.runtime_details.from_pretrained_kwargs()["max_lora_rank"] == 24
    assert p.runtime_details.estimate.max_lora_rank == 32
    assert any("max_lora_rank 24 -> 32" in c for c in p.runtime_details.changes)


@pytest.mark.parametrize("release", ["2025.9.7", "2026.10.9"])
def test_divisibility_rule_in_candidates_and_plan(release):
    facts = unsloth_facts(release)
    pairs = kept_batches(facts, 8, 8)
    assert pairs and all(adjusted_batch_size(facts, b, ga, 8) == b for b, ga in pairs)
    assert all(b * ga == 8 for b, ga in pairs)
    if release == "2025.9.7":
        assert pairs == [(8, 1)]   # batch % G == 0: only the whole group
    else:
        assert (4, 2) in pairs and (1, 8) in pairs
    p = unsloth_plan("Qwen/Qwen2.5-1.5B-Instruct", "L4", max_seq_length=1024, unsloth_version=release,
                     vllm_version="0.10.2")
    cfg = p.config
    assert adjusted_batch_size(facts, cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"],
                               cfg["num_generations"]) == cfg["per_device_train_batch_size"]
    assert not any("per_device_train_batch_size" in c for c in p.runtime_details.changes)


def test_fixed_batch_unsloth_would_rewrite_is_refused_naming_the_rule():
    # a pin is held or refused: Unsloth's GRPOConfig would set the batch to num_generations
    with pytest.raises(InvalidSetupError) as e:
        unsloth_plan("Qwen/Qwen2.5-1.5B-Instruct", "L4", max_seq_length=1024, unsloth_version="2025.9.7",
                     vllm_version="0.10.2", per_device_train_batch_size=4, gradient_accumulation_steps=2,
                     num_generations=8)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "sets per_device_train_batch_size to num_generations" in msg
    assert "2025.9.7" in msg and "multiple of num_generations (8)" in msg


def test_infeasible_names_what_breaks():
    from planner.errors import InfeasibleError

    with pytest.raises(InfeasibleError, match="no Unsloth setup fits"):
        unsloth_plan("Qwen/Qwen2.5-32B-Instruct", "T4", weights="bf16", max_seq_length=1024)


def test_bad_lengths_are_one_line_each():
    with pytest.raises(InvalidSetupError) as e:
        unsloth_plan(LLAMA8, "T4", max_seq_length=512, prompt_length=256, max_completion_length=512, margin=0.7)
    assert len(str(e.value).splitlines()) == 1  # the margin: the request's line
    with pytest.raises(InvalidSetupError) as e:
        unsloth_plan(LLAMA8, "T4", max_seq_length=512, prompt_length=256, max_completion_length=512)
    assert len(str(e.value).splitlines()) == 1 and "exceeds --max-seq-length 512" in str(e.value)


# -- pairings ------------------------------------------------------------------------------------------

def test_vllm_pairing(no_packages):
    assert unsloth_trl_ceiling("2026.10.9") == "1.15.0" and unsloth_trl_ceiling("2025.9.7") is None
    v, why = unsloth_vllm_version("2026.10.9", "7.5", True)
    assert v == "0.9.2" and "assumed" in why
    v, why = unsloth_vllm_version("2026.10.9", "8.9", True)
    from planner.specs.versions import parse_version

    assert parse_version(v, "vLLM") < (0, 28, 0)  # 4-bit: bitsandbytes still in tree


# -- the snippet ---------------------------------------------------------------------------------------

def _calls(tree):
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            out[name] = {}
            for k in node.keywords:
                try:
                    out[name][k.arg] = ast.literal_eval(k.value)
                except ValueError:  # a name (reward_funcs=[reward_len], model=model)
                    continue
    return out


def test_snippet_is_python_and_carries_the_plan():
    p = unsloth_plan(LLAMA8, "T4", weights="nf4", lora_rank=32, max_seq_length=1024, standby=True)
    src = p.runtime_details.snippet(p.config)
    tree = ast.parse(src)
    calls = _calls(tree)
    kw = p.runtime_details.kwargs(p.config)
    fp = dict(kw["from_pretrained"])
    assert calls["from_pretrained"] == fp
    assert calls["get_peft_model"] == kw["get_peft_model"]
    assert {k: v for k, v in calls["GRPOConfig"].items() if k != "output_dir"} == kw["grpo_config"]
    assert "GRPOTrainer" in calls
    # the environment is set before unsloth is imported
    assert src.index("UNSLOTH_VLLM_STANDBY") < src.index("from unsloth import")
    assert src.index("from unsloth import") < src.index("from trl import")


# -- the runtime checks --------------------------------------------------------------------------------

def _ids(checks, severity=None):
    return {c.id for c in checks if severity is None or c.severity == severity}


def test_checks_standby_needs_trl_023(monkeypatch):
    monkeypatch.setattr("planner.specs.versions.installed_version",
                        _installed({"unsloth": "2025.11.3", "unsloth_zoo": "2025.11.4", "trl": "0.22.2",
                                    "vllm": "0.11.2"}))
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "L4", standby=True, unsloth_version="2025.11.4",
                         vllm_version="0.11.2")
    checks = unsloth_checks(e, for_training=True, alloc_conf="")
    assert "unsloth-standby-trl" in _ids(checks, "error")
    assert "unsloth-installed" in _ids(checks, "info")
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "L4", standby=False, unsloth_version="2025.11.3",
                         vllm_version="0.11.2")
    assert "unsloth-standby-trl" not in _ids(unsloth_checks(e, for_training=True, alloc_conf=""))


def test_checks_bnb_plugin_from_the_vllm_facts(monkeypatch):
    from planner.specs.versions import vllm_first_release

    first = vllm_first_release("bitsandbytes_supported", False)
    base = {"unsloth": "2026.10.9", "unsloth_zoo": "2026.10.9", "trl": "1.15.0", "vllm": first}
    monkeypatch.setattr("planner.specs.versions.installed_version", _installed(base))
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "L4", load_in_4bit=False, vllm_version="0.26.0")
    assert "unsloth-bnb-plugin" not in _ids(unsloth_checks(e, alloc_conf=""))   # 16-bit: no plugin needed
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "L4", load_in_4bit=True, vllm_version="0.26.0")
    assert "unsloth-bnb-plugin" in _ids(unsloth_checks(e, for_training=True, alloc_conf=""), "error")
    monkeypatch.setattr("planner.specs.versions.installed_version", _installed({**base, "vllm-bnb-plugin": "0.1.0"}))
    assert "unsloth-bnb-plugin" in _ids(unsloth_checks(e, for_training=True, alloc_conf=""), "info")


def test_checks_alloc_conf_vision_and_card(no_packages):
    e = unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "L4", standby=True, vllm_version="0.11.0")
    assert "unsloth-standby-alloc-conf" in _ids(unsloth_checks(e, alloc_conf="expandable_segments:True"), "warning")
    assert "unsloth-standby-alloc-conf" not in _ids(unsloth_checks(e, alloc_conf=""))
    v = unsloth_estimate("google/gemma-3-4b-it", "L4", standby=True, vllm_version="0.11.0", unsloth_version="2026.10.9")
    assert v.standby is False and v.standby_requested is True
    assert "unsloth-vision-standby" in _ids(unsloth_checks(v, alloc_conf=""), "warning")
    old = unsloth_estimate("google/gemma-3-4b-it", "L4", standby=True, vllm_version="0.11.0",
                           unsloth_version="2026.5.1")
    assert old.standby is True   # the vision gate is not in 2026.5.1
    with pytest.raises(InvalidSetupError, match="8.0"):
        unsloth_estimate(LLAMA8, "T4", float8_kv_cache=True, vllm_version="0.9.2")


def test_plan_api_runtime_dispatch(no_packages):
    p = planner.plan(LLAMA8, "T4", runtime="unsloth", weights="nf4", lora_rank=32, max_seq_length=1024)
    assert p.runtime == "unsloth" and p.fits and p.checks
    with pytest.raises(InvalidSetupError):
        planner.plan(LLAMA8, "T4", runtime="sglang")
    with pytest.raises(InvalidSetupError):
        planner.plan(LLAMA8, "T4", num_gpus=2, runtime="unsloth")


# -- train() with stand-in modules --------------------------------------------------------------------

def test_train_with_stand_in_unsloth(monkeypatch, no_packages):
    calls = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kw):
            import os

            calls["env_at_load"] = os.environ.get("UNSLOTH_VLLM_STANDBY")
            calls["from_pretrained"] = kw
            return "model", "tokenizer"

        @staticmethod
        def get_peft_model(model, **kw):
            calls["get_peft_model"] = (model, kw)
            return "peft-model"

    class GRPOConfig:
        def __init__(self, **kw):
            calls["config"] = kw

    class GRPOTrainer:
        def __init__(self, **kw):
            calls["trainer"] = kw

        def train(self):
            calls["trained"] = True

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    monkeypatch.setitem(sys.modules, "trl", types.SimpleNamespace(GRPOConfig=GRPOConfig, GRPOTrainer=GRPOTrainer))
    monkeypatch.setenv("UNSLOTH_VLLM_STANDBY", "unset")
    kwargs = {"weights": "nf4", "lora_rank": 32, "max_seq_length": 1024, "standby": True}
    trainer = planner.train(LLAMA8, ["reward"], "dataset", gpu="T4", runtime="unsloth", checks=False,
                            plan_kwargs=kwargs, max_steps=5)
    p = unsloth_plan(LLAMA8, "T4", **kwargs)
    assert calls["env_at_load"] == "1"
    assert calls["from_pretrained"] == {**p.runtime_details.from_pretrained_kwargs(), "model_name": LLAMA8}
    assert calls["get_peft_model"] == ("model", p.runtime_details.get_peft_model_kwargs())
    assert calls["config"]["max_steps"] == 5 and calls["config"]["num_generations"] == p.config["num_generations"]
    assert calls["trainer"]["model"] == "peft-model" and calls["trainer"]["reward_funcs"] == ["reward"]
    assert calls.get("trained") is True and isinstance(trainer, GRPOTrainer)
    # with the checks on, a machine without unsloth/vLLM stops before loading anything
    calls.clear()
    with pytest.raises(PreflightError):
        planner.train(LLAMA8, ["reward"], "dataset", gpu="T4", runtime="unsloth", plan_kwargs=kwargs)
    assert "from_pretrained" not in calls
    # a plan for the Unsloth runtime is enough to pick it
    planner.train(LLAMA8, ["reward"], "dataset", plan=with_unsloth_checks(p), checks=False, dry_run=True)
    assert "trained" not in calls and calls["from_pretrained"]["model_name"] == LLAMA8


# -- one pipeline: one Plan type, one JSON schema, one request, one objective --------------------------

def test_same_plan_type_and_shared_json_keys(no_packages):
    trl = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4")
    uns = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4", runtime="unsloth", max_seq_length=1024)
    assert type(trl) is type(uns) is Plan
    assert (trl.runtime, uns.runtime) == ("trl", "unsloth")
    t, u = trl.to_dict(), uns.to_dict()
    assert set(t) <= set(u) and set(u) - set(t) == {"unsloth"} and "unsloth" not in t
    for key in ("config", "fits", "peak_bytes", "budget_bytes", "headroom_bytes", "margin", "phases", "checks",
                "reasons", "warnings", "assumptions", "next_steps", "objective"):
        assert u[key] not in (None, [], {}, "") or key == "warnings", key
    assert u["peak_bytes"] == u["phases"]["peak_bytes"] == max(v["peak_bytes"] for k, v in u["phases"].items()
                                                                if isinstance(v, dict))
    assert u["budget_bytes"] == int(uns.gpu.total_bytes * (1 - 0.05)) and u["margin"] == 0.05
    a = u["assumptions"]
    assert a["margin"]["memory_model"] == "unsloth" and "RUNTIME_MARGIN" in a["margin"]["note"]
    assert a["max_seq_length"] == {"value": 1024, "source": "option"}
    assert a["weights"]["value"] == "nf4" and a["weights"]["source"] == "default"
    assert {"unsloth_version", "vllm_version", "trl_version", "memory_model", "standby"} <= set(a)
    assert u["unsloth"]["from_pretrained"]["load_in_4bit"] is True and "UNSLOTH_VLLM_STANDBY" in u["unsloth"]["env"]
    assert "runtime='unsloth'" in u["next_steps"]["python"] and "FastLanguageModel" in u["next_steps"]["script"]
    # the phases' components add up to the runtime's own totals
    e = uns.runtime_details.estimate
    assert {f"{k}_bytes": v["peak_bytes"] for k, v in u["phases"].items() if isinstance(v, dict)} == e.phases


def test_the_request_vocabulary_maps_to_unsloths():
    p = planner.plan("Qwen/Qwen2.5-1.5B-Instruct", "L4", runtime="unsloth", weights="bf16", lora_rank=8, prompt_length=128,
                     max_seq_length=1024, vllm_kv_cache_dtype="fp8", margin=0.1, standby=False,
                     pin={"vllm_gpu_memory_utilization": 0.6, "num_generations": 4})
    fp = p.runtime_details.from_pretrained_kwargs()
    assert fp["load_in_4bit"] is False and fp["float8_kv_cache"] is True and fp["max_lora_rank"] == 8
    assert fp["gpu_memory_utilization"] == 0.6 and p.config["num_generations"] == 4 and p.margin == 0.1
    assert p.config["max_completion_length"] <= 1024 - 128
    assert p.assumptions["vllm_gpu_memory_utilization"]["source"] == "pinned"


def test_refusals_are_the_same_lines_from_python_and_the_cli(capsys):
    from planner.report.hints import to_python

    with pytest.raises(InvalidSetupError) as e:
        planner.plan(LLAMA8, "T4", runtime="unsloth", engine="zero2", sleep_mode="on", finetune="full")
    py = str(e.value).splitlines()
    assert len(py) == 3 and any("LoRA" in line for line in py)
    rc = cli.main(["--runtime", "unsloth", "--model", LLAMA8, "--gpu", "T4", "--engine", "zero2", "--sleep-mode",
                   "on", "--finetune", "full"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and [to_python(line.removeprefix("plan: error: ")) for line in err] == py
    with pytest.raises(InvalidSetupError, match="one GPU"):
        planner.plan(LLAMA8, "T4", num_gpus=2, runtime="unsloth")
    with pytest.raises(InvalidSetupError, match="the search sets generation_batch_size"):
        planner.plan(LLAMA8, "T4", runtime="unsloth", pin={"generation_batch_size": 16})


def test_the_trl_runtime_refuses_unsloth_options(capsys):
    with pytest.raises(InvalidSetupError, match="max_seq_length is an option of the Unsloth runtime"):
        planner.plan(LLAMA8, "T4", max_seq_length=1024)
    rc = cli.main(["--model", LLAMA8, "--gpu", "T4", "--standby"])
    assert rc == 2 and "--standby is an option of the Unsloth runtime" in capsys.readouterr().err


def test_cli_estimate_without_lora_rank(capsys):
    """`plan estimate --runtime unsloth` without --lora-rank used to fail ('lora_rank must be a positive
    integer, got None'): the request's default rank, 16."""
    rc, out = _run(capsys, ["estimate", "--runtime", "unsloth", "--model", LLAMA8, "--gpu", "T4", "--json"])
    d = json.loads(out)
    assert rc == 0 and d["unsloth"]["from_pretrained"]["max_lora_rank"] == 16 and d["unsloth"]["get_peft_model"]["r"] == 16


def test_cli_and_python_give_the_same_plan(capsys, no_packages):
    rc, out = _run(capsys, DONE_WHEN)
    p = planner.plan(LLAMA8, "T4", runtime="unsloth", weights="nf4", lora_rank=32, max_seq_length=1024)
    d = json.loads(out)
    assert rc == 0 and d["config"] == p.config and d["unsloth"] == json.loads(json.dumps(p.to_dict()["unsloth"]))


def test_one_objective_with_the_runtime_memory_term():
    from planner.search.objective import Candidate, score

    lo, hi = (Candidate(768, 8, 1, 4, u, False) for u in (0.4, 0.6))
    assert score(hi) > score(lo)   # TRL: the least idle memory
    lo_u, hi_u = (Candidate(768, 8, 1, 4, u, False, runtime="unsloth", num_generations=8) for u in (0.4, 0.6))
    assert score(lo_u) > score(hi_u)   # Unsloth: one wave at the lowest utilisation
    # the terms before it are shared: a longer completion wins whatever the rest
    assert score(Candidate(1024, 2, 3, 1, 0.3, True)) > score(hi)
    p = planner.plan("Qwen/Qwen2.5-0.5B-Instruct", "L4")
    assert p.option.key() == score(p.option.candidate())


@pytest.mark.parametrize("extra, line", [
    (["--batch-size", "0"], "--per-device-train-batch-size must be a positive integer, got 0"),
    (["--gradient-accumulation-steps", "-1"], "--gradient-accumulation-steps must be a positive integer, got -1"),
    (["--num-generations", "1"], "--num-generations must be at least 2 (GRPO needs a group to compute advantages), got 1"),
    (["--layout", "server"], "--layout is not honoured by --runtime unsloth: vLLM runs inside the training process"),
    (["--lora-target-modules", "q_proj,v_proj"], "--lora-target-modules is not honoured by --runtime unsloth: "
                                                  "get_peft_model targets every projection"),
])
def test_the_unsloth_estimate_refuses_what_it_cannot_honour(extra, line, capsys):
    # the fixed estimate validates its values and refuses the flags the runtime does not read, one line each
    argv = ["estimate", "--runtime", "unsloth", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "T4"] + extra
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"plan: error: {line}") and err.count("\n") == 1, err


@pytest.mark.parametrize("gpu, bf16", [("T4", False), ("L4", True)])
def test_the_unsloth_config_sets_the_cards_precision(gpu, bf16):
    # Unsloth's notebooks: bf16 = is_bfloat16_supported(), fp16 = not is_bfloat16_supported()
    p = planner.plan("Qwen/Qwen2.5-3B-Instruct", gpu, runtime="unsloth")
    assert (p.config["bf16"], p.config["fp16"]) == (bf16, not bf16)
    assert f"fp16={not bf16}" in p.runtime_details.snippet(p.config)
