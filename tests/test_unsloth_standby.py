"""UNSLOTH_VLLM_STANDBY's utilisation rule release by release, as the unsloth_zoo wheels have it
(planner.specs.versions.UnslothFacts.standby_rule; citations there)."""

import pytest

from planner.runtimes.unsloth import requested_utilization, unsloth_estimate
from planner.specs.gpu import resolve_gpu
from planner.specs.versions import unsloth_facts

RTX_4090 = resolve_gpu("RTX-4090").total_bytes  # 23.65 GiB: ten_percent 2.37
T4 = resolve_gpu("T4").total_bytes              # 14.74 GiB: ten_percent 1.47


@pytest.mark.parametrize("release, vllm, kept", [
    ("2025.9.6", "0.10.2", 0.8),      # no override yet
    ("2025.9.7", "0.10.2", 0.9),      # raised to 0.9 (:1371)
    ("2025.10.6", "0.10.2", 0.9),
    ("2025.10.8", "0.10.2", 0.8),     # raised to 0.8 only: 0.8 is kept (:1466)
    ("2025.10.9", "0.10.2", 0.8),
    ("2025.10.10", "0.10.2", 0.9),    # replaced by the >= 2.0 GiB tier, 0.9 (:1466-1476)
    ("2025.11.1", "0.11.2", 0.9),
    ("2025.11.2", "0.11.2", 0.875),   # the 2.0-2.5 GiB tier of the new table (:1541-1549)
    ("2025.11.5", "0.11.2", 0.875),   # no x0.95 yet
    ("2025.11.6", "0.11.2", 0.83125),  # x0.95 with vLLM >= 0.11 (:1686)
    ("2025.11.6", "0.10.2", 0.875),
])
def test_standby_on_a_24gb_card_asked_0_8(release, vllm, kept):
    got, _why = requested_utilization(unsloth_facts(release), 0.8, True, RTX_4090, vllm)
    assert got == pytest.approx(kept)


def test_tiers_le_lowers_a_request_at_or_below_0_9_and_keeps_one_above():
    facts = unsloth_facts("2025.10.13")
    assert facts.standby_rule == "tiers_le"
    got, why = requested_utilization(facts, 0.9, True, T4, "0.10.2")
    assert got == pytest.approx(0.85) and why.startswith("standby lowers 0.9 to 0.85")
    assert requested_utilization(facts, 0.95, True, T4, "0.10.2")[0] == 0.95
    assert requested_utilization(facts, 0.5, False, T4, "0.10.2") == (0.5, "as requested")


def test_release_rows_split_where_the_wheels_change():
    assert unsloth_facts("2025.10.9").standby_floor == 0.8
    assert not unsloth_facts("2025.10.13").rounds_lora_rank and unsloth_facts("2025.11.1").rounds_lora_rank
    assert unsloth_facts("2025.11.5").batch_table == "v2025" and unsloth_facts("2025.11.6").batch_table == "v2026"
    assert not unsloth_facts("2025.11.3").standby_util_override_env
    assert unsloth_facts("2025.11.4").standby_util_override_env


def test_a_24gb_card_with_standby_receives_what_the_release_sets():
    """0.8 asked on an RTX 4090: 2025.10.8 keeps 0.8 (0.79 received after the memory in use before
    vLLM), 2025.10.10 gives 0.9 (0.89), 2025.11.3 0.875 (0.866, the ~0.86 the issue names)."""
    got = {v: unsloth_estimate("Qwen/Qwen2.5-3B-Instruct", "RTX-4090", standby=True, gpu_memory_utilization=0.8,
                               unsloth_version=v, vllm_version="0.10.2", load_in_4bit=False,
                               max_seq_length=2048).vllm_gpu_memory_utilization
           for v in ("2025.10.8", "2025.10.10", "2025.11.3")}
    assert got["2025.10.8"] == pytest.approx(0.79, abs=0.01)
    assert got["2025.10.10"] == pytest.approx(0.89, abs=0.01)
    assert got["2025.11.3"] == pytest.approx(0.866, abs=0.01)
