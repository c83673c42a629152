"""The folders of planner/ are its layers, and imports go one way: a module imports only from its own
folder or from folders below it (README, Layout). Every import counts, the ones inside functions too;
only ``if TYPE_CHECKING:`` blocks (types for the reader, nothing at run time) are exempt."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "planner"

# lowest first; a layer may import any layer before it
LAYERS = ["errors", "specs", "memory", "timing", "checks", "runtimes", "search", "report", "profiler", "api", "cli"]
TOP_LEVEL = {"__init__.py", "api.py", "errors.py"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[:1] != ["planner"]:
        raise ValueError(module)
    return "api" if len(parts) == 1 else parts[1]


def _runtime_imports(tree: ast.AST):
    """Import nodes, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in _runtime_imports(child))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def imports_of(path: Path) -> set[str]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
    found = set()
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("planner")}
        elif node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x: x may be a module
                found |= {f"{target}.{a.name}" if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(
                    ".py").exists() else target for a in node.names}
            else:
                found.add(target)
        elif (node.module or "").startswith("planner"):
            found.add(node.module)
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts), path


def test_every_folder_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS) - {"errors", "api"}


def test_imports_go_one_way():
    upward = []
    for module, path in modules():
        own = LAYERS.index(layer_of(module))
        for target in imports_of(path):
            if target == "planner":  # the package's __version__
                continue
            if LAYERS.index(layer_of(target)) > own:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_the_top_level_holds_the_api_and_the_entry_points_only():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL
    assert len(top) <= 10
