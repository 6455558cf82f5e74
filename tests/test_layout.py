"""The shape STYLE.md asks for, checked: no import circles in bench/, and bench/ names no task's metric."""

from __future__ import annotations

import ast

from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT

BENCH = ROOT / "bench"


def imports() -> dict[str, set[str]]:
    """Each bench module → the bench modules it imports anywhere (function-level imports included)."""
    names = {p.stem for p in BENCH.glob("*.py")}
    graph = {}
    for path in BENCH.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "bench":
                deps |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
                deps.add(node.module.split(".")[1])
        graph[path.stem] = deps - {path.stem}
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


def test_bench_names_no_task_metric():
    declared = {str(m.metric) for path in (CONF / "task").glob("*.yaml")
                for m in (OmegaConf.load(path).get("metric_list") or [])}
    assert {"f1_micro", "accuracy"} <= declared
    declared -= {"precision"}    # also the training precision's key (fp16/bf16/fp32) in bench/: another thing
    for path in BENCH.glob("*.py"):
        strings = {n.value for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & declared, f"{path.name} names a task's metric: {sorted(strings & declared)}"
