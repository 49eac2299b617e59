"""Regression tests for the defects that changed Table 4 (the technique-correctness audit), each on a small example."""

from __future__ import annotations

import math
from fractions import Fraction
from math import comb

import pytest
import torch

from helpers import prepared_for, recipe, tiny_model, tiny_sweep
from squeeze import families, models, quant, formats
from squeeze.formats import torch_native
from squeeze.techniques import imp
from squeeze.tasks.base import to_device


@pytest.fixture(scope="module")
def minilm_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models.minilm_path())


# ---------------------------------------------------------------- IMP
def test_imp_classifier_keeps_the_pretrained_pooler(tmp_path, minilm_tok):
    """A pruned MLM has no pooler: the classifier built from it takes the pre-trained one, as every other
    technique's model has, and the pruned encoder from the source."""
    mlm = models.build_model("minilm", "AutoModelForMaskedLM", minilm_tok, seed=0)
    imp.prune_to(mlm, 0.5)
    formats.save(mlm, tmp_path / "pruned", auto_class="AutoModelForMaskedLM")
    cls = models.from_source(tmp_path / "pruned", "AutoModelForSequenceClassification", minilm_tok, seed=0,
                             labels=["neg", "pos"], pretrained="minilm")
    base = models.build_model("minilm", "AutoModelForSequenceClassification", minilm_tok, seed=0, labels=["neg", "pos"])
    assert torch.equal(cls.bert.pooler.dense.weight, base.bert.pooler.dense.weight)  # pre-trained, not random
    assert torch.equal(cls.classifier.weight, base.classifier.weight)  # the baseline's head initialisation
    q = cls.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(q, mlm.bert.encoder.layer[0].attention.self.query.weight) and (q == 0).float().mean() > 0.2
    assert cls.squeeze_init["init/from_pretrained"] >= 2


def test_head_warmup_fits_only_the_missing_lm_head_before_the_schedule(tmp_path):
    """MiniLM ships no MLM head: the prune stage trains only the head's weights for head_warmup_steps (encoder
    frozen), then everything, and its first prune event comes Y steps after the warm-up."""
    sweep = tiny_sweep("lm", "minilm", size=160, technique=("imp_prune",), lr=1e-3, epochs=1, max_steps=7,
                       params={"imp_prune": {"sparsity": 0.1, "every": 2, "head_warmup_steps": 3,
                                             "allow_forced_final": True}})
    prepared = prepared_for(sweep, tmp_path)
    r = recipe(sweep, prepared, tmp_path)
    model, hook = r.loop.model, r.hooks[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fresh = set(model.squeeze_fresh)
    assert fresh and all(n.startswith("cls.predictions") for n in fresh)
    it = ((i, to_device(b, r.loop.device)) for i, b in r.loop._batches(0))  # as train_epoch hands them on
    for step in range(1, 4):
        _, batch = next(it)
        r.loop._step(batch, [])
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= fresh  # only the head moved during the warm-up
    assert hook.events == [] and not hook.frozen  # unfrozen at step 3, no prune event yet
    _, batch = next(it)
    r.loop._step(batch, [])  # step 4
    assert hook.events == []
    _, batch = next(it)
    r.loop._step(batch, [])  # step 5 = warm-up 3 + Y 2
    assert [e["step"] for e in hook.events] == [5]
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith("bert.encoder"))


def test_prune_stage_saves_the_model_at_exactly_x_not_an_earlier_better_epoch(tmp_path):
    """Perplexity rises as pruning goes on, so the 'best' epoch is an early, less sparse one; the prune stage must
    save the end of its schedule, at exactly X (it saved 0.41 for X = 0.5)."""
    sweep = tiny_sweep("lm", size=300, technique=("imp_prune",), lr=1e-3, epochs=3, batch_size=16,
                       params={"imp_prune": {"sparsity": 0.5, "every": 2}})
    prepared = prepared_for(sweep, tmp_path)
    r = recipe(sweep, prepared, tmp_path)
    for epoch, _ in enumerate(r.fit()):
        if epoch == 0:  # say the first, less sparse epoch had the best perplexity
            first = {k: v.detach().clone() for k, v in r.loop.model.state_dict().items()}
            assert 0 < r.hooks[0].n_pruned < r.hooks[0].target
    r.loop.best_weights, r.loop.state.best_epoch = first, 0
    final = r.finish(tmp_path / "out")
    weights = imp.prunable(formats.load(tmp_path / "out" / "model"))
    total = sum(w.numel() for w in weights.values())
    assert sum(int((w == 0).sum()) for w in weights.values()) == round(0.5 * total)
    assert final.metrics["prune/final_sparsity"] == pytest.approx(0.5, abs=1 / total)


