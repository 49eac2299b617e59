"""Sweep YAML -> validated config (the search space is checked by ``squeeze.search_space``).

The YAML is the single source of hyperparameters. It is validated here, once, before
Ray starts; every error names the field, the bad value and what is allowed.

A file holds one experiment with one or more sweeps::

    experiment: quickstart
    defaults:                 # deep-merged into every sweep
      train: {epochs: 2}
    sweeps:
      - name: sentiment
        task: sentiment
        model: {name: tiny-bert}
        data: {source: synthetic, size: 600}
        search_space:
          lr: {grid_search: [1.0e-3, 3.0e-4]}
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from squeeze import search_space
from squeeze.registry import TASKS, TECHNIQUES


class ConfigError(ValueError):
    """A config problem a user can act on; the CLI prints it and exits with code 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)



PRESETS = ("tiny-bert", "tiny-gpt2", "minilm")
DATA_FORMATS = ("csv", "jsonl", "conll", "parlai", "text")
DEFAULT_SPLITS = {"sentiment": (0.5, 0.25, 0.25), "ner": (0.7, 0.15, 0.15), "dialogue": (0.99, 0.005, 0.005),
                  "lm": (0.8, 0.1, 0.1)}
# techniques that start from another sweep's trials, and what they take from it
NEEDS_SOURCE = {"imp": "the imp_prune sweep whose pruned models it fine-tunes",
                "dq": "the sweep whose fine-tuned models it quantizes"}


class TrainCfg(_Strict):
    """Training hyperparameters; every field may also be a search-space key."""

    lr: float = Field(5e-5, gt=0, description="peak learning rate of AdamW")
    epochs: int = Field(3, ge=0, description="0: no training (post-training techniques such as dq)")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=8, le=8192)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = Field(0, ge=0)
    max_steps: int = Field(0, ge=0, description="stop after this many optimizer steps (0: no cap)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype (fp16 adds a GradScaler on CUDA)")
    compile: bool = Field(False, description="torch.compile the model before training")
    num_threads: int = Field(0, ge=0, description="torch intra-op threads (0: one per CPU given to the trial)")
    num_workers: int = Field(-1, ge=-1, description="DataLoader processes collating batches (-1: 2 on CUDA, "
                                                    "0 on CPU, where they would take cores from training)")


class ModelCfg(_Strict):
    name: str = Field(..., min_length=1, description="preset, hub id or local directory")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        v = os.path.expandvars(v)
        if v in PRESETS:
            return v
        if v.startswith((".", "/", "~")) or Path(v).exists():
            if not Path(v).expanduser().is_dir():
                raise ValueError(f"model directory {v!r} does not exist")
            return str(Path(v).expanduser().resolve())
        if not _hub_model_available(v):
            raise ValueError(
                f"model {v!r} is not a preset ({', '.join(PRESETS)}), not a local directory, "
                "and not found on the Hugging Face hub (or in its cache when HF_HUB_OFFLINE=1)"
            )
        return v


def _hub_model_available(repo_id: str) -> bool:
    """Offline: is the model in the local hub cache? Online: does the hub know it?"""
    import huggingface_hub as hub

    try:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
            return isinstance(hub.try_to_load_from_cache(repo_id, "config.json"), str)
        return hub.repo_exists(repo_id)
    except Exception:  # malformed ids raise HFValidationError; network errors count as unknown
        return False


