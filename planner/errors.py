"""Errors the planner raises for bad input or impossible requests.

Every user-facing failure is a subclass of :class:`PlannerError`. The CLI catches
the base class once, prints ``<message>`` on one line of stderr and exits with 2.

    PlannerError
    ├── UnknownModelError       model id not shipped, not a local path, not on the Hub/cache
    ├── ConfigError             malformed or unsupported config.json
    ├── UnknownGpuError         GPU name not in profiles/gpus.json
    ├── NoGpuError              --gpu auto without an NVIDIA driver / NVML
    ├── InvalidSetupError       negative sizes, rank > hidden, utilisation out of range, ...
    ├── InfeasibleError         nothing fits; names the component and the closest plan
    ├── VersionError            unknown or unsupported library version
    ├── PreflightError          one or more pre-flight checks failed (severity error)
    ├── MissingDependencyError  an optional extra (torch, trl, ...) is needed for this path
    └── OutputError             a file cannot be written (missing or read-only folder, a folder in
                                its place, disk full, exists without --force, unsupported --plot format)
"""

from __future__ import annotations


class PlannerError(Exception):
    """Base class of every error the planner reports to a user."""


class UnknownModelError(PlannerError):
    pass


class ConfigError(PlannerError):
    pass


class UnknownGpuError(PlannerError):
    pass


class NoGpuError(PlannerError):
    pass


class InvalidSetupError(PlannerError):
    pass


class InfeasibleError(PlannerError):
    """Raised when no configuration fits. ``closest`` holds the nearest plan that does, if any."""

    def __init__(self, message: str, closest=None):
        super().__init__(message)
        self.closest = closest


class VersionError(PlannerError):
    pass


class PreflightError(PlannerError):
    def __init__(self, message: str, checks=()):
        super().__init__(message)
        self.checks = tuple(checks)


class MissingDependencyError(PlannerError):
    pass


class OutputError(PlannerError):
    """A file the planner was asked to write cannot be written; the message names the path.
    Nothing is left behind: see :mod:`planner.files`."""
