"""Where the shipped profiles (models, GPUs, calibration) are read from.

``profiles/`` sits at the top of the source tree; pyproject.toml installs it inside the package as
``planner/profiles/`` (package data), so a wheel carries it. Profiles are read through
``importlib.resources``: the installed copy when there is one (a wheel), else the source tree's
(a checkout, or ``pip install -e .``, whose package folder is the source tree's ``planner/``).
Either way the folder is a ``Traversable``: read it with ``iterdir()``, ``joinpath()``, ``open()``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import ConfigError


def profiles_dir():
    """The shipped profiles folder: ``gpus.json``, ``models/``, ``calibration/``."""
    installed = resources.files("planner").joinpath("profiles")
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "profiles"


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
