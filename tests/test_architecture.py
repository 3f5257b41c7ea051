"""The package's layers (docs/architecture.md): imports only go down, and there are no cycles.

Read from the source with ``ast`` (every import, module-level or inside a function), so the check
does not depend on import order. A component is a top-level module or subpackage of deltapatch.
"""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "deltapatch"

# rank of each component: a component may import components of the same or a lower rank
LAYERS = {
    "errors": 0, "scores": 0, "checkpoint": 0, "resolvers": 0, "allowlist": 0, "provenance": 0,
    "backbones": 1,
    "delta": 2, "patch": 2,
    "methods": 3,
    "training": 4, "cache": 4,
    "scenarios": 5,
    "reporting": 6,
    "train": 7, "evaluate": 7, "summary": 7, "report": 7, "cli": 7, "console": 7, "conf": 7, "__init__": 7,
}
# beside the stack: data may import only the leaves (rank 0) and itself
BESIDE = {"data": 0}


def component(module: str) -> str:
    """``deltapatch.training.module`` -> ``training``; ``deltapatch`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the deltapatch modules that ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "deltapatch"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "deltapatch":
                out.add(target)
                out |= {f"{target}.{a.name}" for a in node.names if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).exists()}
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        src = component(module_name(path))
        for target in imports_of(path):
            dst = component(target)
            if dst != src:
                edges.setdefault(src, set()).add(dst)
    return edges


def rank(c: str) -> int:
    return LAYERS[c] if c in LAYERS else BESIDE[c]


def test_every_component_has_a_layer():
    found = {component(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert found - set(LAYERS) - set(BESIDE) == set(), "add new components to LAYERS (and docs/architecture.md)"


def test_imports_go_down():
    upward = []
    for src, dsts in graph().items():
        for dst in dsts:
            if src in BESIDE:
                ok = rank(dst) <= BESIDE[src]
            else:
                ok = rank(dst) <= rank(src)
            if not ok:
                upward.append(f"{src} -> {dst}")
    assert not upward, f"upward imports: {sorted(upward)}"


def test_no_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check itself can fail: a data module importing methods is read as data -> methods."""
    fake = tmp_path / "deltapatch" / "data"
    (tmp_path / "deltapatch" / "methods").mkdir(parents=True)
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ..methods.base import Method\nimport deltapatch.training\n")
    found = imports_of_at(tmp_path, fake / "bad.py")
    assert {"deltapatch.methods.base", "deltapatch.training"} <= found
    assert rank("methods") > BESIDE["data"]


def imports_of_at(root: Path, path: Path) -> set[str]:
    global ROOT, PACKAGE
    saved = ROOT, PACKAGE
    ROOT, PACKAGE = root, root / "deltapatch"
    try:
        return imports_of(path)
    finally:
        ROOT, PACKAGE = saved
