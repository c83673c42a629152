"""Fix hints in the caller's language: the CLI's flags, or the Python API's keyword arguments.

Checks and errors are written once, naming CLI flags (``--optim adamw_torch``); the Python API
(planner.api) passes every message it raises or returns through :func:`to_python`, so a Python
user reads ``optim='adamw_torch'``:

    to_python("pip install bitsandbytes, or --optim adamw_torch")
    # "pip install bitsandbytes, or optim='adamw_torch'"
"""

from __future__ import annotations

import re

# words that follow a flag used as the subject of a sentence, not its value
_NOT_VALUES = frozenset("""must is are cannot can needs need leaves differ differs and or with to of for
as the a an only does do was were would will should may be has have larger smaller shorter exceeds""".split())
_FLAG = re.compile(r"(?<![\w-])--(no-)?([a-z][a-z0-9]*(?:[-_][a-z0-9]+)*)(?:[ =]([^\s;)]+))?")


def _value(text: str) -> str:
    """A flag's value as a Python literal: numbers as they are, LO,HI as a tuple, else a string."""
    parts = text.rstrip(",.").split(",")
    lits = []
    for p in parts:
        try:
            float(p)
            lits.append(p)
        except ValueError:
            lits.append(repr(p))
    return f"({', '.join(lits)})" if len(lits) > 1 else lits[0]


def to_python(text: str) -> str:
    """``text`` with each ``--flag VALUE`` as ``flag=VALUE`` (``--no-flag``: ``flag=False``; a flag
    without a value or as a sentence's subject: ``flag``). Commands in backticks stay as they are."""
    if not text or "--" not in text:
        return text
    text = text.replace("--no-vllm", "use_vllm=False")  # the one flag whose keyword is not its name

    def sub(m: re.Match) -> str:
        neg, name, value = m.group(1), m.group(2).replace("-", "_"), m.group(3)
        if neg:
            return f"{name}=False" + (f" {value}" if value else "")
        if value is None or value.startswith("--"):
            return name + (f" {value}" if value else "")
        word = value.rstrip(",.:")
        if word.lower() in _NOT_VALUES or word.startswith("<") or word.startswith("("):
            return f"{name} {value}"
        tail = value[len(word):]
        return f"{name}={_value(word)}{tail}"

    parts = text.split("`")
    return "`".join(_FLAG.sub(sub, p) if i % 2 == 0 else p for i, p in enumerate(parts))
