"""Sweep YAML -> validated config (the search space is checked by ``squeeze.driver.search_space``).

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

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from squeeze import yamlfile
from squeeze.driver import search_space
from squeeze.driver.search import alternatives
from squeeze.data.options import DataCfg
from squeeze.fields import Strict as _Strict
from squeeze.fields import on_driver as _on_driver
from squeeze.driver.overrides import ConfigError, deep_merge, defaults_for
from squeeze.driver.points import MAX_TRIALS
from squeeze.presets import PRESETS
from squeeze.driver.overrides import apply_overrides as _apply
from squeeze.registry import get_task_class, get_technique_class
from squeeze.driver.search import spec as search_spec




class TrainCfg(_Strict):
    """Training hyperparameters; every field may also be a search-space key."""

    lr: float = Field(5e-5, gt=0, le=10, description="peak learning rate of AdamW")
    epochs: int = Field(3, ge=0, le=10_000, description="0: no training (post-training techniques such as dq)")
    batch_size: int = Field(16, ge=1, le=1_000_000, description="examples per optimizer step")
    grad_accum: int = Field(1, ge=1, description="micro-batches each batch is split into (gradient accumulation: "
                                                 "the same batches and updates in 1/grad_accum of the memory)")
    eval_batch_size: int = Field(32, ge=1, le=1_000_000)
    max_length: int = Field(128, ge=8, le=8192)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="NumPy's seeds stop at 2**32 - 1")
    max_steps: int = Field(0, ge=0, le=10**9, description="stop after this many optimizer steps (0: no cap)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype (fp16 adds a GradScaler on CUDA)")
    compile: bool = Field(False, description="torch.compile the model before training")
    num_threads: int = Field(0, ge=0, le=1024, description="torch intra-op threads (0: one per CPU given to the trial)")
    num_workers: int = Field(-1, ge=-1, le=256, description="DataLoader processes collating batches (-1: 2 on CUDA, "
                                                    "0 on CPU, where they would take cores from training)")

    @model_validator(mode="after")
    def _accumulation(self):
        if self.grad_accum > self.batch_size:
            raise ValueError(f"grad_accum {self.grad_accum} is larger than batch_size {self.batch_size}: each "
                             "micro-batch would hold less than one example")
        return self


class ModelCfg(_Strict):
    name: str = Field(..., min_length=1, description="preset, hub id or local directory")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        v = os.path.expandvars(v)
        if v in PRESETS or not _on_driver(info):
            return v
        if v.startswith((".", "/", "~")) or Path(v).exists():
            path = Path(v).expanduser()
            if not path.is_dir():
                raise ValueError(f"model directory {v!r} does not exist")
            if not any((path / f).is_file() for f in TOKENIZER_FILES):
                raise ValueError(f"model directory {v!r} holds no tokenizer ({', '.join(TOKENIZER_FILES)}): every word "
                                 "would be unknown; save the tokenizer with the model (tokenizer.save_pretrained)")
            check_model_dir(path, v)
            return str(path.resolve())
        if not _hub_model_available(v):
            raise ValueError(
                f"model {v!r} is not a preset ({', '.join(PRESETS)}), not a local directory, "
                "and not found on the Hugging Face hub (or in its cache when HF_HUB_OFFLINE=1)"
            )
        return v


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                "squeeze.safetensors")  # the last: a squeeze folder of int8 or sparse weights (squeeze.formats)


def check_model_dir(path: Path, shown: str) -> None:
    """A model folder that cannot load fails here, not in every trial: its config names an architecture
    transformers knows, its weights are there and their safetensors headers read, its tokenizer loads."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"model directory {shown!r} has no config.json (save it with model.save_pretrained)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"model directory {shown!r}: config.json is not valid JSON ({exc})") from None
    from transformers import CONFIG_MAPPING

    mtype = config.get("model_type") if isinstance(config, dict) else None
    if mtype not in CONFIG_MAPPING:
        raise ValueError(f"model directory {shown!r}: config.json names model_type {mtype!r}, an architecture this "
                         f"transformers does not know")
    ggufs = list(path.glob("*.gguf"))
    if not any((path / f).is_file() for f in WEIGHT_FILES) and not ggufs:
        raise ValueError(f"model directory {shown!r} holds no weights ({', '.join(WEIGHT_FILES)} or a .gguf file)")
    from safetensors import safe_open

    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as fh:
                fh.keys()
        except Exception as exc:
            raise ValueError(f"model directory {shown!r}: {f.name} is not a readable safetensors file ({exc})") from None
    if ggufs:
        return
    try:
        import transformers

        transformers.AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise ValueError(f"model directory {shown!r}: its tokenizer does not load ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")


