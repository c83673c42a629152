"""Model specs: exact parameter counts, resolution order and bad input."""

import json

import pytest

from planner.errors import ConfigError, UnknownModelError
from planner.model_spec import resolve_model, shipped_model_ids, spec_from_config

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
    from planner.model_spec import MODELS_DIR
    from planner.shipped import json_files

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
    assert resolve_model("qwen2.5-0.5b").model_id == "Qwen/Qwen2.5-0.5B-Instruct"


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
