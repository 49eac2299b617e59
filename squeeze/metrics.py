"""Task metrics from well-kept libraries: scikit-learn, seqeval, sacrebleu, bert-score.

Pure functions of predictions and references; the tasks produce those, these score them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def classification(y_true: Sequence[int], y_pred: Sequence[int], positive: int = 1) -> dict[str, float]:
    """Accuracy, and precision, recall and F1 of the positive class (scikit-learn)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=[positive], average=None, zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "precision": float(p[0]),
            "recall": float(r[0]), "f1": float(f[0])}


def entities(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, float]:
    """seqeval entity-level precision, recall, F1 (strict IOB2) and token accuracy."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    kw = dict(mode="strict", scheme=IOB2, zero_division=0)
    flat_t = [t for s in y_true for t in s]
    flat_p = [t for s in y_pred for t in s]
    return {"precision": float(precision_score(y_true, y_pred, **kw)), "recall": float(recall_score(y_true, y_pred, **kw)),
            "f1": float(f1_score(y_true, y_pred, **kw)),
            "token_accuracy": float(np.mean([a == b for a, b in zip(flat_t, flat_p)])) if flat_t else 0.0}


def hits_at_k(scores: Sequence[Sequence[float]], gold: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Share of turns whose gold candidate ranks in the top k by score (ties count against gold)."""
    ranks = []
    for s, g in zip(scores, gold):
        s = np.asarray(s, dtype=float)
        ranks.append(int(np.sum(s > s[g]) + np.sum(s[np.arange(len(s)) != g] == s[g])))
    ranks = np.asarray(ranks)
    return {f"hits_at_{k}": float(np.mean(ranks < k)) if len(ranks) else float("nan") for k in ks}


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token)."""
    return float(math.exp(nll_sum / n_tokens)) if n_tokens else float("nan")


def generation(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (0-100, sacrebleu's and the paper's scale) and TER as a fraction of the reference words (the
    paper's scale, 1.016 for its GPT-2 baseline; sacrebleu reports it x 100) of generated replies."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
            "ter": float(sacrebleu.corpus_ter(hypotheses, [references]).score) / 100}


def bertscore(hypotheses: list[str], references: list[str], model_path: str, num_layers: int) -> dict[str, float]:
    """BERTScore precision/recall/F1 with a local scorer model (no hub access)."""
    from bert_score import BERTScorer

    scorer = BERTScorer(model_type=model_path, num_layers=num_layers, device="cpu")
    p, r, f = scorer.score([h or "." for h in hypotheses], references)
    return {"bertscore_precision": float(p.mean()), "bertscore_recall": float(r.mean()), "bertscore_f1": float(f.mean())}
