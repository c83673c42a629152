"""GPU specs: CUDA-reported totals, lookup and `--gpu auto` without a driver."""

import pytest

from planner.errors import NoGpuError, UnknownGpuError
from planner.gpu_spec import resolve_gpu, shipped_gpu_names

MIB = 1024**2


def test_h100_total_is_what_cuda_reports():
    # data/calibration: "NVIDIA H100 80GB HBM3 (CUDA reports 81079 MiB total)"
    assert resolve_gpu("H100-80GB").total_bytes == 81_079 * MIB


def test_required_gpus_are_shipped():
    names = {n.lower() for n in shipped_gpu_names()}
    for n in ["h100-80gb", "h100-pcie-80gb", "h200", "a100-80gb", "a100-40gb", "l40s", "a10g", "l4", "rtx-4090",
              "rtx-3090", "rtx-5090", "t4", "v100-16gb", "v100-32gb", "b200"]:
        assert n in names, n


def test_alias_and_nvml_name_resolve():
    assert resolve_gpu("h100").name == "H100-80GB"
    assert resolve_gpu("NVIDIA A100-SXM4-40GB").name == "A100-40GB"


def test_bf16_flag():
    assert resolve_gpu("T4").bf16 is False
    assert resolve_gpu("L4").bf16 is True


def test_unknown_gpu_lists_names():
    with pytest.raises(UnknownGpuError, match=r"^unknown GPU 'H1000': .*known GPUs: .*H100-80GB"):
        resolve_gpu("H1000")


def test_auto_without_driver_names_gpu_flag(monkeypatch):
    import builtins

    real_import = builtins.__import__

    class FakeNvml:
        @staticmethod
        def nvmlInit():
            raise RuntimeError("NVML Shared Library Not Found")

    def fake_import(name, *a, **k):
        if name == "pynvml":
            return FakeNvml
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(NoGpuError, match=r"^no NVIDIA GPU found .*use --gpu NAME, e\.g\. H100-80GB"):
        resolve_gpu("auto")


class _FakeNvml:
    """A stand-in for nvidia-ml-py: one L4 with another process holding 6 GiB."""

    class _Mem:
        total = 23_034 * 1024**2
        used = 6 * 1024**3 + 300 * 1024**2
        free = total - used

    class _Proc:
        usedGpuMemory = 6 * 1024**3

    nvmlInit = staticmethod(lambda: None)
    nvmlShutdown = staticmethod(lambda: None)
    nvmlDeviceGetCount = staticmethod(lambda: 1)
    nvmlDeviceGetHandleByIndex = staticmethod(lambda i: "h0")
    nvmlDeviceGetName = staticmethod(lambda h: "NVIDIA L4")
    nvmlDeviceGetMemoryInfo = staticmethod(lambda h: _FakeNvml._Mem)
    nvmlSystemGetDriverVersion = staticmethod(lambda: "580.65")
    nvmlDeviceGetComputeRunningProcesses = staticmethod(lambda h: [_FakeNvml._Proc])


def test_auto_reads_the_live_card_and_plans_around_other_processes(monkeypatch):
    import sys

    from planner import plan

    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml)
    live = resolve_gpu("auto")
    assert live.name == "L4" and live.total_bytes == resolve_gpu("L4").total_bytes
    assert live.other_process_bytes == 6 * 1024**3 and live.free_bytes == _FakeNvml._Mem.free
    from planner import estimate

    shared = plan("Qwen/Qwen2.5-0.5B-Instruct", "auto", max_completion_length=512)
    # every phase stays under the card less the margin less what the other process holds
    assert shared.peak_bytes <= live.total_bytes * 0.95 - (live.total_bytes - live.free_bytes)
    # vLLM's start-up check sees the other process: 0.7 of the card no longer starts
    kw = dict(vllm_gpu_memory_utilization=0.7, vllm_max_model_len=1024)
    assert estimate("Qwen/Qwen2.5-0.5B-Instruct", "L4", **kw).vllm.startup_ok
    crowded = estimate("Qwen/Qwen2.5-0.5B-Instruct", "auto", **kw)
    assert not crowded.vllm.startup_ok and crowded.vllm.errors[0].startswith("Free memory on device")
