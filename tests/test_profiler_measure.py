"""The measured profile's flow (planner/profiler/measure.py) on the CPU with stand-ins: a memory
reader instead of CUDA's and torch's AdamW for bitsandbytes' AdamW8bit. What is checked is the
bookkeeping (rows, OOM as data, the profile file); the figures themselves need a GPU."""

import json
import sys
import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

from tiny_models import TINY_LLAMA  # noqa: E402

from planner.errors import MissingDependencyError  # noqa: E402
from planner.memory.calibration import find_calibration  # noqa: E402
from planner.profiler import measure as measure_mod  # noqa: E402
from planner.profiler.trace import Shape  # noqa: E402
from planner.specs.gpu import resolve_gpu  # noqa: E402
from planner.specs.model import resolve_model  # noqa: E402


class StubMemory:
    """Allocator figures that grow with every reading, in MiB; the device an H100."""

    def __init__(self):
        self.n = 0.0

    def _tick(self):
        self.n += 1.0
        return self.n

    def sync(self):
        pass

    def allocated(self):
        return 100.0 + self._tick()

    def reserved(self):
        return 200.0 + self._tick()

    def peak_allocated(self):
        return 300.0 + self._tick()

    def peak_reserved(self):
        return 400.0 + self._tick()

    def reset_peak(self):
        pass

    def empty_cache(self):
        pass

    def device_used_total(self):
        return 1000.0 + self._tick(), 81079.0

    def device_name(self):
        return "NVIDIA H100 80GB HBM3"


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_LLAMA))
    return resolve_model(str(path))


@pytest.fixture
def fake_bnb(monkeypatch):
    # PEFT asks importlib whether bitsandbytes exists (and caches the answer); let it see the real
    # machine before the stand-in goes into sys.modules, so the file also passes when run alone
    import peft.import_utils

    peft.import_utils.is_bnb_available()
    peft.import_utils.is_bnb_4bit_available()
    bnb = types.ModuleType("bitsandbytes")
    bnb.__version__ = "0.50.2"
    bnb.optim = types.SimpleNamespace(AdamW8bit=torch.optim.AdamW)
    monkeypatch.setitem(sys.modules, "bitsandbytes", bnb)
    return bnb


def test_rows_profile_and_oom_as_data(tiny, fake_bnb, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_CALIBRATION_DIR", str(tmp_path / "cal"))
    real_step = measure_mod._step

    def step(model, optimizer, shape, *args):
        if shape.batch_size == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB.")
        return real_step(model, optimizer, shape, *args)

    monkeypatch.setattr(measure_mod, "_step", step)
    shapes = [Shape(1, 16, 48), Shape(2, 16, 48), Shape(3, 16, 48)]
    result = measure_mod.measure(tiny, shapes, memory=StubMemory(), device="cpu", progress=False)

    stages = [r["stage"] for r in result.rows]
    assert stages == ["env", "load"] + ["step"] * 6
    steps = [r for r in result.rows if r["stage"] == "step"]
    assert [(r["batch"], r["grad_ckpt"], r["ok"]) for r in steps] == [
        (1, True, True), (2, True, True), (3, True, False), (1, False, True), (2, False, True), (3, False, False)]
    oom = steps[2]
    assert oom["error"] == "OOM" and oom["detail"].startswith("CUDA out of memory")
    for r in steps:
        if r["ok"]:
            for key in ("before_mib", "peak_alloc_fwdbwd_mib", "peak_reserved_fwdbwd_mib", "peak_alloc_step_mib",
                        "peak_reserved_step_mib", "grads_mib", "opt_state_mib", "device_used_mib_end"):
                assert isinstance(r[key], float), key
            assert r["opt_state_mib"] > 0  # AdamW state exists after the first step
    load = result.rows[1]
    assert load["n_trainable"] == 2 * 16 * (128 + 96 + 96 + 128 + 192 + 192 + 192)  # LoRA r16, 7 projections

    profile = json.loads(open(result.output).read())
    assert profile["gpu"]["name"] == "H100-80GB"
    assert profile["versions"]["bitsandbytes"] == "0.50.2"
    cal = find_calibration(tiny, resolve_gpu("H100-80GB"))
    assert cal is not None and cal.fit_for("bf16", "lora", 16) is not None


def test_missing_packages_name_their_use(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingDependencyError) as e:
        measure_mod.measure(tiny, [Shape(1, 8, 8)], memory=StubMemory(), device="cpu", progress=False)
    assert str(e.value) == ("plan profile --gpu needs peft, bitsandbytes (peft for the LoRA adapters; bitsandbytes "
                            "for the 8-bit AdamW optimizer and NF4 weights): pip install peft bitsandbytes")
