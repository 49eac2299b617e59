"""The ``data`` block of a sweep: where examples come from and the layout of the files that hold them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from squeeze.fields import Strict, on_driver


class DataCfg(Strict):
    source: Literal["synthetic", "files", "hub"] = "synthetic"
    size: int = Field(600, ge=10, description="synthetic: pooled examples before splitting")
    seed: int = Field(0, ge=0, description="seed of generation and splitting")
    format: Optional[Literal["csv", "tsv", "json", "jsonl", "parquet", "lines", "conll", "parlai", "dailydialog", "chat",
                             "turns", "text"]] = None
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
        return _data_path(v) if v is not None and on_driver(info) else v

    @field_validator("label_map", mode="before")
    @classmethod
    def _text_keys(cls, v):
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v

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
        if not self.header and not self.columns:
            raise ValueError("header: false needs `columns: [...]`, the names of the file's columns in order")
        if self.columns and self.header:
            raise ValueError("columns: names the columns of a file without a header row; set header: false")
        if self.token_column == self.tag_column:
            raise ValueError(f"token_column and tag_column are both {self.token_column}: they must name two columns "
                             "(a label-first file: tag_column 0, token_column 1)")
        return self


def _data_path(p: str) -> str:
    path = Path(os.path.expandvars(p)).expanduser()
    if not path.is_file():
        raise ValueError(f"data file {p!r} does not exist" + (f" (resolved to {path})" if str(path) != p else ""))
    return str(path.resolve())


