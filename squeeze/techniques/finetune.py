"""Plain fine-tuning: the baseline every compression technique is compared against."""

from __future__ import annotations

from squeeze.techniques.base import NoOp


class FineTune(NoOp):
    name = "baseline"  # also registered as "finetune"
