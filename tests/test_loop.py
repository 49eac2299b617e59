"""The one loop learns every task on tiny models; batching and checkpoints behave."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import recipe
from squeeze import checkpoint, config, models
from squeeze.loop import length_grouped_batches
from squeeze.prepare import prepare


def _sweep(task, preset, size, **train):
    return config.parse({"experiment": "t", "sweeps": [{
        "name": "s", "task": task, "model": {"name": preset}, "data": {"size": size, "split": [0.6, 0.2, 0.2]},
        "train": {"max_length": 96, "batch_size": 16, "eval_batch_size": 64, **train},
        "eval": {"max_generate": 10, "max_rank": 30, "max_new_tokens": 10}}]}).sweeps[0]


def _loop(sweep, cache, epochs, **train):
    """The trial's recipe for ``sweep`` with ``epochs`` and other train fields set; its loop and evaluate."""
    sweep = sweep.model_copy(update={"train": sweep.train.model_copy(update={"epochs": epochs, **train})})
    r = recipe(sweep, prepare(sweep, cache), cache)
    return r.loop, r.evaluate


def test_sentiment_beats_chance(tmp_path):
    loop, evaluate = _loop(_sweep("sentiment", "tiny-bert", 1000, lr=2e-3), tmp_path, epochs=6)
    results = list(loop.fit())
    loop.load_best()
    test, rows = evaluate(loop.model, "test", final=True)
    assert test["accuracy"] > 0.75, (test, [r.metrics for r in results])
    assert {"accuracy", "precision", "recall", "f1"} <= set(test) and len(rows) == 200


def test_ner_entity_f1_rises(tmp_path):
    loop, evaluate = _loop(_sweep("ner", "tiny-bert", 500, lr=1e-3), tmp_path, epochs=2)
    before = evaluate(loop.model)[0]["f1"]
    results = list(loop.fit())
    assert results[-1].metrics["f1"] > 0.2 and results[-1].metrics["f1"] > before


def test_dialogue_perplexity_falls(tmp_path):
    loop, evaluate = _loop(_sweep("dialogue", "tiny-gpt2", 300, lr=2e-3), tmp_path, epochs=2)
    before = evaluate(loop.model)[0]
    results = list(loop.fit())
    assert results[-1].metrics["ppl"] < 0.5 * before["ppl"]
    final, rows = evaluate(loop.model, "test", final=True)
    assert {"ppl", "hits_at_1", "hits_at_5", "hits_at_10", "bleu", "ter"} <= set(final)
    assert "bertscore_f1" not in final  # absent unless a scorer model is configured, never invented
    assert all("prediction" in r for r in rows[:10])


def test_length_grouped_batches_cover_all_and_reduce_padding():
    import random

    lengths = [random.Random(i).randint(5, 120) for i in range(1000)]
    b = length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert sorted(i for batch in b for i in batch) == list(range(1000))
    assert b == length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert b != length_grouped_batches(lengths, 16, seed=1, epoch=1)
    pad = sum(16 * max(lengths[i] for i in x) - sum(lengths[i] for i in x) for x in b if len(x) == 16)
    naive = [list(range(i, i + 16)) for i in range(0, 992, 16)]
    pad_naive = sum(16 * max(lengths[i] for i in x) - sum(lengths[i] for i in x) for x in naive)
    assert pad < 0.1 * pad_naive


def test_checkpoint_resume_is_exact(tmp_path):
    sweep = _sweep("sentiment", "tiny-bert", 200, lr=1e-3)
    a, _ = _loop(sweep, tmp_path, epochs=2)
    it = a.fit()
    next(it)
    checkpoint.save(a, tmp_path / "ck")
    next(it)
    b, _ = _loop(sweep, tmp_path, epochs=2)
    checkpoint.load(b, tmp_path / "ck")
    assert b.state.epoch == 1
    list(b.fit())
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k


def test_dataloader_workers_give_the_same_training(tmp_path):
    """Batches collated in 2 DataLoader processes: same order, same padding, same dropout, same weights."""
    sweep = _sweep("sentiment", "tiny-bert", 200, lr=1e-3)
    a, _ = _loop(sweep, tmp_path, epochs=1, num_workers=0)
    b, _ = _loop(sweep, tmp_path, epochs=1, num_workers=2)
    assert b.num_workers == 2
    ra, rb = a.train_epoch(0), b.train_epoch(0)
    assert ra[1:] == rb[1:] and ra[0] == pytest.approx(rb[0], rel=1e-6)  # padding fraction and samples exactly
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k


def test_corrupt_checkpoint_is_reported(tmp_path):
    sweep = _sweep("sentiment", "tiny-bert", 200, lr=1e-3)
    a, _ = _loop(sweep, tmp_path, epochs=1)
    checkpoint.save(a, tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(a, tmp_path / "ck")


def test_nan_loss_fails_loudly(tmp_path):
    sweep = _sweep("sentiment", "tiny-bert", 200, lr=1e-3)
    loop, _ = _loop(sweep, tmp_path, epochs=1)
    with torch.no_grad():
        for p in loop.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        list(loop.fit())


def test_minilm_preset_is_pretrained():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models.minilm_path())
    m = models.build_model("minilm", "AutoModelForSequenceClassification", tok, seed=0, labels=["neg", "pos"])
    assert m.config.hidden_size == 384 and m.config.num_hidden_layers == 6
    m2 = models.build_model("minilm", "AutoModelForSequenceClassification", tok, seed=1, labels=["neg", "pos"])
    # encoder weights come from the package (identical across seeds); only the new head differs
    assert torch.equal(m.bert.encoder.layer[0].attention.self.query.weight, m2.bert.encoder.layer[0].attention.self.query.weight)


def test_bf16_autocast_trains(tmp_path):
    sweep = _sweep("sentiment", "tiny-bert", 200, lr=2e-3, precision="bf16")
    loop, _ = _loop(sweep, tmp_path, epochs=2)
    assert loop.dtype == torch.bfloat16
    seen = []
    loop.model.classifier.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)
    results = list(loop.fit())
    assert seen and set(seen) == {torch.bfloat16}  # the training forward ran under bf16 autocast
    assert all(math.isfinite(r.train_loss) for r in results)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_fp16_grad_scaler_on_gpu(tmp_path):
    sweep = _sweep("sentiment", "tiny-bert", 200, lr=2e-3, device="cuda", precision="fp16")
    loop, _ = _loop(sweep, tmp_path, epochs=1)
    assert loop.scaler is not None
    assert math.isfinite(list(loop.fit())[0].train_loss)


@pytest.mark.parametrize("task", ["sentiment", "ner"])
def test_gradient_accumulation_gives_the_whole_batch_update(tmp_path, task):
    """train.grad_accum splits each batch into micro-batches weighted by their labels: with dropout off, the
    weights after an epoch equal those of the whole batches (sentence labels and token labels alike)."""
    sweep = _sweep(task, "tiny-bert", 160, lr=1e-3)
    whole, _ = _loop(sweep, tmp_path, epochs=1)
    parts, _ = _loop(sweep, tmp_path, epochs=1, grad_accum=4)
    for loop in (whole, parts):
        for m in loop.model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    assert parts.grad_accum == 4 and len(parts._split(*_first_batch(parts))) == 4
    whole.train_epoch(0)
    parts.train_epoch(0)
    diffs = [float((v - w).abs().max()) for v, w in zip(whole.model.state_dict().values(), parts.model.state_dict().values())
             if v.is_floating_point()]
    assert max(diffs) < 2e-5


def _first_batch(loop):
    idx, batch = next(iter(loop._batches(0)))
    return batch, idx
