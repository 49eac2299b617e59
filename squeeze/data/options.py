"""The ``data`` block of a sweep: where examples come from and the layout of the files that hold them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from squeeze.fields import Strict, on_driver


class DataCfg(Strict):
    source: Literal["synthetic", "files", "hub"] = "synthetic"
    size: int = Field(600, ge=10, le=1_000_000, description="synthetic: pooled examples before splitting")
    seed: int = Field(0, ge=0, description="seed of generation and splitting")
    format: Optional[Literal["csv", "tsv", "json", "jsonl", "parquet", "lines", "conll", "parlai", "dailydialog", "chat",
                             "turns", "text"]] = None
    files: list[str] = Field(default_factory=list, description="pooled, then split by `split`")
    labels: list[str] = Field(default_factory=list, description="format lines: the label of each file in `files` "
                                                                "(default: its extension, rt-polarity.pos -> pos)")
    distractors: int = Field(19, ge=0, description="dialogue files without candidates (DailyDialog): other "
                                                   "dialogues' replies added to the gold one for Hits@k; 0: none")
    train: Optional[str] = None
    dev: Optional[str | float] = Field(None, description="a file, or a fraction (0.1) of the train file carved out "
                                                         "as the dev split")
    test: Optional[str] = None
    name: Optional[str] = Field(None, description="hub dataset id, e.g. imdb or eriktks/conll2003")
    subset: Optional[str] = Field(None, description="hub dataset config name")
    split: Optional[tuple[float, float, float]] = Field(None, description="train/dev/test fractions of the pool")
    text_column: str = "text"
    label_column: str = "label"
    label_map: dict[str, str] = Field(default_factory=dict, description="raw label -> name, e.g. {0: neg, 1: pos}")
    delimiter: Optional[str] = Field(None, min_length=1, max_length=1, description="tables and column NER files: "
                                     "the field separator (default: ',' for csv, tab for tsv, white space for conll)")
    header: bool = Field(True, description="tables: the first row names the columns; false: give `columns`")
    columns: list[str] = Field(default_factory=list, description="header: false: the column names, in order")
    token_column: int = Field(0, description="conll: index of the token column")
    tag_column: int = Field(-1, description="conll: index of the tag column (default: last)")
    comment_prefix: Optional[str] = Field(None, min_length=1, description="conll: lines starting with it are skipped")
    scheme: Literal["auto", "iob1", "iob2"] = "auto"
    dialogue_column: str = Field("dialogue_id", description="turns: the column naming each utterance's dialogue")
    turn_column: Optional[str] = Field(None, description="turns: the order within a dialogue (default: file order)")
    speaker_column: Optional[str] = Field(None, description="turns: consecutive utterances of a speaker are joined")
    encoding: Optional[str] = Field(None, description="text encoding of the files (default UTF-8, with or without BOM)")
    truncation_side: Literal["right", "left"] = Field("right", description="which end of a text longer than "
                                                       "max_length is cut (left keeps a review's ending)")
    limit_train: int = Field(0, ge=0)
    limit_eval: int = Field(0, ge=0)

    @field_validator("files", mode="after")
    @classmethod
    def _abs_files(cls, v, info: ValidationInfo):
        return [_data_path(p) for p in v] if on_driver(info) else v

    @field_validator("train", "dev", "test", mode="after")
    @classmethod
    def _abs_file(cls, v, info: ValidationInfo):
        if isinstance(v, float):
            if not 0 < v < 1:
                raise ValueError(f"a dev fraction carved from train must be between 0 and 1, got {v}")
            return v
        return _data_path(v) if v is not None and on_driver(info) else v

    @field_validator("label_map", mode="before")
    @classmethod
    def _text_keys(cls, v):
        if not isinstance(v, dict):
            return v
        bad = next((x for x in list(v) + list(v.values()) if isinstance(x, (list, dict)) or x is None), "none")
        if bad != "none":  # a list or an object would become its text form, "[1]", and match nothing
            raise ValueError(f"raw labels and names are single values (text or numbers), got {bad!r}")
        return {str(k): str(x) for k, x in v.items()}

    @field_validator("split")
    @classmethod
    def _fractions(cls, v):
        if v is not None and (any(x <= 0 for x in v) or abs(sum(v) - 1) > 1e-6):
            raise ValueError(f"must be three positive fractions summing to 1, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _files_mean_files(cls, raw):
        """Naming files means reading them: ``files`` or train/dev/test without ``source`` is ``source: files``
        (they used to be ignored, and the sweep trained on synthetic data)."""
        if isinstance(raw, dict) and "source" not in raw and any(raw.get(k) for k in ("files", "train", "dev", "test")):
            raw = {**raw, "source": "files"}
        return raw

    @model_validator(mode="after")
    def _source_fields(self):
        named = [s for s in ("train", "dev", "test") if getattr(self, s)]
        if self.source != "files" and (self.files or named):
            given = "files" if self.files else ", ".join(named)
            raise ValueError(f"{given}: data files are read only with source 'files', and the source is "
                             f"{self.source!r}; drop `source` or set it to files")
        if self.files and named:
            raise ValueError(f"give either `files` (pooled, then split) or train/dev/test, not both ({', '.join(named)} "
                             "would be ignored)")
        if isinstance(self.dev, float) and not (self.train and self.test):
            raise ValueError(f"dev: {self.dev} carves the dev split from the train file: give train and test files too")
        if self.source == "files":
            if not self.files and len(named) != 3:
                raise ValueError("source 'files' needs `files: [...]` (pooled) or all of train, dev and test")
        if self.format == "lines" and (named or not self.files):
            raise ValueError("format 'lines' reads one file per label: give `files: [...]` (pooled, then split), "
                             "not train/dev/test")
        paths = [getattr(self, s) for s in named if isinstance(getattr(self, s), str)]
        for i, a in enumerate(paths):
            for b in paths[i + 1:]:
                if a == b:
                    twice = [s for s in named if getattr(self, s) == a]  # noqa: B023
                    raise ValueError(f"{' and '.join(twice)} are the same file {a!r}: a model selected and scored on "
                                     "the data it trained on measures nothing; give each split its own file")
        if self.labels and len(self.labels) != len(self.files):
            raise ValueError(f"labels: one per file in `files` ({len(self.files)}), got {len(self.labels)}")
        if self.source == "hub" and not self.name:
            raise ValueError("source 'hub' needs `name` (a dataset id on the Hugging Face hub)")
        if not self.header and not self.columns:
            raise ValueError("header: false needs `columns: [...]`, the names of the file's columns in order")
        if self.columns and self.header:
            raise ValueError("columns: names the columns of a file without a header row; set header: false")
        if self.token_column == self.tag_column:
            raise ValueError(f"token_column and tag_column are both {self.token_column}: they must name two columns "
                             "(a label-first file: tag_column 0, token_column 1)")
        if "size" in self.model_fields_set and self.source == "files":
            raise ValueError("size: applies to synthetic data; a file source uses every example of its files "
                             "(limit_train / limit_eval cap them)")
        return self


def _data_path(p: str) -> str:
    path = Path(os.path.expandvars(p)).expanduser()
    if not path.is_file():
        raise ValueError(f"data file {p!r} does not exist" + (f" (resolved to {path})" if str(path) != p else ""))
    return str(path.resolve())


