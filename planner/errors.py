"""Errors the planner raises for bad input or impossible requests.

Every user-facing failure is a subclass of :class:`PlannerError`. The CLI catches the base class
once (planner/cli/__init__.py) and prints ``plan: error: <line>`` for each line of the message: an error
naming several problems (an invalid request, a malformed config.json) has one line per problem.
Exit codes: 3 for :class:`InfeasibleError` (the input is valid, nothing fits), 2 for every other
PlannerError (bad input); 1 is not an error but a printed configuration with an error-level
pre-flight check (or an estimate that does not fit), 0 success; 130 Ctrl-C, 141 closed stdout.

    PlannerError                                                    exit
    ├── UnknownModelError       model id not shipped, not a local      2
    │                           path, not on the Hub/cache; a name
    │                           no file system takes (> 255 chars,
    │                           ~nosuchuser/x)
    ├── ConfigError             malformed or unsupported config.json   2
    │                           (not UTF-8, NaN/Infinity, too deep, a
    │                           value of the wrong kind: one line per
    │                           key, naming the file;
    │                           planner.specs.config_contract), or a
    │                           malformed calibration profile
    ├── UnknownGpuError         GPU name not in profiles/gpus.json     2
    ├── NoGpuError              --gpu auto without an NVIDIA driver    2
    ├── InvalidSetupError       every problem of the request, one      2
    │                           line each (planner.search.request): types
    │                           (booleans are not integers, strings
    │                           not lists), ranges, relations
    │                           (context, TP, LoRA targets that match
    │                           nothing); estimate() alike
    ├── InfeasibleError         nothing fits; names the component      3
    │                           and the closest plan
    ├── VersionError            unknown or unsupported library         2
    │                           version
    ├── PreflightError          one or more pre-flight checks failed   2
    │                           (CheckReport.raise_for_errors; the
    │                           CLI reports checks with exit 1)
    ├── MissingDependencyError  an optional extra (torch, trl, ...)    2
    │                           is needed for this path
    └── OutputError             a file cannot be written (missing or   2
                                read-only folder, a folder in its
                                place, disk full, exists without
                                --force, unsupported --plot format)
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
    Nothing is left behind: see :mod:`planner.report.files`."""
