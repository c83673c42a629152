"""Old TRL's full-logits head (memory/logprob_head.py) per release and setup, and the committed
CPU traces of each release's real code (benchmarks/old_trl_head.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from planner.memory.logprob_head import (
    LOGPROB_HEADS,
    logprob_head_bytes,
    plain_amp_head_bytes,
    plain_bf16_head_bytes,
    plain_bf16_inplace_head_bytes,
)
from planner.memory.trainer import TrainerSetup, trainer_memory
from planner.search.estimation import default_logprob_head
from planner.specs.model import resolve_model
from planner.specs.versions import trl_facts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "old_trl_head.txt"


@pytest.mark.parametrize("release,engine,head", [
    ("0.18.0", "amp", "plain"), ("0.18.0", "deepspeed", "plain-bf16-noentropy"),
    ("0.23.0", "amp", "plain"), ("0.23.0", "deepspeed", "plain-bf16"),
    ("0.26.0", "deepspeed", "plain-bf16"), ("1.1.0", "deepspeed", "plain-bf16-inplace"),
    ("1.9.0", "deepspeed", "plain-bf16-inplace"), ("1.10.0", "deepspeed", "plain-bf16"),
    ("1.16.0", "amp", "fused"), ("1.16.0", "deepspeed", "fused"),
])
def test_release_and_engine_pick_the_head(release, engine, head):
    assert default_logprob_head(release, engine) == head
    assert head in LOGPROB_HEADS


def test_release_facts_cited_from_the_wheels():
    assert (trl_facts("0.19.0").logprob_entropy, trl_facts("0.20.0").logprob_entropy) == (False, True)
    temps = [trl_facts(v).logprob_temperature for v in ("0.29.0", "1.0.0", "1.9.0", "1.10.0", "1.14.2")]
    assert temps == ["copy", "inplace", "inplace", "copy", "kernel"]


def test_head_formulas_per_logit():
    spec = resolve_model("Qwen/Qwen2.5-1.5B-Instruct")
    n = 4 * 1024 * spec.vocab_size  # B x C x V
    assert plain_amp_head_bytes(spec, 4, 1024) == 16 * n
    assert plain_bf16_head_bytes(spec, 4, 1024, entropy=False) == 4 * n
    assert plain_bf16_head_bytes(spec, 4, 1024) == 4 * n + 3 * 128 * spec.vocab_size * 2
    assert plain_bf16_inplace_head_bytes(spec, 4, 1024) == 8 * n
    # full fine-tuning adds the head weight's bf16 gradient
    assert logprob_head_bytes(spec, "plain", 4, 1024, lm_head_trainable=True) == 16 * n + spec.vocab_size * spec.hidden_size * 2


def test_old_trl_head_enters_the_trainer_peak():
    spec = resolve_model("Qwen/Qwen2.5-1.5B-Instruct")
    setups = {h: trainer_memory(spec, TrainerSetup(batch_size=8, completion_length=2048, logprob_head=h))
              for h in ("fused", "plain-bf16", "plain")}
    assert setups["fused"].peak_bytes < setups["plain-bf16"].peak_bytes < setups["plain"].peak_bytes
    assert setups["plain"].components["logprob_head"] > 12 * 8 * 2048 * spec.vocab_size


def _rows():
    rows = []
    for line in RESULTS.read_text().splitlines():
        if line.startswith(("#", "release ")):
            continue
        release, engine, model, batch, completion, head, plan, traced, _ = line.split()
        rows.append((release, engine, model, int(batch), int(completion), head, int(plan), int(traced)))
    return rows


def test_committed_traces_agree_within_5_percent():
    rows = _rows()
    assert {r[0] for r in rows} >= {"0.18.0", "0.23.0", "1.1.0"}
    assert {r[1] for r in rows} == {"amp", "deepspeed"}
    for release, engine, model, batch, completion, head, plan, traced in rows:
        # the committed planner figure is today's formula for the head today's code picks
        assert head == default_logprob_head(release, engine)
        assert plan == logprob_head_bytes(resolve_model(model), head, batch, completion)
        assert abs(plan / traced - 1) <= 0.05, (release, engine, model, batch, completion, plan, traced)


TRL_023 = ROOT / ".cache" / "reproduce" / "trl_0.23.0"  # built by benchmarks/reproduce.py --only old_trl_head


@pytest.mark.skipif(not (TRL_023 / "trl").is_dir() or importlib.util.find_spec("accelerate") is None,
                    reason="needs TRL 0.23.0 in .cache/reproduce/trl_0.23.0 and requests in .cache/reproduce/trl_deps "
                           "(python benchmarks/reproduce.py --only old_trl_head builds them)")
def test_live_trace_of_trl_023_small_cell():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import old_trl_head as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    try:
        t = bench.trace("0.23.0", "Qwen/Qwen2.5-1.5B-Instruct", 2, 512, "amp")
    except subprocess.CalledProcessError as e:
        pytest.fail(f"the TRL 0.23.0 trace failed: {e.stderr[-2000:]}")
    head, plan = bench.planned("0.23.0", "Qwen/Qwen2.5-1.5B-Instruct", 2, 512, "amp")
    assert head == "plain" and abs(plan / t["peak"] - 1) <= 0.05
