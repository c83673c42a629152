"""GPU specs: CUDA-reported totals, lookup and `--gpu auto` without a driver."""

import pytest

from planner.errors import NoGpuError, UnknownGpuError
from planner.specs.gpu import resolve_gpu, shipped_gpu_names

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


# Marketing memory per profile, in GiB (memory parts are binary: an "80GB" card holds 80 GiB of
# chips). Every shipped profile must be listed, so a new one comes with its size.
MARKETING_GIB = {
    "H100-80GB": 80, "H100-PCIe-80GB": 80, "H100-NVL-94GB": 94, "H200": 141, "H20-96GB": 96, "GH200-96GB": 96,
    "B200": 180, "A100-80GB": 80, "A100-40GB": 40, "L40S": 48, "L40": 48, "A40": 48, "L20": 48, "RTX-A6000": 48,
    "RTX-6000-Ada": 48, "RTX-PRO-6000-Blackwell": 96, "A10G": 24, "A10": 24, "L4": 24, "RTX-4090": 24,
    "RTX-3090": 24, "RTX-5090": 32, "RTX-5080": 16, "RTX-4080": 16, "RTX-4070-Ti": 12, "RTX-4070": 12,
    "RTX-4060-Ti-16GB": 16, "RTX-3060-12GB": 12, "T4": 16, "V100-16GB": 16, "V100-32GB": 32,
}
NEW_GPUS = ["RTX-3060-12GB", "RTX-4060-Ti-16GB", "RTX-4070", "RTX-4070-Ti", "RTX-4080", "RTX-5080", "A40", "L20",
            "H20-96GB", "GH200-96GB", "RTX-PRO-6000-Blackwell"]


def _entries():
    from planner.specs.gpu import _gpu_table

    return {e["name"]: e for e in _gpu_table()}


def test_every_profile_has_its_marketing_size_listed():
    assert set(MARKETING_GIB) == set(shipped_gpu_names())
    assert set(NEW_GPUS) <= set(shipped_gpu_names())


@pytest.mark.parametrize("name", sorted(MARKETING_GIB))
def test_cuda_total_is_below_the_marketing_size_and_above_90_percent(name):
    total = resolve_gpu(name).total_bytes
    marketing = MARKETING_GIB[name] * 1024**3
    # ECC on GDDR6 takes 1/16 (T4: 15360 of 16384 MiB), so the floor is 90%, not 95%
    assert 0.90 * marketing < total < marketing, (name, total / 1024**3)
    assert total % MIB == 0  # every figure is a whole number of MiB


@pytest.mark.parametrize("name", sorted(MARKETING_GIB))
def test_profile_fields_are_consistent(name):
    e = _entries()[name]
    major, minor = (int(x) for x in e["compute_capability"].split("."))
    assert e["bf16"] == (major >= 8)  # bf16 tensor cores from Ampere on
    assert e["fp8"] == ((major, minor) >= (8, 9))  # fp8 from Ada/Hopper on
    assert e["memory_bandwidth_gbs"] > 0 and e["memory_type"] in {"HBM2", "HBM2e", "HBM3", "HBM3e", "GDDR6",
                                                                   "GDDR6X", "GDDR7"}
    assert e["total_source"].strip()
    if "nvml_total_mib" in e:
        # NVML's total includes the driver's reservation: CUDA reports 0.2-1 GiB less
        gap_mib = e["nvml_total_mib"] - e["total_bytes"] // MIB
        assert 200 <= gap_mib <= 1000, (name, gap_mib)


@pytest.mark.parametrize("name", NEW_GPUS)
def test_new_profiles_say_where_their_total_comes_from(name):
    # none of them was read on a card here: each must say it is an estimate and what it is derived from
    src = _entries()[name]["total_source"]
    assert src.startswith("estimated: ") and ("MiB" in src or "GiB" in src)


def test_every_spelling_belongs_to_one_profile():
    from planner.specs.gpu import _entry_names, _gpu_key

    owner = {}
    for e in _entries().values():
        for n in _entry_names(e):
            assert owner.setdefault(_gpu_key(n), e["name"]) == e["name"], n


