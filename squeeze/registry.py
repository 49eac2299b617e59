"""Name -> lazy importer tables for tasks and techniques (Ray Tune's registry pattern).

Adding a task or technique is one module plus one line here. Either may also be named by its
import path, ``package.module:Class`` (your own task or technique, without editing squeeze);
the module must be importable on every node.
"""

from __future__ import annotations

import importlib
from typing import Any

TASKS: dict[str, str] = {
    "sentiment": "squeeze.tasks.sentiment:SentimentTask",
    "ner": "squeeze.tasks.ner:NerTask",
    "dialogue": "squeeze.tasks.dialogue:DialogueTask",
    "lm": "squeeze.tasks.lm:LmTask",
}

TECHNIQUES: dict[str, str] = {
    "baseline": "squeeze.techniques.finetune:FineTune",
    "finetune": "squeeze.techniques.finetune:FineTune",  # the same: plain fine-tuning is the study's baseline
    "pkd": "squeeze.techniques.pkd:PKD",
    "imp_prune": "squeeze.techniques.imp:ImpPrune",
    "imp": "squeeze.techniques.imp:Imp",
    "dq": "squeeze.techniques.dq:DQ",
    "qat": "squeeze.techniques.qat:QAT",
    "rtn": "squeeze.techniques.oneshot:RTN",
    "gptq": "squeeze.techniques.oneshot:GPTQ",
    "awq": "squeeze.techniques.oneshot:AWQ",
    "magnitude": "squeeze.techniques.oneshot:Magnitude",
    "wanda": "squeeze.techniques.oneshot:Wanda",
    "sparsegpt": "squeeze.techniques.oneshot:SparseGPT",
    "smoothquant": "squeeze.techniques.oneshot:SmoothQuant",
    "fp8": "squeeze.techniques.oneshot:Fp8",
}


# what a class named by import path must declare to be a technique (squeeze.techniques.base.Technique)
TECHNIQUE_DECLARATIONS = ("name", "Params", "post_training", "needs_source", "source_technique", "pretraining_stage",
                          "needs_family", "prepare", "finalize", "state_dict", "load_state_dict")


def _plugin_ok(kind: str, obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if kind == "task":
        from squeeze.tasks.base import Task

        return issubclass(obj, Task)
    from pydantic import BaseModel

    params = getattr(obj, "Params", None)
    return all(hasattr(obj, a) for a in TECHNIQUE_DECLARATIONS) and isinstance(params, type) and issubclass(params, BaseModel)


def _load(table: dict[str, str], kind: str, name: str) -> Any:
    if ":" in name:
        module, attr = name.split(":", 1)
        try:
            obj = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # ImportError, AttributeError, or whatever the module raises on import
            raise KeyError(f"{kind} {name!r} cannot be imported ({type(exc).__name__}: {exc})") from None
        if not _plugin_ok(kind, obj):
            base = "squeeze.tasks.base.Task subclass" if kind == "task" else \
                "technique class (subclass squeeze.techniques.base.NoOp; see the Technique protocol there)"
            raise KeyError(f"{kind} {name!r} is not a {base}")
        return obj
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(table))} (or an import path package.module:Class)")
    module, attr = table[name].split(":")
    return getattr(importlib.import_module(module), attr)


def get_task_class(name: str):
    """A task class by registry name or import path.

    Raises:
        KeyError: naming the allowed tasks when ``name`` is unknown.
    """
    return _load(TASKS, "task", name)


def get_task(name: str):
    """A task instance by name (see ``get_task_class``)."""
    return get_task_class(name)()


def get_technique_class(name: str):
    """A technique class by name or import path (instantiated by the recipe with its params)."""
    return _load(TECHNIQUES, "technique", name)


def technique_label(techniques: list[str]) -> str:
    """One name for a sweep's techniques, the same in the YAML's vocabulary, MLflow's ``technique`` tag and
    ``load_runs``: the names the classes declare, sorted and joined (``[imp, dq]`` is ``dq+imp``)."""
    return "+".join(sorted(get_technique_class(t).name for t in techniques))

