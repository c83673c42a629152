"""Model specs: exact parameter counts, resolution order and bad input."""

import json

import pytest

from planner.errors import ConfigError, UnknownModelError
from planner.specs.model import resolve_model, shipped_model_ids, spec_from_config

# Totals as sum(p.numel() for p in model.parameters()) of the HF models; the first three are
# the issue's anchors, the rest are the calibration data's n_params (measured on the H100).
KNOWN_TOTALS = {
    "Qwen/Qwen2.5-0.5B-Instruct": 494_032_768,
    "meta-llama/Llama-3.1-8B-Instruct": 8_030_261_248,
    "google/gemma-3-1b-it": 999_885_952,
    "meta-llama/Llama-3.2-1B-Instruct": 1_235_814_400,
    "Qwen/Qwen3-1.7B": 1_720_574_976,
    "Qwen/Qwen2.5-3B-Instruct": 3_085_938_688,
    "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
    "Qwen/Qwen3-4B": 4_022_468_096,
}


@pytest.mark.parametrize("model_id,total", sorted(KNOWN_TOTALS.items()))
def test_parameter_totals_match_known_values(model_id, total):
    assert resolve_model(model_id).n_params == total


def test_llama_8b_counts_by_kind():
    c = resolve_model("meta-llama/Llama-3.1-8B-Instruct").param_counts()
    V, h, L, I = 128_256, 4096, 32, 14_336
    assert c.embeddings == V * h
    assert c.lm_head == V * h  # untied
    assert c.attention == L * (h * h + 2 * h * 1024 + h * h)
    assert c.mlp == L * 3 * h * I
    assert c.norms == L * 2 * h + h


def test_tied_embeddings_have_no_separate_head():
    c = resolve_model("Qwen/Qwen2.5-0.5B-Instruct").param_counts()
    assert c.lm_head == 0


def test_every_shipped_profile_matches_its_recorded_total():
    from planner.specs.model import MODELS_DIR
    from planner.specs.shipped import json_files

    checked = 0
    for path in json_files(MODELS_DIR):
        prof = json.loads(path.read_text())
        if prof.get("params_total"):
            assert resolve_model(prof["id"]).n_params == prof["params_total"], prof["id"]
            checked += 1
    assert checked >= 25


def test_issue_models_are_shipped():
    ids = set(shipped_model_ids())
    for m in ["Qwen/Qwen3-30B-A3B", "meta-llama/Llama-3.3-70B-Instruct", "mistralai/Mistral-Small-24B-Instruct-2501",
              "google/gemma-2-9b-it", "google/gemma-3-27b-it", "microsoft/phi-4", "microsoft/Phi-4-mini-instruct",
              "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"]:
        assert m in ids


def test_lookup_is_case_insensitive_and_accepts_aliases():
    assert resolve_model("qwen/QWEN2.5-0.5b-instruct").model_id == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model("qwen2.5-0.5b-instruct").model_id == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model("Gemma-3-1B-IT").model_id == "google/gemma-3-1b-it"
    assert resolve_model("qwen3-30b").model_id == "Qwen/Qwen3-30B-A3B"


def _shipped_aliases() -> list[tuple[str, str]]:
    from planner.specs.model import MODELS_DIR

    return sorted((alias, prof["id"]) for path in MODELS_DIR.glob("*.json")
                  for prof in [json.loads(path.read_text())] for alias in prof.get("aliases", ()))


def test_no_alias_resolves_to_another_checkpoint():
    """An alias without 'instruct'/'it' names the base model: it never resolves to the Instruct profile."""
    from planner.specs.model import _is_tuned

    swapped = resolved = 0
    for alias, model_id in _shipped_aliases():
        if _is_tuned(model_id) and not _is_tuned(alias):
            with pytest.raises(UnknownModelError, match=rf"^'{alias}' names a base model that is not shipped"):
                resolve_model(alias)
            swapped += 1
        else:
            assert resolve_model(alias).model_id == model_id, alias
            resolved += 1
    assert swapped >= 15 and resolved >= 25  # both kinds are exercised


def test_base_alias_names_the_shipped_instruct_model_and_how_to_pass_the_base():
    with pytest.raises(UnknownModelError) as err:
        resolve_model("qwen2.5-3b")
    assert str(err.value) == (
        "'qwen2.5-3b' names a base model that is not shipped; the planner does not plan it as "
        "Qwen/Qwen2.5-3B-Instruct, another checkpoint: pass --model Qwen/Qwen2.5-3B-Instruct to plan for that one, "
        "or for the base model pass its config.json (downloaded where the Hub is reachable) or the model's local "
        "directory to --model")


def test_base_hub_id_offline_says_offline_and_names_the_instruct_relative():
    # conftest sets HF_HUB_OFFLINE=1: the Hub is never asked, and this id is in no HF cache here
    with pytest.raises(UnknownModelError) as err:
        resolve_model("Qwen/Qwen3-4B-Base")
    assert str(err.value) == (
        "'Qwen/Qwen3-4B-Base' names a base model that is not shipped and not in the HF cache, and the Hub cannot be "
        "asked: this machine is offline (HF_HUB_OFFLINE=1); the planner does not plan it as Qwen/Qwen3-4B, another "
        "checkpoint: pass --model Qwen/Qwen3-4B to plan for that one, or for the base model pass its config.json "
        "(downloaded where the Hub is reachable) or the model's local directory to --model")