@pytest.mark.parametrize("spelling,name", [
    ("h100_80gb", "H100-80GB"), ("H100 80GB", "H100-80GB"), ("h100-80g", "H100-80GB"), ("H100", "H100-80GB"),
    ("a100_40gb", "A100-40GB"), ("A100 40", "A100-40GB"), ("nvidia a100 80gb", "A100-80GB"),
    ("rtx 4070 ti", "RTX-4070-Ti"), ("RTX4070", "RTX-4070"), ("GeForce RTX 5080", "RTX-5080"),
    ("rtx_3060_12gb", "RTX-3060-12GB"), ("4060 Ti 16GB", "RTX-4060-Ti-16GB"), ("rtx pro 6000", "RTX-PRO-6000-Blackwell"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000-Blackwell"), ("gh200 96gb", "GH200-96GB"),
    ("NVIDIA GH200 480GB", "GH200-96GB"), ("h20", "H20-96GB"), ("a40", "A40"), ("L20", "L20"),
    ("l40 48gb", "L40"), ("b200 sxm", "B200"), ("A10G 24GB", "A10G"), ("a10 24 GB", "A10"), ("a100 80 GB", "A100-80GB"),
])
def test_case_and_separators_are_forgiven(spelling, name):
    assert resolve_gpu(spelling).name == name


@pytest.mark.parametrize("given,line", [
    ("A100", "GPU 'A100' is ambiguous: it matches A100-80GB, A100-40GB; pass one of them to --gpu"),
    ("v100", "GPU 'v100' is ambiguous: it matches V100-16GB, V100-32GB; pass one of them to --gpu"),
    ("a100 pcie", "GPU 'a100 pcie' is ambiguous: it matches A100-80GB, A100-40GB; pass one of them to --gpu"),
    ("RTX 6000", "GPU 'RTX 6000' is ambiguous: it matches RTX-6000-Ada, RTX-PRO-6000-Blackwell; "
                 "pass one of them to --gpu"),
    # other sizes or variants of these exist and are not shipped: asked, never guessed
    ("3060", "GPU '3060' is not specific enough: the closest shipped profile is RTX-3060-12GB (12gb); "
             "pass --gpu RTX-3060-12GB if that is your card"),
    ("4060", "GPU '4060' is not specific enough: the closest shipped profile is RTX-4060-Ti-16GB (16gb, ti); "
             "pass --gpu RTX-4060-Ti-16GB if that is your card"),
    ("GH200", "GPU 'GH200' is not specific enough: the closest shipped profile is GH200-96GB (96gb); "
              "pass --gpu GH200-96GB if that is your card"),
    ("H1000", "unknown GPU 'H1000': did you mean H100-80GB, H200, H100-NVL-94GB? `plan gpus` lists the 31 shipped "
              "profiles; --gpu auto reads the card itself"),
    ("rtx 3080", "unknown GPU 'rtx 3080': did you mean RTX-5080, RTX-4080, RTX-3090? `plan gpus` lists the 31 "
                 "shipped profiles; --gpu auto reads the card itself"),
    ("quantum-9", "unknown GPU 'quantum-9': `plan gpus` lists the 31 shipped profiles; --gpu auto reads the card "
                  "itself"),
])
def test_ambiguous_vague_and_unknown_names_give_one_line(given, line):
    with pytest.raises(UnknownGpuError) as err:
        resolve_gpu(given)
    assert str(err.value) == line


def test_cli_ambiguous_gpu_is_one_line_and_exit_2(capsys):
    from planner.cli import main

    assert main(["estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "A100"]) == 2
    err = capsys.readouterr().err
    assert err == "plan: error: GPU 'A100' is ambiguous: it matches A100-80GB, A100-40GB; pass one of them to --gpu\n"


def test_auto_does_not_take_a_family_member_for_an_unknown_card(monkeypatch):
    """NVML names are matched exactly: a GH200 144G is not planned as the shipped 96 GB one."""
    import sys

    class Gh200_144(_FakeNvml):
        class _Mem:
            total = 146_831 * MIB  # hypothetical reading: only the name matters here
            used = 0
            free = total

        nvmlDeviceGetName = staticmethod(lambda h: "NVIDIA GH200 144G HBM3e")
        nvmlDeviceGetMemoryInfo = staticmethod(lambda h: Gh200_144._Mem)
        nvmlDeviceGetComputeRunningProcesses = staticmethod(lambda h: [])

    monkeypatch.setitem(sys.modules, "pynvml", Gh200_144)
    live = resolve_gpu("auto")
    assert live.name == "NVIDIA GH200 144G HBM3e"
    assert live.total_bytes == 146_831 * MIB - 480 * MIB


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
