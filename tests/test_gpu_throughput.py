"""Every shipped GPU profile carries the throughput facts planner.timing reads, each with its source."""

import pytest

from planner.specs.gpu import resolve_gpu, shipped_gpu_names


@pytest.mark.parametrize("name", shipped_gpu_names())
def test_every_shipped_gpu_has_throughput_facts(name):
    g = resolve_gpu(name)
    half = g.peak_tflops("bf16") or g.peak_tflops("fp16")
    assert half > g.peak_tflops("fp32") > 0  # tensor cores beat the FP32 units on every card
    assert g.memory_bandwidth_gbs > 0 and g.pcie_gbs > 0 and g.nvlink_gbs >= 0
    assert g.throughput_source
    assert g.peak_tflops("bf16") == 0 or g.bf16  # no bf16 throughput claimed for a card without bf16
    assert g.peak_tflops("fp8") == 0 or g.fp8


def test_datasheet_figures_and_json():
    h100 = resolve_gpu("H100-80GB")
    assert h100.peak_tflops("bf16") == 989.4 and h100.peak_tflops("fp8") == 1978.9 and h100.nvlink_gbs == 900
    t4 = resolve_gpu("T4")
    assert t4.peak_tflops("bf16") == 0 and t4.peak_tflops("fp16") == 65 and t4.peak_tflops("nf4") == 0
    d = h100.to_dict()
    assert d["dense_tflops"]["bf16"] == 989.4 and "datasheet" in d["throughput_source"]
