"""The shape STYLE.md asks for, checked: no import circles in bench/, and bench/ names no task's metric."""

from __future__ import annotations

import ast
import re

from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT

BENCH = ROOT / "bench"
# The library's layers, lowest first: a subpackage imports only from its own layer and those below it, never an
# entry point (bench/<verb>.py), which may import anything.
LAYERS = ["core", "taskdata", "models", "pipeline", "sweeping", "analysis"]


def module_name(path) -> str:
    """``bench/pipeline/train.py`` → ``pipeline.train``; ``bench/run.py`` → ``run``."""
    rel = path.relative_to(BENCH).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imports() -> dict[str, set[str]]:
    """Each bench module → the bench modules it imports anywhere (function-level imports included)."""
    paths = sorted(BENCH.rglob("*.py"))
    names = {module_name(p) for p in paths}
    graph = {}
    for path in paths:
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bench":
                base = node.module.partition(".")[2]
                for alias in node.names:
                    full = f"{base}.{alias.name}" if base else alias.name
                    deps.add(full if full in names else base)
            elif isinstance(node, ast.Import):
                deps |= {a.name.partition(".")[2] for a in node.names if a.name.startswith("bench.")}
        graph[module_name(path)] = {d for d in deps if d} - {module_name(path)}
    return graph


def test_bench_has_no_import_circle():
    graph = imports()
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                assert dep != start, f"bench.{start} imports itself through bench.{dep}'s imports"
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)


def test_the_library_is_in_layered_subpackages_below_the_entry_points():
    graph = imports()
    packages = {p.name for p in BENCH.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), f"subpackages {sorted(packages)} are not the layers {LAYERS}"
    for module, deps in graph.items():
        if "." not in module:
            continue   # an entry point, bench/<verb>.py, or a subpackage's __init__
        layer = LAYERS.index(module.split(".")[0])
        for dep in deps:
            assert "." in dep or dep in packages, f"bench.{module} imports the entry point bench.{dep}"
            assert LAYERS.index(dep.split(".")[0]) <= layer, (
                f"bench.{module} ({LAYERS[layer]}) imports bench.{dep}, a layer above it ({LAYERS})")


def test_one_place_knows_where_the_configs_are():
    for path in BENCH.rglob("*.py"):
        text = path.read_text()
        assert "parent.parent" not in text and "parents[" not in text or path.name == "paths.py", (
            f"{path.relative_to(ROOT)} computes a folder of the checkout itself; use bench.core.paths")


def test_bench_names_no_task_metric():
    declared = {str(m.metric) for path in (CONF / "task").glob("*.yaml")
                for m in (OmegaConf.load(path).get("metric_list") or [])}
    assert {"f1_micro", "accuracy"} <= declared
    declared -= {"precision"}    # also the training precision's key (fp16/bf16/fp32) in bench/: another thing
    for path in BENCH.rglob("*.py"):
        strings = {n.value for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & declared, f"{path.name} names a task's metric: {sorted(strings & declared)}"


def test_the_architecture_page_lists_every_module_of_the_tree():
    page = (ROOT / "docs/architecture.md").read_text()
    listed = set(re.findall(r"^- `((?:bench|methods|tasks)/[\w/]+\.py)`: \S", page, flags=re.M))
    tree = {str(p.relative_to(ROOT)) for d in ("bench", "methods", "tasks") for p in (ROOT / d).rglob("*.py")
            if p.name != "__init__.py"}
    assert listed == tree, (f"docs/architecture.md lists {sorted(listed - tree)} (gone) "
                            f"and misses {sorted(tree - listed)}")


def test_every_documented_entry_point_exists():
    """Every ``python -m bench.X`` and ``--module bench.X`` the README, the docs and the Makefile show is a module."""
    import importlib.util

    texts = [(ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text(),
             *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]
    shown = {m for text in texts for m in re.findall(r"(?:-m|--module) (bench(?:\.\w+)+)", text)}
    assert {"bench.run", "bench.sweep", "bench.compare", "bench.environment"} <= shown
    missing = sorted(m for m in shown if importlib.util.find_spec(m) is None
                     or '__name__ == "__main__"' not in (ROOT / (m.replace(".", "/") + ".py")).read_text())
    assert not missing, f"documented but not an entry point: {missing}"


def test_the_sweeps_commands_run_entry_points():
    """conf/sweep.yaml's cell, base and search commands name modules that do something when run (a library module
    without a ``__main__`` block exits 0 at once: a base step that silently built nothing)."""
    sweep = OmegaConf.load(CONF / "sweep.yaml")
    for key in ("cell_cmd", "base_cmd", "search_cmd"):
        cmd = [str(a) for a in sweep[key]]
        module = cmd[cmd.index("--module" if "--module" in cmd else "-m") + 1]
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file() and '__name__ == "__main__"' in path.read_text(), f"{key}: {module} is no entry point"


def test_lines_fit_in_120_columns():
    """STYLE.md's line length, in the library, the methods, the tasks, the scripts and the tests."""
    long = [f"{p.relative_to(ROOT)}:{i}" for d in ("bench", "methods", "tasks", "scripts", "tests")
            for p in sorted((ROOT / d).rglob("*.py")) for i, line in enumerate(p.read_text().splitlines(), 1)
            if len(line) > 120]
    assert not long, f"{len(long)} lines over 120 columns: {long[:20]}"
