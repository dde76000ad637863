"""The package's shape: no import cycle between its modules, and the public API as documented."""

from __future__ import annotations

import ast
import graphlib
import importlib
from pathlib import Path

import chanprune

SRC = Path(chanprune.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """Module -> the chanprune modules it imports, at any depth of its code (function-level
    imports count: they only hide a cycle). ``from pkg import sub`` imports the submodule."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if sub in modules else target)
        deps.intersection_update(modules)
        deps.discard(name)
    return graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "chanprune.analysis.propagate" in graph  # the walk found the stage subpackages
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None


def test_the_cycle_check_would_see_a_cycle():
    graph = import_graph()
    graph["chanprune.analysis.types"].add("chanprune.analysis.rules.linear")  # rules -> types
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        return
    raise AssertionError("a cycle went unnoticed")


def test_the_stages_are_subpackages_and_the_rules_import_only_shared_types():
    graph = import_graph()
    for stage in ("capture", "analysis", "liveness", "layout", "rewrite", "masking", "deploy"):
        assert (SRC / stage / "__init__.py").is_file(), stage
    for name, deps in graph.items():
        if name.startswith("chanprune.analysis.rules"):
            outside = {d for d in deps if not d.startswith("chanprune.analysis.rules")}
            assert outside <= {"chanprune.analysis.types"}, (name, outside)


def test_the_public_api():
    assert set(chanprune.__all__) == {
        *("HEURISTICS", "CaptureError", "ChanpruneError", "ExportError", "InputError", "MaskError"),
        *("Plan", "apply_masks", "count_macs", "count_params", "export", "ideal", "mask", "plan"),
        *("load_program", "load_pruned", "recalibrate", "save_program", "save_pruned", "to_onnx"),
    }
    assert all(hasattr(chanprune, n) for n in chanprune.__all__)
    from chanprune.deploy import ort_runner, ort_session, to_onnx  # noqa: F401  (documented)


def _chanprune_imports(path: Path):
    """(module, names) of every chanprune import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = None
    if SRC in path.parents:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level and package:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] == "chanprune":
                yield node.lineno, module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "chanprune":
                    yield node.lineno, a.name, []


def test_every_chanprune_import_resolves():
    """Function-level imports, benchmarks and studies run rarely: an import left behind by a
    move would only fail there, so check every one here."""
    root = SRC.parents[1]
    files = [
        *SRC.rglob("*.py"),
        *(root / "benchmarks").rglob("*.py"),
        *(root / "tests").rglob("*.py"),
    ]
    broken = []
    for path in files:
        for line, module, names in _chanprune_imports(path):
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                broken.append(f"{path}:{line}: {e}")
                continue
            for n in names:
                if not hasattr(mod, n):
                    try:
                        importlib.import_module(f"{module}.{n}")
                    except ImportError:
                        broken.append(f"{path}:{line}: {module} has no {n}")
    assert not broken, "\n".join(broken)
