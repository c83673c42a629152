"""What a wheel carries: every planner package and the shipped profiles (pyproject.toml lists them;
.ci/run builds the wheel and runs `plan` from a fresh install)."""

from pathlib import Path

import pytest

from planner.specs.shipped import PROFILES_DIR, json_files

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_config() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_planner_package_is_listed_for_the_wheel():
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "planner").rglob("__init__.py")}
    listed = set(_setuptools_config()["packages"])
    assert on_disk == {p for p in listed if not p.startswith("planner.profiles")}


def test_every_profiles_folder_is_shipped_as_package_data():
    cfg = _setuptools_config()
    assert cfg["package-dir"]["planner.profiles"] == "profiles"
    folders = {p.parent for p in (ROOT / "profiles").rglob("*.json")}
    shipped = {".".join(("planner", *p.relative_to(ROOT).parts)) for p in folders}
    assert shipped <= set(cfg["packages"])
    assert all(cfg["package-data"][pkg] == ["*.json"] for pkg in shipped)


def test_a_checkout_reads_the_profiles_of_its_own_tree():
    assert Path(str(PROFILES_DIR)).resolve() == (ROOT / "profiles").resolve()
    names = [p.name for p in json_files(PROFILES_DIR.joinpath("models"))]
    assert len(names) == len(list((ROOT / "profiles" / "models").glob("*.json"))) >= 25
    assert names == sorted(names)
    assert json_files(PROFILES_DIR.joinpath("no-such-folder")) == []


def test_an_installation_without_profiles_is_a_one_line_error(tmp_path, monkeypatch):
    from planner.specs import gpu as gpu_spec
    from planner.specs import model as model_spec
    from planner.errors import ConfigError

    monkeypatch.setattr(model_spec, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(gpu_spec, "GPUS_FILE", tmp_path / "gpus.json")
    model_spec._shipped_index.cache_clear()
    gpu_spec._gpu_table.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"shipped profiles not found at .*models: the installation is incomplete"):
            model_spec.shipped_model_ids()
        with pytest.raises(ConfigError, match=r"shipped profiles not found at .*gpus.json"):
            gpu_spec.shipped_gpu_names()
    finally:
        model_spec._shipped_index.cache_clear()
        gpu_spec._gpu_table.cache_clear()
