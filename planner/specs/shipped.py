"""Where the shipped profiles (models, GPUs, calibration) are read from.

``profiles/`` sits at the top of the source tree; pyproject.toml installs it inside the package as
``planner/profiles/`` (package data), so a wheel carries it. The installed copy is used when there is
one (a wheel), else the source tree's (a checkout, or ``pip install -e .``); a package that is not on
disk (a zip) is read through ``importlib.resources``. Either way the folder is read only with
``iterdir()``, ``joinpath()``, ``open()``, ``is_dir()`` and ``is_file()`` (a ``Path`` or a ``Traversable``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def profiles_dir():
    """The shipped profiles folder: ``gpus.json``, ``models/``, ``calibration/``.

    An installed package on disk has it beside its modules (``planner/profiles/``), a source checkout
    at the top of the tree; only a package that is not on disk (a zip) needs ``importlib.resources``,
    which costs a plan 6 ms to import."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "profiles", package.parent / "profiles"):
        if folder.is_dir():
            return folder
    from importlib import resources

    return resources.files("planner").joinpath("profiles")


PROFILES_DIR = profiles_dir()


def require(path):
    """``path`` (a shipped file or folder) itself; a ``ConfigError`` when the installation lacks it."""
    if not (path.is_file() or path.is_dir()):
        raise ConfigError(f"shipped profiles not found at {path}: the installation is incomplete "
                          f"(reinstall grpo-vram-planner, or run from a full source checkout)")
    return path


def json_files(folder) -> list:
    """The ``*.json`` files of a shipped folder, by name (none when the folder is absent)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.endswith(".json") and p.is_file()), key=lambda p: p.name)
