"""Metrics against hand-computed values on small fixed inputs."""

from __future__ import annotations

import math

import pytest

from squeeze import metrics


def test_classification_hand_computed():
    # gold 1 1 1 0 0 ; pred 1 0 1 1 0 -> TP=2 FP=1 FN=1 TN=1
    m = metrics.classification([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert metrics.classification([0, 1], [0, 1], positive=0)["f1"] == 1.0


def test_seqeval_entity_f1_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # gold entities: PER(0-1) LOC(3) ORG(0) ; predicted: PER(0-1) ORG(3) ORG(0): 2 correct of 3 each way
    m = metrics.entities(gold, pred)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["token_accuracy"] == pytest.approx(5 / 6)


def test_seqeval_strict_iob2_rejects_broken_entities():
    # an entity starting with I- is not an entity under strict IOB2
    m = metrics.entities([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])
    assert m["f1"] == 0.0


def test_hits_at_k_hand_computed():
    scores = [[0.1, 0.9, 0.5],   # gold 1 ranks first
              [0.8, 0.2, 0.5],   # gold 1 ranks third
              [0.3, 0.3, 0.1]]   # gold 0 ties with 1: ties count against gold -> rank 2
    m = metrics.hits_at_k(scores, [1, 1, 0], ks=(1, 2, 3))
    assert m == {"hits_at_1": pytest.approx(1 / 3), "hits_at_2": pytest.approx(2 / 3), "hits_at_3": 1.0}


def test_perplexity():
    assert metrics.perplexity(2 * math.log(4), 2) == pytest.approx(4.0)
    assert math.isnan(metrics.perplexity(0.0, 0))


def test_generation_bleu_ter():
    perfect = metrics.generation(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["ter"] == pytest.approx(0.0)
    # one substitution in six words: TER = 1/6
    one_off = metrics.generation(["the cat sat on the rug"], ["the cat sat on the mat"])
    assert one_off["ter"] == pytest.approx(1 / 6)  # a fraction, the paper's scale (1 edit of 6 words)
    assert 0 < one_off["bleu"] < 100


def test_bertscore_with_packaged_minilm():
    from squeeze.models import minilm_path

    m = metrics.bertscore(["a dog runs in the park", "tea"], ["a dog runs in the park", "quantum chromodynamics"],
                          minilm_path(), num_layers=6)
    assert set(m) == {"bertscore_precision", "bertscore_recall", "bertscore_f1"}
    same = metrics.bertscore(["a dog runs in the park"], ["a dog runs in the park"], minilm_path(), 6)
    assert same["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)
    assert m["bertscore_f1"] < same["bertscore_f1"]
