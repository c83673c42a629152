"""Byte units. Every quantity inside the planner is an int number of bytes; GiB/MiB
appear only when formatting for people."""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3


def gib(n_bytes: float) -> float:
    """Bytes -> GiB (2**30), for display."""
    return n_bytes / GIB


def mib(n_bytes: float) -> float:
    """Bytes -> MiB (2**20), for display."""
    return n_bytes / MIB


def format_gib(n_bytes: float, digits: int = 2) -> str:
    """``12.34 GiB``: two decimals, always (vLLM's own log rounding differs: ``planner.memory.vllm.vllm_gib``)."""
    return f"{n_bytes / GIB:.{digits}f} GiB"
