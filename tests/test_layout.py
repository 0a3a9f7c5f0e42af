"""The package's shape, checked: dependencies point down the layers only, no module reads another's
private names, modules stay under 300 lines and functions under 60.

The layers, bottom up (README, "Architecture"): the root modules (errors, options, silence), io,
data, graph_queries (read-only analyses of a graph), passes (passes and rules only), runtime,
evaluate, then the workflows (export, optimize, quantize, prune, which do not import each other),
search (over the workflows; the recipe step `search:` calls it), recipes, report, cli. Run
`python -m pytest tests/test_layout.py -q` to check; a failure names the module and the import.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "onnxopt"
LAYERS = [
    {"onnxopt"},
    {"io"},
    {"data"},
    {"graph_queries"},
    {"passes"},
    {"runtime"},
    {"evaluate"},
    {"export", "optimize", "quantize", "prune"},
    {"search"},
    {"recipes"},
    {"report"},
    {"cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str:
    """The layer a module lives in: its subpackage, or "onnxopt" for the root modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "onnxopt"


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported onnxopt module, names taken from it) for every import in the file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("onnxopt"):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append((node.lineno, "<relative>", []))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("onnxopt")]
    return found


def test_imports_point_down_the_layers_only():
    wrong = []
    for path in _modules():
        source = _room(_name(path))
        for line, target, names in _imports(path):
            if target == "<relative>":
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: relative import (use onnxopt.<room>)"
                )
                continue
            # `from onnxopt.io import model_files` names a module; `from onnxopt import errors` too.
            rooms = {_room(f"{target}.{n}") for n in names if _is_module(f"{target}.{n}")}
            rooms = rooms or {_room(target)}
            for room in rooms:
                if room != source and RANK[room] >= RANK[source]:
                    wrong.append(
                        f"{path.relative_to(PACKAGE.parent)}:{line}: {source} imports {target} ({room})"
                    )
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_no_module_reads_another_modules_private_names():
    wrong = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        modules = {}  # local alias -> onnxopt module, for `alias._name`
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("onnxopt"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        wrong.append(
                            f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.module}.{alias.name}"
                        )
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, "private names read across modules:\n" + "\n".join(wrong)


def test_modules_and_functions_stay_small():
    big = []
    for path in _modules():
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(PACKAGE.parent)}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.name}() {length} lines"
                    )
    assert not big, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function:\n" + "\n".join(big)
    )


def test_rich_and_matplotlib_are_imported_by_the_report_layer_only():
    wrong = []
    for path in _modules():
        if _room(_name(path)) == "report":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(n.split(".")[0] in ("rich", "matplotlib") for n in names):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not wrong, "rich or matplotlib outside onnxopt/report:\n" + "\n".join(wrong)


@pytest.mark.parametrize("layer", sorted(RANK))
def test_every_layer_exists(layer):
    assert layer == "onnxopt" or (PACKAGE / layer / "__init__.py").is_file()


def _runtime_imports(path: Path) -> set[str]:
    """The onnxopt modules a file imports when it runs, at its top or inside a function (a
    function-level import that dodges a circle is still the circle); `if TYPE_CHECKING:` blocks
    never run and do not count."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("onnxopt"):
            named = {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
            found |= named if len(named) == len(node.names) else named | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("onnxopt")}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph` (module -> modules it imports), as the modules along it."""
    state, stack = {}, []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = "done"
        return None

    return next((c for m in sorted(graph) if m not in state and (c := visit(m))), None)


def test_no_import_circle_among_modules():
    graph = {_name(path): _runtime_imports(path) - {_name(path)} for path in _modules()}
    circle = _cycle(graph)
    assert circle is None, "modules that import each other (top level or in a function): " + " -> ".join(
        circle
    )


def test_test_folders_mirror_the_package():
    """Tests live in tests/<room>/ for the room they test (as hatch's do); the root keeps the
    whole-package tests (layout, README, end to end, fuzzing, the large model)."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders <= rooms, f"tests/ folders with no onnxopt room: {sorted(folders - rooms)}"
    assert rooms <= folders, f"rooms without a tests/ folder: {sorted(rooms - folders)}"