class DataCfg(_Strict):
    source: Literal["synthetic", "files", "hub"] = "synthetic"
    size: int = Field(600, ge=10, description="synthetic: pooled examples before splitting")
    seed: int = Field(0, ge=0, description="seed of generation and splitting")
    format: Optional[Literal["csv", "jsonl", "lines", "conll", "parlai", "dailydialog", "text"]] = None
    files: list[str] = Field(default_factory=list, description="pooled, then split by `split`")
    labels: list[str] = Field(default_factory=list, description="format lines: the label of each file in `files` "
                                                                "(default: its extension, rt-polarity.pos -> pos)")
    distractors: int = Field(19, ge=0, description="dialogue files without candidates (DailyDialog): other "
                                                   "dialogues' replies added to the gold one for Hits@k; 0: none")
    train: Optional[str] = None
    dev: Optional[str] = None
    test: Optional[str] = None
    name: Optional[str] = Field(None, description="hub dataset id, e.g. imdb or eriktks/conll2003")
    subset: Optional[str] = Field(None, description="hub dataset config name")
    split: Optional[tuple[float, float, float]] = Field(None, description="train/dev/test fractions of the pool")
    text_column: str = "text"
    label_column: str = "label"
    tag_column: int = Field(-1, description="CoNLL: index of the tag column")
    scheme: Literal["auto", "iob1", "iob2"] = "auto"
    limit_train: int = Field(0, ge=0)
    limit_eval: int = Field(0, ge=0)

    @field_validator("files", mode="after")
    @classmethod
    def _abs_files(cls, v):
        return [_data_path(p) for p in v]

    @field_validator("train", "dev", "test", mode="after")
    @classmethod
    def _abs_file(cls, v):
        return None if v is None else _data_path(v)

    @field_validator("split")
    @classmethod
    def _fractions(cls, v):
        if v is not None and (any(x <= 0 for x in v) or abs(sum(v) - 1) > 1e-6):
            raise ValueError(f"must be three positive fractions summing to 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _source_fields(self):
        named = [s for s in ("train", "dev", "test") if getattr(self, s)]
        if self.source == "files":
            if not self.files and len(named) != 3:
                raise ValueError("source 'files' needs `files: [...]` (pooled) or all of train, dev and test")
        if self.format == "lines" and (named or not self.files):
            raise ValueError("format 'lines' reads one file per label: give `files: [...]` (pooled, then split), "
                             "not train/dev/test")
        if self.labels and len(self.labels) != len(self.files):
            raise ValueError(f"labels: one per file in `files` ({len(self.files)}), got {len(self.labels)}")
        if self.source == "hub" and not self.name:
            raise ValueError("source 'hub' needs `name` (a dataset id on the Hugging Face hub)")
        return self


def _data_path(p: str) -> str:
    path = Path(os.path.expandvars(p)).expanduser()
    if not path.is_file():
        raise ValueError(f"data file {p!r} does not exist" + (f" (resolved to {path})" if str(path) != p else ""))
    return str(path.resolve())


class EvalCfg(_Strict):
    """Dialogue evaluation: generation for BLEU/TER, candidates for Hits@k, optional BERTScore."""

    max_new_tokens: int = Field(24, ge=1)
    num_beams: int = Field(1, ge=1, description="1 = greedy")
    do_sample: bool = False
    max_generate: int = Field(200, ge=0, description="replies generated for BLEU/TER (0: all)")
    max_rank: int = Field(200, ge=0, description="turns ranked for Hits@k (0: all)")
    bertscore_model: Optional[str] = Field(None, description="local model dir for BERTScore; absent: no BERTScore")
    bertscore_layers: int = Field(6, ge=1)


class EnergyCfg(_Strict):
    power_interval_s: float = Field(5.0, gt=0, description="NVML power sampling period (the paper: 5 s)")
    carbon_intensity: float = Field(430.0, ge=0, description="g CO2e per kWh (430: US EPA eGRID; 275: EEA)")
    pue: float = Field(1.0, ge=1.0, description="data-centre power usage effectiveness (Strubell et al.: 1.58)")


class MeasureCfg(_Strict):
    latency: bool = True
    latency_repeats: int = Field(5, ge=1)
    latency_examples: int = Field(16, ge=1, description="test examples timed one at a time")


class ResourcesCfg(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SourceCfg(_Strict):
    """Start each trial from finished trials of an earlier sweep of the same experiment."""

    sweep: str
    select: Literal["all", "best", "best_per"] = "all"
    per: Optional[str] = Field(None, description="best_per: the param that groups trials, e.g. params.imp_prune.sparsity")

    @model_validator(mode="after")
    def _per(self):
        if self.select == "best_per" and not self.per:
            raise ValueError("select 'best_per' needs `per`, the param that groups the trials")
        return self


class SweepCfg(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    task: str
    technique: list[str] = Field(default_factory=lambda: ["finetune"])
    model: ModelCfg
    data: DataCfg = Field(default_factory=DataCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per technique, e.g. {pkd: {alpha: 0.5}}")
    source: Optional[SourceCfg] = None
    search_space: dict[str, Any] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1)
    resources: ResourcesCfg = Field(default_factory=ResourcesCfg)
    energy: EnergyCfg = Field(default_factory=EnergyCfg)
    measure: MeasureCfg = Field(default_factory=MeasureCfg)
    max_failures: int = Field(0, ge=0)

    @field_validator("task")
    @classmethod
    def _task(cls, v):
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; allowed: {', '.join(sorted(TASKS))}")
        return v

    @field_validator("technique", mode="before")
    @classmethod
    def _techniques(cls, v):
        from squeeze.registry import get_technique_class

        v = [v] if isinstance(v, str) else v
        for t in v:
            if ":" in t:
                try:
                    get_technique_class(t)
                except KeyError as exc:
                    raise ValueError(str(exc).strip('"')) from None
            elif t not in TECHNIQUES:
                raise ValueError(f"unknown technique {t!r}; allowed: {', '.join(sorted(TECHNIQUES))} "
                                 "(or an import path package.module:Class)")
        return v

    @model_validator(mode="after")
    def _space(self):
        for name, values in self.params.items():
            if name not in self.technique:
                raise ValueError(f"params.{name}: technique {name!r} is not in this sweep's technique list {self.technique}")
            search_space.technique_params_of(name, values, f"params.{name}")
        for key, spec in self.search_space.items():
            search_space.check_entry(key, spec, self)
        for t in self.technique:
            if t in NEEDS_SOURCE and self.source is None:
                raise ValueError(f"technique {t!r} needs `source: {{sweep: ...}}`: {NEEDS_SOURCE[t]}")
        if "pkd" in self.technique and self.source is None and not self.params.get("pkd", {}).get("teacher"):
            raise ValueError("technique 'pkd' needs a teacher: `source: {sweep: <baseline sweep>, select: best}` "
                             "or params.pkd.teacher (a model folder saved by squeeze)")
        if ("imp_prune" in self.technique) != (self.task == "lm"):
            raise ValueError("technique 'imp_prune' runs on task 'lm' (the prune stage), and task 'lm' only with it")
        if self.data.split is None:
            self.data.split = DEFAULT_SPLITS[self.task]
        return self


class RunCfg(_Strict):
    experiment: str = Field(..., min_length=1)
    tracking_uri: Optional[str] = Field(None, description="default: sqlite:///mlflow.db in the working directory")
    artifact_location: Optional[str] = Field(None, description="default: ./mlartifacts for a local store")
    storage_path: str = "ray_results"
    cache_dir: str = ".squeeze_cache"
    max_concurrent_trials: int = Field(0, ge=0, description="0: as many as resources allow")
    checkpoints_to_keep: int = Field(2, ge=1)
    sweeps: list[SweepCfg] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        names = [s.name for s in self.sweeps]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"sweep names must be unique; repeated: {sorted(dup)}")
        for i, s in enumerate(self.sweeps):
            if s.source and s.source.sweep in names and names.index(s.source.sweep) >= i:
                raise ValueError(f"sweeps.{i}.source.sweep: {s.source.sweep!r} must come before {s.name!r} in the file")
        return self


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _set_dotted(doc: dict, dotted: str, value: Any) -> None:
    node: Any = doc
    parts = dotted.split(".")
    for p in parts[:-1]:
        if isinstance(node, list):
            node = node[int(p)]
        else:
            node = node.setdefault(p, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides; keys of a sweep (``train.epochs``) apply to every sweep."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=1")
        key, text = item.split("=", 1)
        value = yaml.safe_load(text)
        head = key.split(".")[0]
        if head in SweepCfg.model_fields and head not in RunCfg.model_fields:
            for sweep in raw.get("sweeps") or []:
                _set_dotted(sweep, key, value)
        else:
            _set_dotted(raw, key, value)
    return raw


def _format_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        shown = "" if isinstance(got, (dict, list)) or err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  {loc or '<root>'}: {msg}{shown}")
    return "\n".join(lines)


def parse(raw: Any, source: str = "<config>") -> RunCfg:
    """Validate a parsed YAML document (with ``defaults`` merged into each sweep).

    Raises:
        ConfigError: naming every bad field and what is allowed.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with `experiment` and `sweeps`")
    raw = dict(raw)
    defaults = raw.pop("defaults", {}) or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: defaults: must be a mapping")
    if isinstance(raw.get("sweeps"), list):
        raw["sweeps"] = [_deep_merge(defaults, s) if isinstance(s, dict) else s for s in raw["sweeps"]]
    try:
        return RunCfg.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load(path: str | os.PathLike, overrides: list[str] | None = None) -> RunCfg:
    """Read, override and validate a sweep file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides or [])
    return parse(raw, str(path))
