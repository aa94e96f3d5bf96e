"""The layers import only downward, the package's own modules are imported at the top of each
file (``registry.py`` is the one plugin loader that resolves them by name), and there are no
import cycles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "toolkit"
RANK = {"core": 0, "models": 1, "export": 2, "runtime": 3, "bench": 4, "serve": 4, "train": 4}
TOP = 5   # registry.py, cli.py, doctor.py, toolkit/__init__.py


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[1], TOP) if len(parts) > 1 else TOP


def _own_imports(path: Path):
    """(imported toolkit module, imported at the top of the file?) for every import."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    top = set(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "toolkit" or name.startswith("toolkit."):
                yield name, node in top


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str, modules: dict) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    upward = []
    for mod, path in modules.items():
        for target, _ in _own_imports(path):
            target = _resolve(target, modules)
            if target and _rank(target) > _rank(mod):
                upward.append(f"{mod} -> {target}")
    assert upward == [], "\n".join(sorted(set(upward)))


def test_own_modules_are_imported_at_the_top():
    hidden = [f"{mod} -> {target}" for mod, path in _modules().items()
              for target, at_top in _own_imports(path) if not at_top]
    assert hidden == [], "\n".join(sorted(set(hidden)))


def test_no_import_cycles():
    modules = _modules()
    graph = {m: {r for t, _ in _own_imports(p) if (r := _resolve(t, modules)) and r != m}
             for m, p in modules.items()}
    # a package's __init__ importing its own submodules is not a cycle through the package
    for m, deps in graph.items():
        graph[m] = {d for d in deps if not m.startswith(d + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif not state.get(d):
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])
    assert cycles == [], "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule can fail: a models module importing runtime is reported."""
    bad = PACKAGE / "models" / "_layer_probe.py"
    bad.write_text("from ..runtime.session import Session\n")
    try:
        modules = _modules()
        found = [t for t, _ in _own_imports(bad)]
        assert any(_rank(_resolve(t, modules)) > _rank("toolkit.models._layer_probe")
                   for t in found)
    finally:
        bad.unlink()
