"""Patient Knowledge Distillation, PKD-Skip (Sun et al. 2019).

Student: the teacher's architecture with k layers (default half), initialised from the
pre-trained model's embeddings and first k layers. Teacher: a fine-tuned baseline (the study's
best-validation baseline trial, or a folder). Loss:

    (1 - a) CE + a T^2 KL(softmax(t/T) || softmax(s/T)) + b mean_{j,n,h} (hs_j/|hs_j| - ht_m(j)/|ht_m(j)|)^2

with the skip mapping m(j) = j * (L_teacher // k), j = 1..k-1 (12 -> 6: layers 2, 4, 6, 8, 10).

Scales, checked against Sun et al.'s code (github.com/intersun/PKD-for-BERT-Model-Compression,
``src/KD_loss.py``), which is where the beta grid {10, 100, 500, 1000} comes from:
- the patience term is their ``F.mse_loss`` of the normalised vectors: a mean over matched layers,
  positions and hidden units. (A sum over hidden units and layers would make beta 3,840x stronger
  for BERT-base 12 -> 6 and 768x for MiniLM 6 -> 3.)
- the KD term is the KL per position, averaged over positions (``kd_reduction: batchmean``, the true
  KL). Their ``nn.KLDivLoss(reduction="mean")`` also divides by the number of classes;
  ``kd_reduction: mean`` reproduces that (for 2 classes it halves the KD term).

Hidden states are compared where the task says (``Task.pkd_positions``): the token a sequence
head reads ([CLS] for encoders, the last token for decoders), every labelled token (NER) or the
reply tokens (dialogue). For dialogue the KD term uses the teacher's top-k tokens per position,
and both distributions are renormalised over those k tokens (a KL between two complete
distributions on the same support; renormalising the teacher alone would give every other token a
target probability of 0). Teacher outputs are computed once and cached (``squeeze.teacher_cache``)
unless ``teacher_cache: false``.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from squeeze import families, formats, models
from squeeze.techniques.base import NoOp


class PKDParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    alpha: float = Field(0.5, ge=0, le=1)
    temperature: float = Field(10.0, gt=0)
    beta: float = Field(100.0, ge=0, description="patience weight on Sun et al.'s scale (a mean squared error)")
    kd_reduction: Literal["batchmean", "mean"] = Field("batchmean", description="KL per position (batchmean) or "
                                                        "also per class, as Sun et al.'s code (mean)")
    layers: Optional[int] = Field(None, ge=1, description="student depth k (default: half the teacher)")
    teacher: Optional[str] = Field(None, description="teacher folder; default: the sweep's source trial")
    teacher_cache: bool = True
    top_k: int = Field(64, ge=1, description="dialogue: teacher logits kept per position")

    @field_validator("teacher")
    @classmethod
    def _usable(cls, v, info: ValidationInfo):
        """On the driver (validation context ``driver``), a folder is made absolute and must be a squeeze model."""
        from pathlib import Path

        if v is None or v.startswith("runs:/") or not (info.context or {}).get("driver"):
            return v
        path = Path(v).expanduser().resolve()
        if (path / formats.FORMAT_FILE).is_file():
            from squeeze.config import check_model_dir

            check_model_dir(path, v)  # its config, weights and tokenizer load: a broken teacher fails here, not in trials
            return str(path)
        raise ValueError(f"teacher {v!r} is neither runs:/<MLflow run id> nor a model folder saved by squeeze")


def skip_mapping(teacher_layers: int, k: int) -> list[int]:
    """Teacher hidden-state index matched by each student layer j = 1..k-1 (PKD-Skip)."""
    step = teacher_layers // k
    return [step * j for j in range(1, k)]


def pkd_loss(ce, s_logits, t_logits, s_hidden, t_hidden, *, alpha, temperature, beta, t_index=None,
             kd_reduction: str = "batchmean"):
    """The PKD objective on already aligned rows.

    Args:
        ce: the student's cross-entropy with the labels.
        s_logits: [N, C] student logits; t_logits: [N, C] teacher logits, or [N, k] top-k values.
        s_hidden, t_hidden: lists (one per matched layer) of [N', H] hidden vectors.
        t_index: [N, k] vocabulary indices of the teacher's top-k logits, or None; the student's logits are
            then taken at the same k indices, so both distributions are over the same k tokens.
        kd_reduction: ``batchmean`` (KL summed over classes, averaged over rows) or ``mean`` (also divided by
            the number of classes, as ``nn.KLDivLoss(reduction="mean")`` in Sun et al.'s code).
    """
    T = temperature
    s = s_logits.float()
    if t_index is not None:
        s = s.gather(-1, t_index.long())
    log_s = F.log_softmax(s / T, dim=-1)
    p_t = F.softmax(t_logits.float() / T, dim=-1)
    rows = (p_t * (torch.log(p_t.clamp_min(1e-12)) - log_s)).sum(-1)
    if not len(rows):
        kl = ce * 0
    else:
        kl = rows.mean() if kd_reduction == "batchmean" else rows.sum() / p_t.numel()
    if s_hidden:
        norm = [torch.stack([F.normalize(h.float(), dim=-1) for h in hs]) for hs in (s_hidden, t_hidden)]
        pt = F.mse_loss(*norm)  # mean over layers x positions x hidden units (Sun et al.'s patience_loss)
    else:
        pt = ce * 0
    return (1 - alpha) * ce + alpha * T * T * kl + beta * pt


def positions(kind: str, batch: dict, pooled: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per example, the token positions whose hidden states are distilled.

    ``sequence``: the token the classification head reads (``pooled``, from the model family);
    ``labelled``: every token with a label (NER's first sub-words); ``reply``: the reply tokens.
    """
    if kind == "sequence":
        return [p.reshape(1) for p in pooled]
    return [(row != -100).nonzero().flatten() for row in batch["labels"]]


def extract(kind: str, logits, hidden, batch: dict, layers: list[int], top_k: int | None, pooled=None):
    """Per-example (logits, hidden) rows to distill: what the cache stores and the student matches."""
    out = []
    for b, pos in enumerate(positions(kind, batch, pooled)):
        if kind == "sequence":
            lg = logits[b : b + 1]
        elif kind == "reply":
            lg = logits[b, pos - 1]  # the logit at p-1 predicts the reply token at p
        else:
            lg = logits[b, pos]
        idx = None
        if top_k is not None:
            lg, idx = lg.topk(min(top_k, lg.shape[-1]), dim=-1)
        hs = torch.stack([hidden[l][b, pos] for l in layers]) if layers else lg.new_zeros(0, len(pos), 1)
        out.append((lg, idx, hs))
    return out


class PKD(NoOp):
    name = "pkd"
    needs_family = True
    Params = PKDParams
    needs_hidden_states = True

    @classmethod
    def check(cls, params, task, has_source):
        if task.pkd_positions is None:
            raise ValueError(f"technique 'pkd' does not apply to task {task.name!r} (it declares no positions to distil)")
        if not has_source and not params.teacher:
            raise ValueError("technique 'pkd' needs a teacher: `source: {sweep: <baseline sweep>, select: best}` "
                             "or params.pkd.teacher (a model folder saved by squeeze)")

    @classmethod
    def check_source(cls, params, source_model, depth):
        teacher = depth(source_model)
        if params.layers and teacher and params.layers > teacher:
            raise ValueError(f"params.pkd.layers: a {params.layers}-layer student is deeper than its {teacher}-layer "
                             f"teacher ({source_model})")

    def __init__(self, ctx):
        super().__init__(ctx)
        folder = self.p.teacher or ctx.source_dir
        if folder is None:
            raise ValueError("pkd needs a teacher: set `source: {sweep: <baseline sweep>}` or params.pkd.teacher")
        self.teacher = formats.load(folder).to(ctx.device).eval()
        self.teacher_id = ctx.source_id or folder
        self.kind = ctx.task.pkd_positions
        self.top_k = self.p.top_k if self.kind == "reply" else None
        n_teacher = families.depth(self.teacher)
        self.k = self.p.layers or max(1, n_teacher // 2)
        self.t_layers = skip_mapping(n_teacher, self.k)
        self.s_layers = list(range(1, self.k))
        self.cache = None

    def initial_model(self):
        ctx = self.ctx
        student = models.build_model(ctx.model_name, ctx.task.head(ctx.prepared.tokenizer), ctx.prepared.tokenizer,
                                     seed=ctx.seed, labels=ctx.prepared.labels)
        return families.truncate(student, self.k)

    def _pooled(self, model, batch):
        if self.kind != "sequence":
            return None
        return families.pooled_positions(model, batch["attention_mask"])

    def teacher_rows(self, batch):
        with torch.no_grad():
            out = self.teacher(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
        return extract(self.kind, out.logits, out.hidden_states, batch, self.t_layers, self.top_k,
                       self._pooled(self.teacher, batch))

    def prepare(self, model):
        if self.p.teacher_cache:
            from squeeze.teacher_cache import TeacherCache

            self.cache = TeacherCache.open_or_build(self, self.ctx)
        return model

    def extra_loss(self, batch, outputs, indices):
        if self.cache is not None:
            rows = self.cache.rows(indices, device=outputs.logits.device)
        else:
            rows = self.teacher_rows(batch)
        mine = extract(self.kind, outputs.logits, outputs.hidden_states, batch, self.s_layers, None,
                       self._pooled(self.teacher, batch))
        t_idx = torch.cat([r[1] for r in rows]) if self.top_k is not None else None
        s_hidden = [torch.cat([m[2][j] for m in mine]) for j in range(len(self.s_layers))]
        t_hidden = [torch.cat([r[2][j] for r in rows]) for j in range(len(self.t_layers))]
        loss = pkd_loss(outputs.loss, torch.cat([m[0] for m in mine]), torch.cat([r[0] for r in rows]), s_hidden, t_hidden,
                        alpha=self.p.alpha, temperature=self.p.temperature, beta=self.p.beta, t_index=t_idx,
                        kd_reduction=self.p.kd_reduction)
        return loss - outputs.loss  # the loop adds the task loss itself
