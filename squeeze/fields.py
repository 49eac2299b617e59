"""The base every config model shares, and the validation context that marks the driver."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationInfo


class Strict(BaseModel):
    """Unknown keys are errors, assignments are validated, numbers are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def on_driver(info: ValidationInfo) -> bool:
    """File-system and hub checks (and making paths absolute) run once, on the driver, when ``config.parse``
    validates with the ``driver`` context; trials receive the validated config and never repeat them."""
    return bool((info.context or {}).get("driver"))