def _hub_model_available(repo_id: str) -> bool:
    """Offline: is the model in the local hub cache? Online: does the hub know it?"""
    import huggingface_hub as hub

    try:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
            return isinstance(hub.try_to_load_from_cache(repo_id, "config.json"), str)
        return hub.repo_exists(repo_id)
    except Exception:  # malformed ids raise HFValidationError; network errors count as unknown
        return False


class EvalCfg(_Strict):
    """Dialogue evaluation: generation for BLEU/TER, candidates for Hits@k, optional BERTScore."""

    max_new_tokens: int = Field(24, ge=1, le=4096)
    num_beams: int = Field(1, ge=1, le=64, description="1 = greedy")
    do_sample: bool = False
    max_generate: int = Field(200, ge=0, description="replies generated for BLEU/TER (0: all)")
    max_rank: int = Field(200, ge=0, description="turns ranked for Hits@k (0: all)")
    bertscore_model: Optional[str] = Field(None, description="BERTScore's scorer: a local model dir or the minilm preset; "
                                                             "absent: no BERTScore")
    bertscore_layers: int = Field(6, ge=1)

    @model_validator(mode="after")
    def _scorer_depth(self, info: ValidationInfo):
        if self.bertscore_model is None or not _on_driver(info):
            return self
        import json

        from squeeze.presets import PACKAGED, resolve_source

        if self.bertscore_model in PRESETS and self.bertscore_model not in PACKAGED:
            return self
        try:
            folder = Path(resolve_source(self.bertscore_model) if self.bertscore_model in PRESETS else self.bertscore_model)
            depth = json.loads((folder / "config.json").read_text()).get("num_hidden_layers")
        except Exception:
            return self  # a packaged scorer that is not installed: reported where it is loaded
        if isinstance(depth, int) and self.bertscore_layers > depth:
            raise ValueError(f"bertscore_layers {self.bertscore_layers}: the scorer {self.bertscore_model!r} has "
                             f"{depth} layers")
        return self

    @field_validator("bertscore_model")
    @classmethod
    def _scorer(cls, v, info: ValidationInfo):
        if v is None or v in PRESETS or not _on_driver(info):
            return v
        path = Path(os.path.expandvars(v)).expanduser()
        if not (path / "config.json").is_file():
            raise ValueError(f"BERTScore model {v!r} is not a model folder (no config.json there) nor the minilm preset")
        return str(path.resolve())


class EnergyCfg(_Strict):
    power_interval_s: float = Field(5.0, gt=0, description="NVML power sampling period (the paper: 5 s)")
    carbon_intensity: float = Field(430.0, ge=0, description="g CO2e per kWh (430: US EPA eGRID; 275: EEA)")
    pue: float = Field(1.0, ge=1.0, description="data-centre power usage effectiveness (Strubell et al.: 1.58)")


