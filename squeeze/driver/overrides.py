"""``key=value`` overrides on a raw sweep file, and the merge of ``defaults`` into each sweep.

Both know one rule the schema cannot: a post-training sweep (DQ) trains 0 epochs, so the training-only
``train`` fields of ``defaults`` or of a global override (``train.epochs=1``) are not applied to it (and an
override says so), while ``max_length``, ``device`` and the like still are.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from squeeze import yamlfile
from squeeze.registry import get_technique_class


class ConfigError(ValueError):
    """A config problem a user can act on; the CLI prints it and exits with code 2."""


# train fields that only mean something when a sweep trains: post-training sweeps (dq) take none of
# them from `defaults` or from a global override (max_length, device, threads, precision still apply)
TRAINING_ONLY = ("lr", "epochs", "batch_size", "grad_accum", "warmup_ratio", "weight_decay", "max_grad_norm", "max_steps", "compile",
                 "num_workers")



def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def post_training(sweep: dict, defaults: dict) -> bool:
    """Does this raw sweep run a post-training technique? (unknown names: False, the schema reports them) A sweep that
    searches its technique is post-training when every alternative is."""
    space = sweep.get("search_space")
    searched = space.get("technique") if isinstance(space, dict) else None
    if isinstance(searched, dict) and len(searched) == 1 and isinstance(next(iter(searched.values())), list):
        alts = next(iter(searched.values()))
        return bool(alts) and all(post_training({"technique": a}, {}) for a in alts)
    techs = sweep.get("technique", defaults.get("technique", ["baseline"]))
    try:
        return any(get_technique_class(t).post_training for t in ([techs] if isinstance(techs, str) else techs))
    except (KeyError, TypeError):
        return False


def defaults_for(sweep: dict, defaults: dict) -> dict:
    """What ``defaults`` gives one raw sweep: no training-only field to a post-training sweep, no ``technique`` to a
    sweep that searches it."""
    out = without_training(defaults) if post_training(sweep, defaults) else defaults
    space = sweep.get("search_space")
    if isinstance(space, dict) and "technique" in space and "technique" in out:
        out = {k: v for k, v in out.items() if k != "technique"}
    return out


def without_training(defaults: dict) -> dict:
    out = copy.deepcopy(defaults)
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k not in TRAINING_ONLY}
    return out


def _node(doc: Any, part: str, key: str) -> Any:
    if isinstance(doc, list):
        if part.lstrip("-").isdigit():
            if not -len(doc) <= int(part) < len(doc):
                raise ConfigError(f"override {key}: index {part} is out of range ({len(doc)} entries)")
            return int(part)
        names = [s.get("name") if isinstance(s, dict) else None for s in doc]
        if part not in names:
            raise ConfigError(f"override {key}: no sweep named {part!r}; sweeps: {', '.join(map(str, names))}")
        return names.index(part)
    if not isinstance(doc, dict):
        raise ConfigError(f"override {key}: {part!r} is inside a value that is not a mapping")
    return part


def set_dotted(doc: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.0.c`` (list items by index, sweeps also by name) in a raw document."""
    node: Any = doc
    parts = dotted.split(".")
    for p in parts[:-1]:
        k = _node(node, p, dotted)
        if isinstance(node, dict) and not isinstance(node.get(k), (dict, list)):
            node[k] = {}
        node = node[k]
    node[_node(node, parts[-1], dotted)] = value


def apply_overrides(raw: dict, overrides: list[str], sweep_fields: set[str], top_fields: set[str],
                    notes: list[str] | None = None) -> dict:
    """Apply ``key=value`` overrides; keys of a sweep (``train.epochs``) apply to every sweep.

    A training-only ``train.*`` key (``TRAINING_ONLY``) is not applied to post-training sweeps, which
    train 0 epochs whatever it says; ``notes`` collects what was left out. ``sweeps.<name>.<field>``
    (or ``sweeps.<index>.<field>``) addresses one sweep.
    """
    raw = copy.deepcopy(raw)
    defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) else {}
    given: list[tuple[str, list[str], Any]] = []  # the defaults.<field> overrides
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=1")
        key, text = item.split("=", 1)
        try:
            value = yamlfile.load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc.problem})") from None
        head = key.split(".")[0]
        if head in sweep_fields:
            skipped = []
            for sweep in raw.get("sweeps") or []:
                if key.startswith("train.") and key.split(".")[1] in TRAINING_ONLY and post_training(sweep, defaults):
                    skipped.append(str(sweep.get("name")))
                    continue
                set_dotted(sweep, key, value)
            if skipped and notes is not None:
                notes.append(f"{item} not applied to post-training sweeps (they train 0 epochs): {', '.join(skipped)}")
        elif head not in top_fields and head != "defaults":
            raise ConfigError(f"override {key}: unknown key {head!r}; a sweep field (train.epochs), a top-level "
                              f"field ({', '.join(sorted(top_fields))}) or defaults.<field>")
        else:
            set_dotted(raw, key, value)
            if head == "defaults":
                given.append((item, key.split(".")[1:], value))
    for item, path, value in given:  # judged once every override is in: a later one may set a sweep's own value
        _check_default_reaches(raw, item, path, value, notes)
    return raw


def _leaves(path: list[str], value: Any) -> list[list[str]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves([*path, str(k)], v)]
    return [path]


def _sets(doc: Any, path: list[str]) -> bool:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


def _check_default_reaches(raw: dict, item: str, path: list[str], value: Any, notes: list[str] | None) -> None:
    """A ``defaults.<field>`` override reaches only the sweeps that do not set that field themselves (and, for a
    training-only field, only sweeps that train): one that reaches none would silently change nothing.

    Raises:
        ConfigError: when no sweep takes the new default, naming the overrides that would.
    """
    sweeps = [s for s in raw.get("sweeps") or [] if isinstance(s, dict)]
    if not path or not sweeps:
        return
    defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) else {}
    field = ".".join(path)

    def keeps_its_own(sweep: dict) -> bool:
        inherited = defaults_for(sweep, defaults)
        return all(_sets(sweep, leaf) or not _sets(inherited, leaf) for leaf in _leaves(path, value))

    kept = [str(s.get("name")) for s in sweeps if keeps_its_own(s)]
    if len(kept) == len(sweeps):
        raise ConfigError(f"override {item}: no sweep takes this default (every sweep sets {field} itself, or is "
                          f"post-training); `{field}=...` sets it in every sweep, `sweeps.<name>.{field}=...` in one")
    if kept and notes is not None:
        notes.append(f"{item} not applied to the sweeps that set {field} themselves (or are post-training): "
                     f"{', '.join(kept)}")
