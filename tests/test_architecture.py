"""The package's imports flow one way: no cycle among its modules, and the groups in layers.

Imports are read from the source (inside functions and ``TYPE_CHECKING`` blocks too), so a
cycle cannot hide behind an import deferred into a function.
"""

import ast
from pathlib import Path

import scaling_search

PACKAGE = Path(scaling_search.__file__).parent
# Each group may import only from groups on its left (and from itself).
# settings.py (the typed, schema-checked settings) sits between the plan and the training.
LAYERS = ["foundation", "models", "plan", "settings", "train", "analysis", "steps", "apps"]
FOUNDATION = {"files", "tables", "environment"}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    out = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join(here + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            # A package importing its own modules is not an edge; a module importing one of its
            # ancestor packages is (``from scaling_search import X`` inside the package).
            if t and t != name and not t.startswith(name + "."):
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "apps"  # the package itself: its public API re-exports from every layer
    if parts[1] in LAYERS:  # a group, or settings.py
        return parts[1]
    return "foundation" if parts[1] in FOUNDATION else "apps"


def test_no_import_cycle():
    graph = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_a_cycle_would_be_found(tmp_path, monkeypatch):
    """The walk sees imports inside functions: a two-module loop through one is reported."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    mods = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    assert _imports("a", mods["a"], mods) == {"b"}
    assert _imports("b", mods["b"], mods) == {"a"}


def test_groups_import_only_from_the_layers_below():
    wrong = []
    for module, targets in _graph().items():
        mine = LAYERS.index(_group(module))
        wrong += [f"{module} -> {t}" for t in sorted(targets) if LAYERS.index(_group(t)) > mine]
    assert wrong == []


def test_an_import_of_the_package_itself_from_inside_counts(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from pkg.low import f\n")
    (tmp_path / "pkg" / "low.py").write_text("from pkg import g\n")
    mods = {"pkg": tmp_path / "pkg" / "__init__.py", "pkg.low": tmp_path / "pkg" / "low.py"}
    assert _imports("pkg.low", mods["pkg.low"], mods) == {"pkg"}
    assert _imports("pkg", mods["pkg"], mods) == set()  # a package importing its own module


def test_public_api_is_importable_from_the_package():
    for name in scaling_search.__all__:
        assert getattr(scaling_search, name) is not None, name


def test_reading_results_needs_no_torch():
    """The report app imports neither torch nor the networks (the public API is lazy)."""
    import subprocess
    import sys

    code = "import sys, scaling_search, scaling_search.report; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
