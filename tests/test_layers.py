"""The house's arrows (issue 21): the layer map atop ``parallelize/__init__.py`` is true.

Every module of ``src/parallelize`` is in the map; no import points up a layer; and
no import cycle runs through any modules. Imports under ``if TYPE_CHECKING:`` are
for types only and never run, so they may name a class from above (an observer's
hooks are typed with the ``Run`` they observe); every other import counts, the
ones inside functions included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import parallelize

PACKAGE = Path(parallelize.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _type_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:``."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            for child in node.body:
                hidden.update(id(each) for each in ast.walk(child))
    return hidden


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports when it runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = _type_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {each for each in found if each in MODULES and each != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer_map() -> list[tuple[str, list[str]]]:
    """The map atop ``__init__.py``: (layer, entries) from the top down."""
    doc = parallelize.__doc__ or ""
    block = doc.split("::", 1)[1]
    layers: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if not line.startswith("    ") or line.startswith("     ") or not line.strip():
            continue  # not in the block, a continuation of a job, or blank
        text = line.strip()
        if header := re.fullmatch(r"\[(.+)\]", text):
            layers.append((header.group(1), []))
        else:
            layers[-1][1].append(text.split()[0])
    return layers


LAYERS = _layer_map()


def _rank(module: str) -> tuple[int, str] | None:
    """The layer (0: the top) and the map's entry that covers ``module``."""
    best: tuple[int, str] | None = None
    for rank, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            dotted = "parallelize" if entry == "parallelize" else f"parallelize.{entry.rstrip('/')}"
            covers = module == dotted or (entry.endswith("/") and module.startswith(dotted + "."))
            if covers and (best is None or len(dotted) > len(best[1])):
                best = (rank, dotted)
    return best


def test_the_map_lists_every_module() -> None:
    unlisted = sorted(name for name in MODULES if _rank(name) is None)
    assert not unlisted, f"modules missing from the map atop parallelize/__init__.py: {unlisted}"
    listed = {entry for _, entries in LAYERS for entry in entries}
    gone = sorted(
        entry
        for entry in listed
        if not any(_rank(name) is not None and _covers(entry, name) for name in MODULES)
    )
    assert not gone, f"entries of the map that name no module: {gone}"


def _covers(entry: str, module: str) -> bool:
    dotted = "parallelize" if entry == "parallelize" else f"parallelize.{entry.rstrip('/')}"
    return module == dotted or (entry.endswith("/") and module.startswith(dotted + "."))


def test_no_import_points_up_a_layer() -> None:
    up = []
    for name, targets in sorted(GRAPH.items()):
        here = _rank(name)
        for target in sorted(targets):
            there = _rank(target)
            if here is not None and there is not None and there[0] < here[0]:
                up.append(f"{name} ({LAYERS[here[0]][0]}) imports {target} ({LAYERS[there[0]][0]})")
    assert not up, "imports that point up:\n" + "\n".join(up)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_the_checks_see_a_cycle_and_an_import_up() -> None:
    """The walk itself works: a made-up cycle is found, the real graph has edges."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "parallelize._engine" in GRAPH["parallelize._api"]
    assert _rank("parallelize._api") is not None
    assert _rank("parallelize._errors") is not None
    assert _rank("parallelize._api") < _rank("parallelize._errors")  # type: ignore[operator]