def test_pruned_weights_get_no_gradient_and_stay_out_of_clipping(tmp_path):
    sweep = tiny_sweep("lm", size=120, technique=("imp_prune",), params={"imp_prune": {"sparsity": 0.5, "every": 1}})
    prepared = prepared_for(sweep, tmp_path)
    r = recipe(sweep, prepared, tmp_path)
    hook = r.hooks[0]
    hook.prune_once(1)
    batch = max((b for _, b in r.loop._batches(0)), key=lambda b: int((b["labels"] != -100).sum()))
    r.loop.model(**to_device(batch, r.loop.device)).loss.backward()
    for k, w in hook.weights.items():
        assert w.grad is not None and torch.all(w.grad[~hook.masks[k]] == 0), k
        assert torch.any(w.grad[hook.masks[k]] != 0), k


def test_mlm_masks_are_drawn_afresh_for_each_epoch_and_reproducibly(tmp_path):
    sweep = tiny_sweep("lm", size=120, technique=("imp_prune",), params={"imp_prune": {"sparsity": 0.1, "every": 1}})
    prepared = prepared_for(sweep, tmp_path)
    loop = recipe(sweep, prepared, tmp_path).loop
    assert loop.transform is not None

    def labels(epoch):
        gen = torch.Generator().manual_seed(loop.seed * 1_000_003 + epoch)
        out = {}
        special = torch.tensor(prepared.tokenizer.all_special_ids)
        for idx, batch in loop._batches(epoch):
            b = loop.transform(batch, gen)
            assert not torch.isin(b["labels"][b["labels"] != -100], special).any()  # never [CLS], [SEP] or padding
            for i, row in zip(idx, b["labels"]):
                out[i] = row[row != -100].tolist(), (row != -100).nonzero().flatten().tolist()
        return out

    lone = {"input_ids": torch.tensor([[2, 40, 41, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
            "labels": torch.full((1, 4), -100)}
    for seed in range(20):  # a one-example batch of a short block always gets a masked token (else its loss is NaN)
        assert (loop.transform(lone, torch.Generator().manual_seed(seed))["labels"] != -100).sum() >= 1
    e0, e1 = labels(0), labels(1)
    assert e0 == labels(0)  # the same epoch draws the same masks (a resumed trial is the same trial)
    assert sum(e0[i][1] != e1[i][1] for i in e0) > len(e0) // 2  # another epoch masks other positions
    rate = sum(len(v[1]) for v in e0.values()) / sum(len(f["input_ids"]) - 2 for f in prepared.features["train"])
    assert 0.10 < rate < 0.20  # about 15% of the non-special tokens


# ---------------------------------------------------------------- serialization and EVP
def test_minus_zero_survives_sparse_packing(tmp_path):
    model = torch.nn.Module()
    w = torch.zeros(64, 8)
    w[0, 0], w[1, 1], w[2, 2] = -0.0, 1.5, -2.0
    out, sparse = {}, {}
    torch_native._pack("w", w, out, sparse)
    back = torch_native._unpack(out, sparse)["w"]
    assert "w" in sparse and torch.equal(back.view(torch.int32), w.view(torch.int32))  # bit for bit, sign included
    del model


def test_unbiased_evp_is_exact_and_does_not_overflow_for_large_n():
    from analysis.evp import _weights, expected_max

    N, n = 12, 5
    exact = [Fraction(comb(k - 1, n - 1), comb(N, n)) for k in range(1, N + 1)]
    assert [float(e) for e in exact] == list(_weights(N, n, "unbiased"))  # correctly rounded
    scores = [i / 2999 for i in range(3000)]  # comb(3000, 40) overflows a float
    value = expected_max(scores, 40, method="unbiased")
    assert math.isfinite(value) and value == pytest.approx(40 / 41, abs=1e-3)  # E[max of 40 of U(0,1)] = n/(n+1)


# ---------------------------------------------------------------- QAT and sizes
def test_qat_simulates_the_kernel_it_deploys_to():
    """The fake quantization reproduces the dynamic int8 Linear it converts to (weight scale max/127.5 over
    [-128, 127], 7-bit asymmetric inputs): the two agree to float rounding, where a max/127 and 8-bit simulation
    was off by about 1e-1."""
    import copy

    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(64, 32))
    x = torch.randn(6, 64) * 3 + 0.5
    with torch.no_grad():
        real = quant.dynamic_int8(copy.deepcopy(lin))(x)
        fp32 = lin(x)
        handles = quant.add_fake_quant(lin)
        simulated = lin(x)
    quant.remove_fake_quant(lin, handles)
    assert (simulated - real).abs().max() < 1e-5
    assert (fp32 - real).abs().max() > 1e-3  # the float model differs: the simulation is not trivially it


def test_qat_simulation_differs_from_the_kernel_by_one_step_at_training_batch_sizes():
    """The README's claim, at the size real runs use (2,048 rows of a 384-wide Linear): the simulation is not exact
    there; where it differs, it is by one quantization step of a boundary value (|delta| < 2e-2, under 0.3% of the
    output range), never by a scheme mismatch (the 8-bit max/127 simulation was off by about 1e-1)."""
    import copy

    worst = []
    for seed in range(3):
        torch.manual_seed(seed)
        lin = torch.nn.Sequential(torch.nn.Linear(384, 384))
        x = torch.randn(2048, 384) * 3 + 0.5
        with torch.no_grad():
            real = quant.dynamic_int8(copy.deepcopy(lin))(x)
            handles = quant.add_fake_quant(lin)
            simulated = lin(x)
        quant.remove_fake_quant(lin, handles)
        worst.append(((simulated - real).abs().max().item(), real.abs().max().item()))
    assert any(d > 1e-5 for d, _ in worst)  # not exact: the README must not say it is
    assert all(d < 2e-2 and d < 3e-3 * top for d, top in worst), worst


def test_tied_embeddings_are_stored_once(tmp_path):
    sweep = tiny_sweep("dialogue", "tiny-gpt2", size=40)
    prepared = prepared_for(sweep, tmp_path)
    model = tiny_model(sweep, prepared).eval()
    assert families.tied_embeddings(model)
    formats.save(model, tmp_path / "m", auto_class="AutoModelForCausalLM")
    from safetensors import safe_open

    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys
    back = formats.load(tmp_path / "m")
    ids = torch.arange(1, 20).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, model(input_ids=ids).logits)
    assert families.tied_embeddings(back)


# ---------------------------------------------------------------- dialogue scoring
def test_generation_prompt_does_not_depend_on_the_gold_reply_length():
    from squeeze.data import synthetic
    from squeeze.registry import get_task
    from squeeze.vocab import build

    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    task = get_task("dialogue")
    ex = synthetic.dialogue(1, 0)[0]
    short, long = (dict(ex, reply=r, candidates=[r]) for r in ("yes .", " ".join(["a very long reply indeed"] * 8)))
    with tempfile.TemporaryDirectory() as d:
        build("gpt2", [ex["reply"], " ".join(ex["persona"] + ex["history"])] * 20, Path(d), 400)
        tok = task.prepare_tokenizer(AutoTokenizer.from_pretrained(d))
    a, b = task.encode([short, long], tok, None, max_length=48)
    assert a["context"] == b["context"]  # the prompt that generates (and ranks) is the same for both
    assert len(a["input_ids"]) <= 48 and len(b["input_ids"]) <= 48


def test_the_prompt_keeps_the_utterance_it_answers_before_the_persona(tmp_path):
    """ConvAI2 personas run to ~38 SmolLM2 tokens, so a 48-token prompt that fills the persona first kept no
    history in 63% of turns: the model ranked and generated replies to an utterance it never saw."""
    from transformers import AutoTokenizer

    from squeeze.registry import get_task
    from squeeze.vocab import build

    task = get_task("dialogue")
    ex = {"persona": ["i like cats ."] * 6, "history": ["hello there .", "hi , how are you ?", "fine , do you have pets ?"],
          "reply": "yes , two cats .", "candidates": []}
    build("gpt2", [" ".join(ex["persona"] + ex["history"] + [ex["reply"]])] * 20, tmp_path, 300)
    tok = task.prepare_tokenizer(AutoTokenizer.from_pretrained(tmp_path))
    s1, s2 = tok.convert_tokens_to_ids(["<speaker1>", "<speaker2>"])
    last = [s1] + task._ids(tok, ex["history"][-1])

    ids, types = task._context(tok, ex, 20)  # room for the last utterance and part of the persona, no older turn
    assert len(ids) == 20 and ids[0] == tok.bos_token_id and ids[-1] == s2
    assert ids[-1 - len(last):-1] == last and types[-1 - len(last):-1] == [s1] * len(last)
    assert "cats" in tok.decode(ids[1:-1 - len(last)]) and "hello" not in tok.decode(ids)

    ids, types = task._context(tok, ex, 400)  # everything, in TransferTransfo's order and speakers
    text = tok.decode(ids[1:], skip_special_tokens=False)
    assert text.index("cats") < text.index("hello") < text.index("how are") < text.index("pets")
    assert [t for t in types if t in (s1, s2)] and types.count(s1) > 0 and ids.count(s1) == 2 and ids.count(s2) == 2

    ids, _ = task._context(tok, ex, 5)  # shorter than the last utterance: its most recent tokens
    assert len(ids) == 5 and ids[-2] == last[-1] and ids[1] == s1


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
def test_candidates_ranked_on_a_shared_prompt_cache_score_as_whole_sequences_do(tmp_path, preset):
    """Hits@k runs the prompt once and repeats its key/value cache for the 20 candidates; each candidate's mean
    log-likelihood must equal the one from its own whole sequence (GPT-2 with token types, Llama without)."""
    from squeeze.registry import get_task

    sweep = tiny_sweep("dialogue", preset, size=40)
    p = prepared_for(sweep, tmp_path)
    model = tiny_model(sweep, p).eval()
    task = get_task("dialogue")
    feats = [f for f in p.features["test"] if f["gold"] >= 0][:3]
    assert feats and all(len(f["candidates"]) > 1 for f in feats)
    with torch.no_grad():
        for f in feats:
            cached = task._candidate_scores(model, p.tokenizer, f, "cpu", 112)
            whole = task._joined_scores(model, p.tokenizer, f, "cpu", 112)
            assert len(set(round(x, 3) for x in whole)) > 1  # the candidates differ, so the check has teeth
            assert cached == pytest.approx(whole, abs=1e-4)


def test_word_perplexity_has_the_same_denominator_under_two_tokenizers(tmp_path):
    """The same replies tokenized by two BPEs of different sizes give different token counts but the same word
    count, so word_ppl compares models across tokenizers where ppl cannot."""
    from transformers import AutoTokenizer

    from squeeze.data import synthetic
    from squeeze.registry import get_task
    from squeeze.vocab import build

    task = get_task("dialogue")
    rows = synthetic.dialogue(60, 1)
    texts = list(task.texts(rows))
    toks = []
    for size in (300, 1500):
        build("gpt2", texts, tmp_path / str(size), size)
        toks.append(task.prepare_tokenizer(AutoTokenizer.from_pretrained(tmp_path / str(size))))
    feats = [task.encode(rows, tok, None, max_length=128) for tok in toks]
    tokens = [sum(sum(t != -100 for t in f["labels"]) for f in fs) for fs in feats]
    words = [sum(f["n_words"] for f in fs) for fs in feats]
    assert tokens[0] != tokens[1] and words[0] == words[1] == sum(len(r["reply"].split()) + 1 for r in rows)


def test_tiny_preset_tokenizer_is_shared_by_every_stage_of_a_study(tmp_path):
    from squeeze import config
    from squeeze.prepare import shared_tokenizers

    cfg = config.parse({"experiment": "t", "sweeps": [
        {"name": "prune", "task": "lm", "technique": ["imp_prune"], "model": {"name": "tiny-gpt2"}, "data": {"size": 90}},
        {"name": "base", "task": "dialogue", "model": {"name": "tiny-gpt2"}, "data": {"size": 60}},
        {"name": "senti", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60}}]})
    shared = shared_tokenizers(cfg.sweeps, tmp_path)
    assert shared["prune"] == shared["base"] != shared["senti"]


