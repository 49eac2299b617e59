"""Small builders shared by tests: a prepared tiny dataset and a technique context."""

from __future__ import annotations

import torch

from squeeze import config, models
from squeeze.prepare import prepare
from squeeze.registry import get_task, get_technique_class
from squeeze.techniques.base import TechniqueContext


def tiny_sweep(task="sentiment", preset="tiny-bert", size=120, technique=("finetune",), params=None, **train):
    doc = {"name": "s", "task": task, "technique": list(technique), "model": {"name": preset},
           "data": {"size": size, "split": [0.6, 0.2, 0.2]}, "train": {"max_length": 48, "batch_size": 8, **train},
           "eval": {"max_generate": 3, "max_rank": 3, "max_new_tokens": 4}, "params": params or {}}
    if {"imp", "dq", "pkd"} & set(technique):
        doc["source"] = {"sweep": "up"}
    return config.parse({"experiment": "t", "sweeps": [doc]}).sweeps[0]


def tiny_model(sweep, prepared, seed=0):
    task = get_task(sweep.task)
    return models.build_model(sweep.model.name, task.auto_class, prepared.tokenizer, seed=seed, labels=prepared.labels)


def context(sweep, prepared, cache_dir, technique, source_dir=None, **params):
    task = get_task(sweep.task)
    cls = get_technique_class(technique)

    def evaluate(m):
        return task.evaluate(m, prepared.features["dev"], prepared.examples["dev"], tokenizer=prepared.tokenizer,
                             labels=prepared.labels, batch_size=32, device="cpu", eval_cfg=sweep.eval)[0]

    logged = []
    ctx = TechniqueContext(task=task, prepared=prepared, model_name=sweep.model.name, params=cls.Params(**params),
                           evaluate=evaluate, log_metrics=lambda m, s: logged.append((s, m)), cache_dir=str(cache_dir),
                           source_dir=source_dir, source_id=source_dir)
    ctx.logged = logged
    return ctx


def prepared_for(sweep, cache_dir):
    torch.set_num_threads(2)
    return prepare(sweep, cache_dir)