class MeasureCfg(_Strict):
    latency: bool = True
    latency_repeats: int = Field(10, ge=1, le=100_000, description="timed passes over the examples (median, p10, p90)")
    latency_examples: int = Field(16, ge=1, le=1_000_000, description="test examples timed one at a time")
    decode_tokens: int = Field(32, ge=0, le=4096, description="causal LMs: greedy tokens decoded at batch 1 on the CPU "
                               "after a test prompt, timed per token in the runtime the codec serves (0: not measured)")
    decode_prompt_tokens: int = Field(32, ge=1, le=4096, description="the prompt: the first test example's first tokens")
    parity: Literal["sample", "full"] = Field("sample", description="save -> reload -> re-score on a fixed sample of "
                                              "the test set (both models scored on it), or on all of it")
    parity_examples: int = Field(256, ge=1, le=1_000_000, description="the sample's size (a smaller test set: all)")


class ResourcesCfg(_Strict):
    cpu: float = Field(1.0, gt=0, le=4096)
    gpu: float = Field(0.0, ge=0, le=256)


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
    name: str = Field(..., max_length=100, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="letters, digits, _ . - (it names folders with the experiment's name)")
    task: str
    technique: list[str] = Field(default_factory=lambda: ["baseline"], min_length=1)
    model: ModelCfg
    data: DataCfg = Field(default_factory=DataCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per technique, e.g. {pkd: {alpha: 0.5}}")
    source: Optional[SourceCfg] = None
    search_space: dict[str, Any] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1, le=MAX_TRIALS, description="grid/random: draws of the space; tpe/nsga2: trials")
    search: search_spec.Search = Field(default_factory=search_spec.Search)
    objectives: list[search_spec.Objective] = Field(default_factory=list, description="the front's axes; default: "
                                                    "the task's primary metric")
    constraints: list[search_spec.Constraint] = Field(default_factory=list)
    budget: Optional[search_spec.Budget] = None
    resources: ResourcesCfg = Field(default_factory=ResourcesCfg)
    energy: EnergyCfg = Field(default_factory=EnergyCfg)
    measure: MeasureCfg = Field(default_factory=MeasureCfg)
    max_failures: int = Field(0, ge=0, le=100)

    @field_validator("task")
    @classmethod
    def _task(cls, v):
        try:
            get_task_class(v)
        except KeyError as exc:
            raise ValueError(str(exc).strip('"')) from None
        return v

    @field_validator("technique", mode="before")
    @classmethod
    def _techniques(cls, v):
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list) and not v:
            raise ValueError("an empty list runs nothing; name at least one technique (baseline for plain fine-tuning)")
        for t in v if isinstance(v, list) else []:
            if not isinstance(t, str):
                raise ValueError(f"each technique is a name, got {t!r}")
            try:
                get_technique_class(t)
            except KeyError as exc:
                raise ValueError(str(exc).strip('"')) from None
        if isinstance(v, list):
            names = [get_technique_class(t).name for t in v]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"technique {twice[0]!r} is listed twice (or under two names); each technique runs once")
        return v

    def technique_classes(self) -> list:
        return [get_technique_class(t) for t in self.technique]

    @model_validator(mode="before")
    @classmethod
    def _canonical_params(cls, raw):
        """``params`` of a plug-in technique may be keyed by the short name its class declares; a searched
        technique (``search_space.technique``) makes ``technique`` the union of its alternatives."""
        if isinstance(raw, dict):
            raw = alternatives.normalize(raw)
        if isinstance(raw, dict) and isinstance(raw.get("params"), dict) and isinstance(raw.get("technique"), list):
            try:
                raw = {**raw, "params": {search_space.canonical_technique(k, raw["technique"]): v
                                         for k, v in raw["params"].items()}}
            except (KeyError, TypeError):
                pass  # an unknown technique: the field validator names it
        return raw

    @model_validator(mode="after")
    def _space(self, info: ValidationInfo):
        task = get_task_class(self.task)()
        for name, values in self.params.items():
            if name not in self.technique:
                raise ValueError(f"params.{name}: technique {name!r} is not in this sweep's technique list {self.technique}")
            search_space.technique_params_of(name, values, f"params.{name}", info.context)
        for key, spec in self.search_space.items():
            if key != alternatives.KEY:
                search_space.check_entry(key, spec, self, info.context)
        if alternatives.searched(self):
            self._check_alternatives(info)
        else:
            self._check_techniques(task, info)
        size = alternatives.max_trials(self, _grid_size) if self.search.algorithm in ("grid", "random") else self.num_samples
        if size > MAX_TRIALS:
            raise ValueError(f"search_space: makes {size:,} trials (grid sizes times num_samples); at most "
                             f"{MAX_TRIALS:,} are allowed")
        if self.data.split is None:
            self.data.split = task.default_split
        search_spec.check(self, task)
        return self

    def _check_alternatives(self, info: ValidationInfo) -> None:
        """Each alternative of a searched technique, validated as a sweep of its own."""
        from squeeze.registry import technique_label

        raw = self.model_dump(mode="json", exclude_unset=True)
        for alt in alternatives.alternatives(self):
            try:
                SweepCfg.model_validate(alternatives.raw_alternative(raw, alt), context=info.context)
            except ValidationError as exc:
                e = exc.errors()[0]
                loc = ".".join(map(str, e["loc"]))
                raise ValueError(f"search_space.technique: alternative {technique_label(alt)!r}: "
                                 f"{loc + ': ' if loc else ''}{e['msg'].removeprefix('Value error, ')}") from None
        if all(alternatives.post_training(a) for a in alternatives.alternatives(self)):
            self._post_training_epochs(self.technique[0])

    def _post_training_epochs(self, technique: str) -> None:
        if "epochs" in self.train.model_fields_set and self.train.epochs != 0:
            raise ValueError(f"train.epochs: technique {technique!r} is post-training (it acts on its source's trained "
                             f"models), so the sweep trains 0 epochs, got {self.train.epochs}; to fine-tune first, "
                             "use a separate stage as its source")
        self.train.epochs = 0

    def _check_techniques(self, task, info: ValidationInfo) -> None:
        classes = self.technique_classes()
        for t, cls in zip(self.technique, classes):
            if cls.needs_source and self.source is None:
                raise ValueError(f"technique {t!r} needs `source: {{sweep: ...}}`: {cls.needs_source}")
            cls.check(search_space.technique_params_of(t, self.params.get(t, {}), f"params.{t}"), task, self.source is not None)
        if any(c.pretraining_stage for c in classes) != task.pretraining:
            stage = [t for t, c in zip(self.technique, classes) if c.pretraining_stage]
            raise ValueError(f"task {self.task!r} and techniques {self.technique}: a pre-training task runs only with a "
                             f"prune-stage technique (imp_prune) and such a technique only on a pre-training task "
                             f"({'found ' + ', '.join(stage) if stage else 'the task is ' + ('' if task.pretraining else 'not ') + 'pre-training'})")
        if _on_driver(info) and any(c.needs_family for c in classes):
            from squeeze import families, presets

            mtype = presets.model_type(self.model.name)
            if families.family_of_type(mtype) is None:
                known = sorted(t for f in families.FAMILIES for t in f.model_types)
                raise ValueError(f"model.name: {self.model.name!r} is a {mtype!r} model, and techniques "
                                 f"{[t for t, c in zip(self.technique, classes) if c.needs_family]} need to know where "
                                 f"its transformer layers are; known families: {', '.join(known)} (add a Family to "
                                 "squeeze/families.py)")
        if _on_driver(info):
            _check_head(self, task)
        post = [t for t, c in zip(self.technique, classes) if c.post_training]
        if post:
            self._post_training_epochs(post[0])
        late = replaced_before(list(zip(self.technique, classes)))
        if late:
            t, first = late
            fix = ("one quantizer per recipe" if getattr(get_technique_class(t), "replaces_linear", False)
                   else f"techniques run in list order: [{t}, {first}] prunes, then quantizes")
            raise ValueError(f"technique {self.technique}: {t!r} compresses the model's nn.Linear layers, and {first!r} "
                             f"before it replaces them with its quantized form, so {t!r} would find nothing to do and "
                             f"the recipe would be {first!r} alone under both names; {fix}")

    def objective_list(self) -> list:
        """The objectives, the task's primary metric when none are listed."""
        task = get_task_class(self.task)()
        return self.objectives or [search_spec.Objective(metric=f"val/{task.primary_metric}", mode=task.mode)]