# ---------------------------------------------------------------- recommendation
def _df(**baseline):
    import pandas as pd

    rows = [{"run_id": "b", "task": "sentiment", "technique": "baseline", "status": "FINISHED", "val/accuracy": 0.52,
             "test/accuracy": 0.51, "test/chance_accuracy": 0.5, "test/n": 300.0, "size/disk_mb": 80.0,
             "latency/cpu_ms_per_example": 10.0, "latency/cpu_p10_ms_per_example": 9.0, **baseline},
            {"run_id": "q", "task": "sentiment", "technique": "qat", "status": "FINISHED", "val/accuracy": 0.52,
             "test/accuracy": 0.51, "size/disk_mb": 20.0, "latency/cpu_ms_per_example": 12.0,
             "latency/cpu_p10_ms_per_example": 9.5}]
    return pd.DataFrame(rows)


def test_no_recommendation_rests_on_a_baseline_at_chance(tmp_path):
    from analysis.recommend import baseline_above_chance, recommend

    ok, why = baseline_above_chance(_df(), "sentiment")
    assert not ok and "not above chance (0.5 + 0.058 for 300 examples)" in why
    assert baseline_above_chance(_df(**{"test/accuracy": 0.9, "val/accuracy": 0.9}), "sentiment")[0]
    # a latency difference inside the measured spread does not fail a limit: qat's p10 is under 10 ms
    rec = recommend(_df(**{"test/accuracy": 0.9, "val/accuracy": 0.9}), "sentiment", max_latency_ms=10.0).set_index("technique")
    assert rec.loc["qat", "reason"].find("latency") == -1
