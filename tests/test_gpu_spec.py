"""GPU specs: CUDA-reported totals, lookup and `--gpu auto` without a driver."""

import pytest

from planner.errors import NoGpuError, UnknownGpuError
from planner.gpu_spec import resolve_gpu, shipped_gpu_names

MIB = 1024**2


def test_h100_total_is_what_cuda_reports():
    # shared/calibration: "NVIDIA H100 80GB HBM3 (CUDA reports 81079 MiB total)"
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