class RunCfg(_Strict):
    experiment: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                            description="letters, digits, _ . - (it names folders: no slash, no leading dot)")
    tracking_uri: Optional[str] = Field(None, description="default: sqlite:///mlflow.db in the working directory")
    artifact_location: Optional[str] = Field(None, description="default: ./mlartifacts for a local store")
    storage_path: str = Field(default_factory=lambda: os.environ.get("SQUEEZE_STORAGE_PATH", "ray_results"),
                              description="Ray Tune's storage: a local folder, or s3://... / an NFS path that every "
                                          "node sees for multi-node runs (default: $SQUEEZE_STORAGE_PATH, else ray_results)")
    cache_dir: str = Field(".squeeze_cache", min_length=1)
    max_concurrent_trials: int = Field(0, ge=0, le=100_000, description="0: as many as resources allow")
    schedule: Literal["dag", "sequential"] = Field("dag", description="dag: a stage starts when its sources are "
                                                   "complete, independent stages at once; sequential: in file order")
    checkpoints_to_keep: int = Field(2, ge=0, le=1000, description="per running trial (0: none, a failed trial restarts); "
                                                      "a finished stage's checkpoints are deleted")
    budget: Optional[search_spec.Budget] = Field(None, description="the whole study's: no stage starts a trial once "
                                                 "it is spent")
    sweeps: list[SweepCfg] = Field(..., min_length=1)

    @field_validator("storage_path")
    @classmethod
    def _storage(cls, v: str):
        if not v.strip():
            raise ValueError("empty (from SQUEEZE_STORAGE_PATH?): name a folder or a URI such as s3://bucket/path")
        return v

    @model_validator(mode="after")
    def _unique(self):
        names = [s.name for s in self.sweeps]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"sweep names must be unique; repeated: {sorted(dup)}")
        upstream: dict[str, list] = {}
        for i, s in enumerate(self.sweeps):
            if s.source and s.source.sweep in names and names.index(s.source.sweep) >= i:
                raise ValueError(f"sweeps.{i}.source.sweep: {s.source.sweep!r} must come before {s.name!r} in the file")
            origin = self.sweeps[names.index(s.source.sweep)] if s.source and s.source.sweep in names else None
            # the quantizing techniques whose output this stage's models start from (a searched stage: any of its
            # alternatives), along the chain of sources
            quantized = upstream.get(origin.name, []) if origin is not None else []
            upstream[s.name] = quantized + [t for t, c in zip(s.technique, s.technique_classes())
                                            if getattr(c, "replaces_linear", False)]
            for t, cls in zip(s.technique, s.technique_classes()):
                if origin is not None and cls.post_training and cls.name in {c.name for c in origin.technique_classes()}:
                    raise ValueError(f"sweeps.{i}.source.sweep: {origin.name!r} already ran {t!r}; {t} of its models "
                                     f"would apply {t} twice: start from a stage that did not run it")
                if quantized and getattr(cls, "acts_on_linear", False):
                    fix = ("one quantizer per chain of stages" if getattr(cls, "replaces_linear", False) else
                           f"to prune and quantize, list both in one stage, pruning first: [{t}, {quantized[0]}]")
                    raise ValueError(f"sweeps.{i}.source.sweep: {origin.name!r} holds models quantized by "
                                     f"{quantized[0]!r} (their nn.Linear layers replaced), and {t!r} compresses nn.Linear "
                                     f"layers: it would find none; start from a stage that did not quantize ({fix})")
                if origin is not None and cls.source_technique and not set(cls.source_technique) & set(origin.technique):
                    raise ValueError(f"sweeps.{i}.source.sweep: technique {t!r} needs a source sweep running "
                                     f"{' or '.join(cls.source_technique)}; {origin.name!r} runs {origin.technique}")
        return self


