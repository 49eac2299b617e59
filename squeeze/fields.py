"""The base every config model shares, and the validation context that marks the driver."""

from __future__ import annotations

import typing

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator


def _numeric(annotation) -> bool:
    if annotation in (int, float):
        return True
    return typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and any(
        a in (int, float) for a in typing.get_args(annotation))


def refuse_bool_numbers(model: type[BaseModel], data):
    """Pydantic would take a boolean as 1 or 0 for a number field (``epochs: true``, or ``epochs: on`` where YAML 1.1
    is read: 1 epoch): a boolean given for a number is an error."""
    if isinstance(data, dict):
        for name, info in model.model_fields.items():
            if isinstance(data.get(name), bool) and _numeric(info.annotation):
                raise ValueError(f"{name}: expected a number, got {data[name]!r} (a boolean is not a number)")
    return data


class Strict(BaseModel):
    """Unknown keys are errors, assignments are validated, numbers are finite, booleans are not numbers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data):
        return refuse_bool_numbers(cls, data)


def on_driver(info: ValidationInfo) -> bool:
    """File-system and hub checks (and making paths absolute) run once, on the driver, when ``config.parse``
    validates with the ``driver`` context; trials receive the validated config and never repeat them."""
    return bool((info.context or {}).get("driver"))
