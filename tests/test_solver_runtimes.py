"""The one solver loop (planner.search.loop.solve_with) drives both runtimes; planner.api.plan_from_request
is the one entry of both."""

from dataclasses import dataclass

import pytest

import planner
from planner.api import plan_from_request
from planner.errors import InfeasibleError
from planner.search.loop import Best, Scored, Walk, solve_with
from planner.search.objective import Candidate
from planner.search.request import plan_request
from planner.search.solver import TRL_RUNTIME, runtime_of, solve
from planner.search.unsloth_solver import UNSLOTH_RUNTIME, solve_unsloth, unsloth_request
from planner.specs.topology import Topology

ONE = Topology(1, 1, "ddp", "colocate", vllm_tensor_parallel_size=1)


def test_runtime_of_picks_the_request_runtime():
    assert runtime_of(unsloth_request("Qwen/Qwen2.5-0.5B-Instruct", "T4")) is UNSLOTH_RUNTIME
    assert runtime_of(plan_request("Qwen/Qwen2.5-0.5B-Instruct", "T4")) is TRL_RUNTIME


def test_unsloth_through_the_one_loop_and_the_one_entry():
    req = unsloth_request("Qwen/Qwen2.5-0.5B-Instruct", "L4")
    assert solve(req).to_dict() == solve_unsloth(req).to_dict()
    p = plan_from_request(req, for_training=True)
    assert p.runtime == "unsloth" and p.fits
    assert p.checks and "script" in p.next_steps and "unsloth_zoo" in str(p.assumptions)


def test_best_keeps_the_first_of_equals_and_builds_only_improvements():
    built = []
    best = Best()
    for k, sleep, tag in [((1,), False, "a"), ((1,), False, "b"), ((2,), True, "c"), ((0,), False, "d")]:
        best.consider(k, sleep, lambda tag=tag: built.append(tag) or tag)
    found = best.found()
    assert (found.option, found.key, dict(found.by_sleep)) == ("c", (2,), {False: "a", True: "c"})
    assert built == ["a", "c"]
    assert Best().found("why").why == "why" and Best().found().option is None


@dataclass
class _Toy:
    """A runtime of two stages: the first has nothing under the budget, the second two candidates."""

    name: str = "toy"
    reads_environment: bool = False
    installed: tuple = ()

    def prepare(self, req):
        return req

    def budget(self, s):
        return 100

    def stages(self, s):
        return [1, 2, 3]

    def parts(self, s):
        return [ONE], []

    def candidates(self, s, stage, part, walk: Walk):
        if stage == 3:
            raise AssertionError("the first stage that fits ends the search")
        peaks = {1: [150], 2: [90, 120, 80]}[stage]
        walk.why = f"stage {stage}"
        for i, peak in enumerate(peaks):
            yield Scored(Candidate(512, 8, 1, i + 1, 0.5, False), peak, lambda i=i: (stage, i))

    def build(self, s, stage, chosen, found, rejected):
        return found[chosen].option

    def infeasible(self, s, found, rejected):
        return InfeasibleError(found[ONE].why)


def test_the_loop_keeps_what_fits_the_budget_and_ranks_with_the_objective():
    assert solve_with(_Toy(), None) == (2, 2)  # batch 3 (peak 80) beats batch 1; batch 2 is over the budget


class _Never(_Toy):
    def budget(self, s):
        return 10

    def stages(self, s):
        return [1, 2]

    def infeasible(self, s, found, rejected):
        return InfeasibleError(found[ONE].why)


def test_nothing_fits_names_the_last_stage():
    with pytest.raises(InfeasibleError, match="stage 2"):
        solve_with(_Never(), None)


def test_when_trl_cannot_fit_the_error_says_unsloth_can():
    # an 8B model on a T4: TRL needs a trainer copy and a vLLM copy of the weights; Unsloth shares one
    with pytest.raises(planner.InfeasibleError, match=r"runtime='unsloth' \(4-bit weights shared by the trainer "
                                                      r"and vLLM\) fits: per_device_train_batch_size \d+"):
        planner.plan("meta-llama/Llama-3.1-8B-Instruct", "T4")
    assert planner.plan("meta-llama/Llama-3.1-8B-Instruct", "T4", runtime="unsloth").fits  # solved, not guessed


def test_no_other_runtime_is_suggested_when_it_does_not_fit_either():
    with pytest.raises(planner.InfeasibleError) as e:
        planner.plan("Qwen/Qwen2.5-14B-Instruct", "T4", runtime="unsloth", weights="bf16")
    assert "runtime='trl'" not in str(e.value) and "fits:" not in str(e.value)
    with pytest.raises(planner.InfeasibleError) as e:
        planner.plan("meta-llama/Llama-3.3-70B-Instruct", "T4")
    assert "runtime='unsloth'" not in str(e.value)


def test_the_cli_names_the_other_runtime_as_a_flag(capsys):
    from planner.cli import main

    assert main(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "T4"]) == 3
    err = capsys.readouterr().err
    assert "; --runtime unsloth (4-bit weights shared by the trainer and vLLM) fits: " in err and err.count("\n") == 1