def replaced_before(chain: list[tuple[str, type]]) -> tuple[str, str] | None:
    """(technique, earlier technique) for the first technique of ``chain`` (run order) that compresses nn.Linear
    layers after one that replaced them with a quantized form (it would find none); None when the order holds."""
    first = None
    for t, cls in chain:
        if first is not None and getattr(cls, "acts_on_linear", False):
            return t, first
        if getattr(cls, "replaces_linear", False):
            first = first or t
    return None


def _grid_size(space: dict) -> int:
    n = 1
    for spec in space.values():
        if isinstance(spec, dict) and isinstance(spec.get("grid_search"), list):
            n *= max(1, len(spec["grid_search"]))
    return n


def _check_head(sweep, task) -> None:
    """The task's model head must exist for the model's architecture (dialogue needs a decoder: an encoder has no
    causal LM head); a task whose head depends on the tokenizer (the prune stage) picks its own."""
    from squeeze import presets
    from squeeze.tasks.base import Task

    if type(task).head is not Task.head:
        return
    mtype = presets.model_type(sweep.model.name)
    if mtype is None:
        return
    from squeeze.families import family_of_type

    family = family_of_type(mtype)
    if task.needs_decoder and family is not None and not family.decoder:
        raise ValueError(f"model.name: task {sweep.task!r} generates text and needs a decoder model, and "
                         f"{sweep.model.name!r} is a {mtype!r} encoder; use a decoder such as tiny-gpt2, gpt2, smollm2")
    import transformers

    mapping = getattr(getattr(transformers, task.auto_class), "_model_mapping", None)
    names = getattr(mapping, "_model_mapping", None)
    if isinstance(names, dict) and mtype not in names:
        raise ValueError(f"model.name: task {sweep.task!r} needs a {task.auto_class} model, and {sweep.model.name!r} "
                         f"is a {mtype!r} model, which has none (dialogue needs a decoder such as gpt2 or llama)")


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
    """Validate a parsed YAML document (with ``defaults`` merged into each sweep), on the driver.

    Files and model folders must exist and become absolute paths here; trials get the result.

    Raises:
        ConfigError: naming every bad field and what is allowed.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with `experiment` and `sweeps`")
    raw = dict(raw)
    defaults = raw.pop("defaults", None)
    defaults = {} if defaults is None else defaults
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: defaults: must be a mapping")
    if isinstance(raw.get("sweeps"), list):
        raw["sweeps"] = [deep_merge(defaults_for(s, defaults), s)
                         if isinstance(s, dict) else s for s in raw["sweeps"]]
    try:
        return RunCfg.model_validate(raw, context={"driver": True})
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load(path: str | os.PathLike, overrides: list[str] | None = None, notes: list[str] | None = None) -> RunCfg:
    """Read, override and validate a sweep file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file")
    try:
        raw = yamlfile.load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the sweep file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a sweep file") from None
    try:
        if isinstance(raw, dict):
            raw = apply_overrides(raw, overrides or [], notes)
        return parse(raw, str(path))
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a sweep file") from None


def apply_overrides(raw: dict, overrides: list[str], notes: list[str] | None = None) -> dict:
    """``key=value`` overrides on a raw sweep file (see ``squeeze.driver.overrides``)."""
    return _apply(raw, overrides, set(SweepCfg.model_fields) - set(RunCfg.model_fields), set(RunCfg.model_fields), notes)
