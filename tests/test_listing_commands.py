"""`plan models` and `plan gpus`: aligned tables with a header row, one row per shipped profile."""

import json

import pytest

from planner.cli import main
from planner.cli._columns import columns
from planner.specs.gpu import resolve_gpu, shipped_gpu_names
from planner.specs.model import resolve_model, shipped_model_ids


def _table(capsys, argv) -> list[str]:
    assert main(argv) == 0
    return capsys.readouterr().out.rstrip("\n").split("\n")


def _cells(line: str, header: str) -> list[str]:
    """Cut ``line`` at the header's column starts (columns are separated by two spaces)."""
    starts, i = [], 0
    for name in [c for c in header.split("  ") if c]:
        i = header.index(name, i)
        starts.append(i)
        i += len(name)
    bounds = [*starts, None]
    return [line[a:b].strip() for a, b in zip(bounds, bounds[1:], strict=False)]


def test_columns_aligns_and_right_aligns_numbers():
    out = columns(("name", "n"), [("a", "1"), ("long-name", "100")], right=frozenset({1}))
    assert out.split("\n") == ["name         n", "---------  ---", "a            1", "long-name  100"]


def test_gpus_table_has_headers_and_one_aligned_row_per_profile(capsys):
    header, rule, *rows = _table(capsys, ["gpus"])
    assert header.split() == ["gpu", "memory", "(GiB)", "total", "from", "bf16", "fp8", "compute", "bandwidth",
                              "(GB/s)"]
    assert set(rule) <= {"-", " "}
    assert [_cells(r, header)[0] for r in rows] == shipped_gpu_names()
    by_name = {c[0]: c for c in (_cells(r, header) for r in rows)}
    for name in shipped_gpu_names():
        gpu, cells = resolve_gpu(name), by_name[name]
        assert float(cells[1]) == pytest.approx(gpu.total_bytes / 2**30, abs=0.005)
        assert cells[3] == ("yes" if gpu.bf16 else "no") and cells[5] == gpu.compute_capability
        assert float(cells[6].replace(",", "")) == gpu.memory_bandwidth_gbs
    assert by_name["H100-80GB"][2] == "reading"  # measured: shared/calibration
    assert by_name["RTX-5080"][2] == "estimate"


def test_models_table_has_headers_and_one_aligned_row_per_profile(capsys):
    header, rule, *rows = _table(capsys, ["models"])
    assert header.split() == ["model", "params", "(B)", "type", "layers", "hidden", "context"]
    assert len(rule) == len(header)
    assert [_cells(r, header)[0] for r in rows] == shipped_model_ids()
    for cells in (_cells(r, header) for r in rows):
        spec = resolve_model(cells[0])
        assert float(cells[1]) == pytest.approx(spec.n_params / 1e9, abs=0.005)
        assert int(cells[3]) == spec.num_layers and int(cells[5].replace(",", "")) == spec.max_position_embeddings
    assert any(c.endswith("(MoE)") for c in (_cells(r, header)[2] for r in rows))


@pytest.mark.parametrize("cmd,count", [("gpus", shipped_gpu_names), ("models", shipped_model_ids)])
def test_json_listing_is_unchanged(capsys, cmd, count):
    assert main([cmd, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(count())
