"""The seams stay where the redesign put them: declarations on their classes, one home per concern."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from squeeze.registry import TASKS

ROOT = Path(__file__).resolve().parents[1]


def _constants(path: Path):
    """String constants of a module, without docstrings and without the items of list literals (word lists)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            skip.add(id(node.body[0].value))
        if isinstance(node, ast.List):
            skip.update(id(e) for e in node.elts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _production_files():
    return [p for d in ("squeeze", "analysis") for p in (ROOT / d).rglob("*.py")]


def test_task_names_live_only_in_the_tasks_and_the_registry():
    names = set(TASKS)
    found = [f"{p.relative_to(ROOT)}:{line} {v!r}" for p in _production_files()
             if "tasks" not in p.relative_to(ROOT).parts and p.name != "registry.py"
             for line, v in _constants(p) if v in names]
    assert not found, "task names hard-coded outside squeeze/tasks: " + ", ".join(found)


def test_layer_paths_live_only_in_families():
    from squeeze.families import FAMILIES

    paths = {f.layers for f in FAMILIES} | {"transformer.h", "encoder.layer.", "transformer.h."}
    found = [f"{p.relative_to(ROOT)}:{line} {v!r}" for p in _production_files() if p.name != "families.py"
             for line, v in _constants(p) if any(x in v for x in paths if "." in x)]
    assert not found, "layer paths outside squeeze/families.py: " + ", ".join(found)


def test_the_trainable_is_a_thin_adapter():
    from squeeze.driver import trial

    lines = inspect.getsource(trial.run_trial).splitlines()
    assert len(lines) <= 60, f"run_trial has {len(lines)} lines; the science belongs in squeeze.recipe"
    src = (ROOT / "squeeze" / "driver" / "trial.py").read_text()
    assert "Loop(" not in src and "evaluate(" not in src  # the recipe builds the loop and evaluates


def test_config_and_search_space_do_not_import_each_other_in_a_cycle():
    """search_space imports config only for type checking (config imports search_space at run time)."""
    tree = ast.parse((ROOT / "squeeze" / "driver" / "search_space.py").read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    runtime = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "squeeze.config"
               and id(n) not in typing_only]
    assert not runtime
