"""No function in planner/ is over 80 lines (``end_lineno - lineno + 1``, docstring included; nested
functions and methods count on their own as well as inside their parent).

KNOWN_LONG lists the functions still over the limit, being split elsewhere; it is empty now and must stay so.
The test fails both when a new long function appears and when a listed one is split (remove it here)."""

import ast
from pathlib import Path

import planner

MAX_LINES = 80
PACKAGE = Path(planner.__file__).resolve().parent

KNOWN_LONG: set[str] = set()


def _functions(node: ast.AST, prefix: str = ""):
    """(qualified name, lines) of every function under ``node``, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{child.name}"
            yield name, child.end_lineno - child.lineno + 1
            yield from _functions(child, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> dict[str, int]:
    """``"<path under root>:<qualified name>" -> lines`` for every function over ``limit`` lines."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        for name, lines in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            if lines > limit:
                found[f"{path.relative_to(root).as_posix()}:{name}"] = lines
    return found


def test_no_long_functions():
    found = long_functions()
    new = {k: v for k, v in found.items() if k not in KNOWN_LONG}
    split = KNOWN_LONG - set(found)
    assert not new, f"functions over {MAX_LINES} lines (split them along their phases): {new}"
    assert not split, f"no longer over {MAX_LINES} lines, remove from KNOWN_LONG: {sorted(split)}"


def test_the_walk_sees_nested_and_method_functions(tmp_path):
    def body(indent: str) -> str:
        return "\n".join(f"{indent}x{i} = {i}" for i in range(MAX_LINES)) + "\n"
    (tmp_path / "m.py").write_text("def short():\n    pass\n\n\nclass C:\n    def long(self):\n" + body(" " * 8)
                                   + "\n\ndef outer():\n    def inner():\n" + body(" " * 8))
    assert long_functions(tmp_path) == {"m.py:C.long": MAX_LINES + 1, "m.py:outer": MAX_LINES + 2,
                                        "m.py:outer.inner": MAX_LINES + 1}
