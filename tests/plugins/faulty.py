"""Fault injection for the fault-tolerance tests, loaded as a technique by import path.

``faulty:FailOnce`` raises, or turns the weights NaN, at a chosen epoch of the trial with a
chosen seed; with a marker file it fails only once, so Ray's retry from checkpoint can succeed.
It can also slow each step down, to give a test time to kill the driver mid-sweep.
"""

from __future__ import annotations

import os
import time

import torch
from pydantic import BaseModel, ConfigDict

from squeeze.techniques.base import NoOp


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = "raise"          # raise | nan | none
    at_epoch: int = 1
    at_step: int = 0             # > 0: fail after this optimizer step instead (mid-epoch)
    steps_per_epoch: int = 1
    only_seed: int = -1          # fail only in the trial with this seed (-1: every trial)
    marker: str = ""             # fail only while this file does not exist (then create it)
    sleep_s: float = 0.0         # sleep per step


class FailOnce(NoOp):
    name = "fail_once"
    Params = FailParams

    def prepare(self, model):
        self.model = model
        return model

    def _armed(self, epoch: int, step: int) -> bool:
        if self.p.mode == "none" or (step != self.p.at_step if self.p.at_step else epoch != self.p.at_epoch):
            return False
        if self.p.only_seed >= 0 and self.ctx.seed != self.p.only_seed:
            return False
        if self.p.marker:
            if os.path.exists(self.p.marker):
                return False
            open(self.p.marker, "w").close()
        return True

    def after_step(self, step):
        if self.p.sleep_s:
            time.sleep(self.p.sleep_s)
        epoch = (step - 1) // self.p.steps_per_epoch
        if (not self.p.at_step and (step - 1) % self.p.steps_per_epoch) or not self._armed(epoch, step):
            return
        if self.p.mode == "raise":
            raise RuntimeError(f"injected failure at step {step} (epoch {epoch})")
        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(float("nan"))
