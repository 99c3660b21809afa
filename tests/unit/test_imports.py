"""No import cycles among crikpy's modules (issue 18): the layers import downwards only.

The graph is read from the source with ast: module-level imports only, that is, those that run
when a module is imported. Imports inside functions (deferred on purpose, e.g. boto3 for s3://
stores alone) and under `if TYPE_CHECKING:` are left out. Importing `crikpy.a.b` also runs
`crikpy/a/__init__.py`, so it counts as an import of the package too, except from inside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "crikpy"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module):
    """Import statements that run at import time: at module level, also inside if/try/with
    blocks, but not in functions, classes' methods or `if TYPE_CHECKING:`."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            pending.extend(node.orelse if _is_type_checking(node.test) else
                           [*node.body, *node.orelse])
        elif isinstance(node, (ast.Try, ast.With)):
            pending.extend([*node.body, *getattr(node, "orelse", []),
                            *getattr(node, "finalbody", []),
                            *[n for h in getattr(node, "handlers", []) for n in h.body]])
        elif isinstance(node, ast.ClassDef):
            pending.extend(n for n in node.body if not isinstance(
                n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _with_packages(importer: str, target: str) -> set[str]:
    """`target` and the packages above it that importing it runs, but not those the importer
    is inside of (they are being imported already)."""
    parts = target.split(".")
    found = {target}
    for n in range(1, len(parts)):
        package = ".".join(parts[:n])
        if not (importer == package or importer.startswith(package + ".")):
            found.add(package)
    return {m for m in found if m in MODULES and m != importer}


def _imports_of(name: str, anywhere: bool = False) -> set[str]:
    """The crikpy modules `name` imports when imported; `anywhere`: also those it imports in
    functions and for type checking only."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    nodes = ([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
             if anywhere else _top_level_imports(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: from the importer's package
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule sub when there is one
            names = [module, *(f"{module}.{alias.name}" for alias in node.names
                               if f"{module}.{alias.name}" in MODULES)]
        for target in names:
            if target == "crikpy" or target.startswith("crikpy."):
                targets |= _with_packages(name, target)
    return targets


GRAPH = {name: _imports_of(name) for name in MODULES}
ANY_IMPORT = {name: _imports_of(name, anywhere=True) for name in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph` as the modules along it (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _reaches(source: str, target: str) -> list[str] | None:
    """A chain of imports, any of them anywhere (in a function, for type checking only), from
    a module (or package) `source` to `target`, or None."""
    starts = [m for m in GRAPH if m == source or m.startswith(source + ".")]
    seen: dict[str, str | None] = {s: None for s in starts}
    queue = list(starts)
    while queue:
        node = queue.pop(0)
        if node == target or node.startswith(target + "."):
            chain = [node]
            while seen[chain[-1]] is not None:
                chain.append(seen[chain[-1]])
            return chain[::-1]
        for nxt in sorted(ANY_IMPORT[node]):
            if nxt not in seen:
                seen[nxt] = node
                queue.append(nxt)
    return None


def test_the_graph_is_read():
    """The parse finds what is known to be there, so that an empty graph cannot pass."""
    assert "crikpy.paths" in GRAPH["crikpy.settings"]
    assert "crikpy.stores.base" in GRAPH["crikpy.stores"]
    assert "crikpy.stores" not in GRAPH["crikpy.stores.base"]  # its own package: not an edge
    assert "crikpy.stores.s3.store" in ANY_IMPORT["crikpy.stores"] - GRAPH["crikpy.stores"]


def test_a_cycle_is_found_and_shown():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("source, target", [
    ("crikpy.settings", "crikpy.checkpoint"),  # the config layer knows nothing of the format
    ("crikpy.checkpoint.manifest", "crikpy.settings"),  # nor the format of the config
    ("crikpy.checkpoint.extras", "crikpy.settings"),
    ("crikpy.stores", "crikpy.settings"),  # stores take their options, not the settings
    ("crikpy.paths", "crikpy.settings"),  # shared by both: imports neither
    ("crikpy.paths", "crikpy.checkpoint"),
    ("crikpy.settings_table", "crikpy.settings"),
])
def test_named_layers_do_not_import_upwards(source, target):
    chain = _reaches(source, target)
    assert chain is None, f"{source} imports {target}: " + " -> ".join(chain or [])


def test_no_import_cycle_among_crikpys_modules():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _unit(module: str) -> str:
    """The layer a module belongs to: its subpackage of crikpy (crikpy.checkpoint, ...), or
    itself for a top-level module."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_among_crikpys_packages():
    """settings -> checkpoint.manifest and checkpoint.extras -> settings made no cycle of
    modules, but one of layers: neither could be understood, or moved, without the other."""
    layers: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        layers.setdefault(_unit(name), set()).update(
            _unit(t) for t in targets if _unit(t) != _unit(name))
    cycle = _cycle(layers)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])