def test_offline_hub_id_says_offline_and_how_to_pass_a_config():
    with pytest.raises(UnknownModelError) as err:
        resolve_model("acme/not-a-model-7b")
    assert str(err.value) == (
        "unknown model 'acme/not-a-model-7b': not a shipped profile or a local path, not in the HF cache, and the Hub "
        "cannot be asked: this machine is offline (HF_HUB_OFFLINE=1); `plan models` lists the shipped models; "
        "otherwise pass its config.json (downloaded where the Hub is reachable) or the model's local directory "
        "to --model")


def test_unreachable_hub_is_named_as_such(monkeypatch):
    import planner.specs.model as ms

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(ms, "_hub_reachable", lambda timeout_s=2.0: False)
    asked = []
    monkeypatch.setattr(ms, "_autoconfig_dict", lambda model_id, ask_hub=True: asked.append(ask_hub))
    with pytest.raises(UnknownModelError, match=r"^unknown model 'acme/x': not a shipped profile or a local path, "
                                                r"not in the HF cache, and the Hub cannot be asked: the Hub "
                                                r"\(huggingface\.co\) is unreachable from this machine; "):
        resolve_model("acme/x")
    assert asked == [False]  # the HF cache is still tried, the Hub is not


def test_hub_that_does_not_serve_an_id_is_not_called_offline(monkeypatch):
    import planner.specs.model as ms

    monkeypatch.setattr(ms, "_hub_offline_reason", lambda: None)
    monkeypatch.setattr(ms, "_autoconfig_dict", lambda model_id, ask_hub=True: None)
    with pytest.raises(UnknownModelError) as err:
        resolve_model("acme/x")
    assert "offline" not in str(err.value)
    assert str(err.value).startswith("unknown model 'acme/x': not a shipped profile or a local path, and neither "
                                     "the Hub nor the HF cache serves it (missing, gated or private); ")


def test_a_base_model_the_hub_serves_is_planned_from_its_own_config(monkeypatch):
    """Qwen/Qwen2.5-3B from the Hub or cache is planned as itself, not as the shipped Instruct profile."""
    import planner.specs.model as ms

    base_cfg = {**json.loads((ms.MODELS_DIR / "Qwen__Qwen2.5-3B-Instruct.json").read_text())["config"],
                "vocab_size": 151_936 + 64}  # any difference shows which config was used
    monkeypatch.setattr(ms, "_hub_offline_reason", lambda: None)
    monkeypatch.setattr(ms, "_autoconfig_dict", lambda model_id, ask_hub=True: base_cfg)
    spec = resolve_model("Qwen/Qwen2.5-3B")
    assert spec.model_id == "Qwen/Qwen2.5-3B" and spec.vocab_size == 151_936 + 64
    assert spec.source.startswith("transformers AutoConfig")


@pytest.mark.parametrize("env,value,offline", [("HF_HUB_OFFLINE", "1", True), ("HF_HUB_OFFLINE", "true", True),
                                               ("TRANSFORMERS_OFFLINE", "1", True), ("HF_HUB_OFFLINE", "0", False)])
def test_offline_environment_values(monkeypatch, env, value, offline):
    import planner.specs.model as ms

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(env, value)
    monkeypatch.setattr(ms, "_hub_reachable", lambda timeout_s=2.0: True)
    reason = ms._hub_offline_reason()
    assert (reason == f"this machine is offline ({env}={value})") if offline else reason is None


def test_local_directory_and_config_path(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
           "max_position_embeddings": 512, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    by_dir = resolve_model(str(tmp_path))
    by_file = resolve_model(str(tmp_path / "config.json"))
    expected = 2 * 1000 * 64 + 2 * (64 * 64 * 2 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64) + 64
    assert by_dir.n_params == by_file.n_params == expected


def test_moe_counts_experts_and_router():
    spec = resolve_model("Qwen/Qwen3-30B-A3B")
    c = spec.param_counts()
    assert spec.is_moe and spec.num_experts == 128
    assert c.experts == 48 * 128 * 3 * 2048 * 768
    assert c.router == 48 * 2048 * 128


def test_gemma3_sliding_layers():
    spec = resolve_model("google/gemma-3-1b-it")
    assert spec.num_sliding_layers == 22 and spec.num_full_attention_layers == 4


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match=r"unknown model 'Qwen/Qwen2.5-0.5B-Instrct'.*did you mean"):
        resolve_model("Qwen/Qwen2.5-0.5B-Instrct")


def test_malformed_config_json(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"^malformed config.json at .*config.json: Expecting property name"):
        resolve_model(str(bad))


def test_config_missing_field():
    with pytest.raises(ConfigError, match=r"missing required field 'hidden_size'"):
        spec_from_config({"model_type": "llama", "num_hidden_layers": 2}, "x")


def test_config_bad_field_type():
    with pytest.raises(ConfigError, match=r"field 'num_hidden_layers' must be a positive integer, got -2"):
        spec_from_config({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": -2}, "x")
