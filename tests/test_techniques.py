"""PKD, IMP, DQ and QAT on tiny models: the math, the invariants, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import context, prepared_for, recipe, tiny_model, tiny_sweep
from squeeze import families, quant, formats
from squeeze.registry import get_task
from squeeze.techniques import imp, pkd
from squeeze.techniques.dq import check_conv1d_conversion, quantize
from squeeze.techniques.qat import QAT


# ---------------------------------------------------------------- PKD
def test_pkd_loss_hand_computed():
    ce = torch.tensor(0.7)
    logits = torch.tensor([[1.0, 2.0]])
    e1, e2 = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 5.0]])  # orthogonal: (a/|a| - b/|b|)^2 = [1, 1]
    loss = pkd.pkd_loss(ce, logits, logits, [e1], [e2], alpha=0.5, temperature=4.0, beta=10.0)
    assert loss.item() == pytest.approx(0.5 * 0.7 + 0 + 10 * (1 + 1) / 2)  # mean over the 2 hidden units
    # KL(p_t || p_s) with p_t = [.5, .5], p_s = [.75, .25] (T = 1): .5 ln(.5/.75) + .5 ln(.5/.25) = .5 ln(4/3)
    s, t = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]])
    loss = pkd.pkd_loss(ce, s, t, [], [], alpha=1.0, temperature=1.0, beta=0.0)
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    # Sun et al.'s KLDivLoss(reduction="mean") also divides by the 2 classes
    loss = pkd.pkd_loss(ce, s, t, [], [], alpha=1.0, temperature=1.0, beta=0.0, kd_reduction="mean")
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3) / 2, rel=1e-6)
    # T^2 scaling with T = 2: logits halve, p_s = [sqrt3, 1]/(sqrt3 + 1)
    ps = torch.tensor([math.sqrt(3), 1.0]) / (math.sqrt(3) + 1)
    kl = float((0.5 * torch.log(0.5 / ps)).sum())
    loss = pkd.pkd_loss(ce, s, t, [], [], alpha=0.3, temperature=2.0, beta=0.0)
    assert loss.item() == pytest.approx(0.7 * 0.7 + 0.3 * 4 * kl, rel=1e-6)


def test_patience_term_is_sun_et_al_mean_squared_error():
    """2 layers x 2 positions x 2 hidden units: one position orthogonal (squared distance 2 per layer), one equal.
    Sun et al.'s F.mse_loss averages the 8 squared differences: (2 + 0 + 2 + 0) / 8 = 0.5, so beta=100 adds 50
    (a sum over hidden units and layers would add 400)."""
    s = [torch.tensor([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([[0.0, 3.0], [1.0, 0.0]])]
    t = [torch.tensor([[0.0, 4.0], [1.0, 1.0]]), torch.tensor([[5.0, 0.0], [7.0, 0.0]])]
    ce = torch.tensor(0.0)
    loss = pkd.pkd_loss(ce, torch.zeros(2, 2), torch.zeros(2, 2), s, t, alpha=0.0, temperature=1.0, beta=100.0)
    assert loss.item() == pytest.approx(50.0, rel=1e-6)
    ref = torch.nn.functional.mse_loss(torch.stack([torch.nn.functional.normalize(x, dim=-1) for x in s]),
                                       torch.stack([torch.nn.functional.normalize(x, dim=-1) for x in t]))
    assert loss.item() == pytest.approx(100 * ref.item(), rel=1e-6)


def test_pkd_topk_kl_renormalises_the_student_over_the_teacher_top_k():
    s = torch.tensor([[0.0, math.log(3.0), 5.0]])
    top_vals, top_idx = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0, 1]])
    # over the teacher's 2 tokens the student's distribution is [1/4, 3/4], the teacher's too: KL = 0, although
    # most of the student's full-vocabulary mass sits on token 2 (outside the top-k)
    loss = pkd.pkd_loss(torch.tensor(0.0), s, top_vals, [], [], alpha=1.0, temperature=1.0, beta=0.0, t_index=top_idx)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # a student that disagrees on the top-k: p_s = [1/2, 1/2] -> KL = 1/4 ln(1/2) + 3/4 ln(3/2)
    s2 = torch.tensor([[1.0, 1.0, -3.0]])
    loss = pkd.pkd_loss(torch.tensor(0.0), s2, top_vals, [], [], alpha=1.0, temperature=1.0, beta=0.0, t_index=top_idx)
    assert loss.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)
    # k = the whole vocabulary is the full KL
    t_full = torch.tensor([[0.3, -1.0, 2.0]])
    vals, idx = t_full.topk(3, dim=-1)
    full = pkd.pkd_loss(torch.tensor(0.0), s2, t_full, [], [], alpha=1.0, temperature=2.0, beta=0.0)
    topk = pkd.pkd_loss(torch.tensor(0.0), s2, vals, [], [], alpha=1.0, temperature=2.0, beta=0.0, t_index=idx)
    assert topk.item() == pytest.approx(full.item(), rel=1e-6)


def test_skip_mapping():
    assert pkd.skip_mapping(12, 6) == [2, 4, 6, 8, 10]
    assert pkd.skip_mapping(4, 2) == [2]


def test_student_copies_first_k_pretrained_layers():
    from transformers import AutoTokenizer

    from squeeze import models

    tok = AutoTokenizer.from_pretrained(models.minilm_path())
    full = models.build_model("minilm", "AutoModelForSequenceClassification", tok, seed=0, labels=["a", "b"])
    student = families.truncate(models.build_model("minilm", "AutoModelForSequenceClassification", tok, seed=0,
                                                   labels=["a", "b"]), 3)
    assert len(student.bert.encoder.layer) == 3 and student.config.num_hidden_layers == 3
    fs = full.state_dict()
    for k, v in student.state_dict().items():
        assert torch.equal(v, fs[k]), k
    assert not any(k.startswith("bert.encoder.layer.3.") for k in student.state_dict())


@pytest.fixture
def teacher_setup(tmp_path):
    sweep = tiny_sweep("sentiment", size=100)
    prepared = prepared_for(sweep, tmp_path / "cache")
    teacher = tiny_model(sweep, prepared, seed=5)
    formats.save(teacher, tmp_path / "teacher", auto_class="AutoModelForSequenceClassification")
    return sweep, prepared, tmp_path


def _pkd(sweep, prepared, tmp_path, **params):
    ctx = context(sweep, prepared, tmp_path / "cache", "pkd", source_dir=str(tmp_path / "teacher"),
                  alpha=0.5, temperature=5.0, beta=10.0, **params)
    return pkd.PKD(ctx), ctx


@pytest.fixture
def teacher_forwards(monkeypatch):
    """Counts the teacher's forward passes (a spy on PKD.teacher_rows)."""
    calls = [0]
    real = pkd.PKD.teacher_rows

    def counted(self, batch):
        calls[0] += 1
        return real(self, batch)

    monkeypatch.setattr(pkd.PKD, "teacher_rows", counted)
    return calls


def test_teacher_cache_written_once_and_matches_online(teacher_setup, teacher_forwards, monkeypatch):
    from squeeze import console
    from squeeze.tasks.base import collate

    posted = []
    monkeypatch.setattr(console, "progress", lambda text, every_s=2.0: posted.append(text))
    sweep, prepared, tmp_path = teacher_setup
    first, ctx1 = _pkd(sweep, prepared, tmp_path)
    first.prepare(first.initial_model())
    n = len(prepared.features["train"])
    assert posted and posted[0].startswith(f"teacher cache 32/{n} rows, ")  # the build's progress, batch by batch
    built = teacher_forwards[0]
    assert built == math.ceil(len(prepared.features["train"]) / 32)
    assert ctx1.info["pkd/cache_built"] == 1 and ctx1.info["pkd/cache_estimated_mb"] > 0
    second, ctx2 = _pkd(sweep, prepared, tmp_path)
    student = second.prepare(second.initial_model())
    assert teacher_forwards[0] == built  # the second trial ran no teacher forward
    assert "pkd/cache_built" not in ctx2.info
    online, _ = _pkd(sweep, prepared, tmp_path, teacher_cache=False)
    idx = [0, 3, 5]
    batch = collate([prepared.features["train"][i] for i in idx], prepared.pad_id)
    out = student(**batch, output_hidden_states=True)
    cached_loss = second.extra_loss(batch, out, idx)
    online_loss = online.extra_loss(batch, out, idx)
    assert torch.allclose(cached_loss, online_loss, atol=1e-5)


def test_corrupt_teacher_cache_is_rebuilt(teacher_setup, teacher_forwards):
    sweep, prepared, tmp_path = teacher_setup
    first, _ = _pkd(sweep, prepared, tmp_path)
    first.prepare(None)
    arrow = next((tmp_path / "cache" / "teacher").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100] + b"garbage")
    again, ctx = _pkd(sweep, prepared, tmp_path)
    before = teacher_forwards[0]
    again.prepare(None)
    assert ctx.info.get("pkd/cache_built") == 1 and teacher_forwards[0] > before


def test_pkd_dialogue_topk_cache(tmp_path):
    sweep = tiny_sweep("dialogue", "tiny-gpt2", size=60)
    prepared = prepared_for(sweep, tmp_path / "cache")
    formats.save(tiny_model(sweep, prepared), tmp_path / "teacher", auto_class="AutoModelForCausalLM")
    p, ctx = _pkd(sweep, prepared, tmp_path, top_k=8)
    student = p.prepare(p.initial_model())
    assert len(student.transformer.h) == 2
    from squeeze.tasks.base import collate

    batch = collate(prepared.features["train"][:2], prepared.pad_id)
    loss = p.extra_loss(batch, student(**batch, output_hidden_states=True), [0, 1])
    assert torch.isfinite(loss)


def test_pkd_without_teacher_is_refused(tmp_path):
    sweep = tiny_sweep("sentiment", size=60)
    prepared = prepared_for(sweep, tmp_path)
    with pytest.raises(ValueError, match="pkd needs a teacher"):
        pkd.PKD(context(sweep, prepared, tmp_path, "pkd"))


# ---------------------------------------------------------------- IMP
def _pruned(tmp_path, sparsity=0.5, every=3, steps=40, preset="tiny-bert", **params):
    sweep = tiny_sweep("lm", preset, size=200, technique=("imp_prune",))
    prepared = prepared_for(sweep, tmp_path)
    from squeeze import models

    model = models.build_model(preset, get_task("lm").head(prepared.tokenizer), prepared.tokenizer, seed=0)
    ctx = context(sweep, prepared, tmp_path, "imp_prune", sparsity=sparsity, every=every, step_fraction=0.1, **params)
    hook = imp.ImpPrune(ctx)
    prunable_names = set(imp.prunable(model))
    emb_before = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in prunable_names}
    hook.prepare(model)
    for step in range(1, steps + 1):
        hook.after_step(step)
    hook.finalize(model)
    return model, hook, ctx, emb_before


def test_imp_schedule_events_and_exact_sparsity(tmp_path):
    model, hook, ctx, emb_before = _pruned(tmp_path, sparsity=0.5, every=3, steps=40)
    # ceil(log(0.5)/log(0.9)) = 7 events, at steps 3, 6, ..., 21; 10 points of the original weights: 5 events
    assert imp.schedule_events(0.5, 0.1) == 7 and imp.schedule_events(0.5, 0.1, "original") == 5
    assert imp.schedule_events(0.7, 0.1, "original") == 7 and imp.schedule_events(0.7, 0.1) == 12
    assert [e["step"] for e in hook.events] == [3, 6, 9, 12, 15, 18, 21]
    assert ctx.info["prune/forced"] == 0 and len(ctx.logged) == 7 and "prune/ppl" in ctx.logged[0][1]
    w = imp.prunable(model)
    assert imp.sparsity(w) == pytest.approx(0.5, abs=1e-4)
    assert sum(int((x == 0).sum()) for x in w.values()) == round(0.5 * sum(x.numel() for x in w.values()))
    # embeddings, LayerNorm, biases and heads are untouched
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in emb_before.items())
    assert any("embeddings" in k for k in emb_before) and any(k.endswith("bias") for k in emb_before)


def test_imp_too_few_steps_forces_final_prune_only_when_allowed(tmp_path):
    model, hook, ctx, _ = _pruned(tmp_path, sparsity=0.7, every=10, steps=25, allow_forced_final=True)
    assert ctx.info["prune/forced"] == 1
    assert imp.sparsity(imp.prunable(model)) == pytest.approx(0.7, abs=1e-4)
    with pytest.raises(RuntimeError, match="stopped at sparsity .* before X=0.7"):
        _pruned(tmp_path, sparsity=0.7, every=10, steps=25)


def test_a_schedule_with_no_steps_to_spare_reaches_x_exactly_at_its_last_event(tmp_path):
    # 7 events of 10 points, the 7th at the last step (X=0.7, Y=2, 14 steps): each event prunes to its cumulative
    # level round(k/10 x T), so no rounding remainder is left for an 8th event that has no step to run in
    model, hook, ctx, _ = _pruned(tmp_path, sparsity=0.7, every=2, steps=14, step_of="original")
    total = sum(x.numel() for x in imp.prunable(model).values())
    zeros = [round(e["prune/sparsity"] * total) for e in hook.events]
    assert zeros == [round(k / 10 * total) for k in range(1, 7)] + [round(0.7 * total)]
    assert ctx.info["prune/forced"] == 0 and [e["step"] for e in hook.events] == [2, 4, 6, 8, 10, 12, 14]
    # hand-checked: T = 25 weights, shares rounded per event (2.5 -> 2 each) reach 14 of 18 after 7 events;
    # cumulative levels give 2, 5, 8, 10, 12, 15, 18
    hook.total, hook.target = 25, round(0.7 * 25)
    assert [hook.level(k) for k in range(1, 8)] == [2, 5, 8, 10, 12, 15, 18]


def test_step_of_original_prunes_ten_points_of_all_weights_per_event(tmp_path):
    model, hook, ctx, _ = _pruned(tmp_path, sparsity=0.35, every=2, steps=20, step_of="original")
    reached = [round(e["prune/sparsity"], 4) for e in hook.events]
    assert reached == [0.1, 0.2, 0.3, 0.35]  # Chen et al.'s code: 1/(10-k) of the remaining = 10% of the original
    assert [e["step"] for e in hook.events] == [2, 4, 6, 8]


def test_a_schedule_that_cannot_complete_is_refused_before_any_trial(workdir, capsys):
    from squeeze import cli

    doc = {"experiment": "t", "sweeps": [{"name": "prune", "task": "lm", "technique": ["imp_prune"],
                                          "model": {"name": "tiny-bert"}, "data": {"size": 200},
                                          "train": {"epochs": 2, "batch_size": 16, "max_length": 32},
                                          "search_space": {"imp_prune.every": {"grid_search": [1, 100]}}}]}
    (workdir / "s.yaml").write_text(__import__("yaml").safe_dump(doc))
    assert cli.main(["sweep", "s.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "sweep 'prune': IMP schedule X=0.7, Y=100" in err and "needs 12 events x 100 steps = 1200 steps" in err
    assert "allow_forced_final: true" in err and not (workdir / "ray_results").exists()
    assert cli.main(["sweep", "s.yaml", "--dry-run", "sweeps.prune.search_space={imp_prune.every: {grid_search: [1]}}"]) == 0


def test_imp_gpt2_prunes_conv1d(tmp_path):
    model, _, _, _ = _pruned(tmp_path, preset="tiny-gpt2", sparsity=0.3, every=2, steps=12)
    w = imp.prunable(model)
    assert any("c_attn" in k for k in w) and imp.sparsity(w) == pytest.approx(0.3, abs=1e-4)


def test_zeros_stay_zero_through_finetuning(tmp_path):
    sweep = tiny_sweep("sentiment", size=100, technique=("imp",), lr=1e-2, epochs=2, warmup_ratio=0.0)
    prepared = prepared_for(sweep, tmp_path)
    model = tiny_model(sweep, prepared)
    w = imp.prune_to(model, 0.6)
    zeros = {k: (v == 0).clone() for k, v in w.items()}
    formats.save(model, tmp_path / "pruned", auto_class="AutoModelForSequenceClassification")
    r = recipe(sweep, prepared, tmp_path, source_dir=str(tmp_path / "pruned"))
    list(r.fit())
    r.loop.finalize()
    for k, v in imp.prunable(r.loop.model).items():
        assert torch.all(v[zeros[k]] == 0), k
        assert not torch.all(v[~zeros[k]] == 0)
    assert r.hooks[0].ctx.info["imp/sparsity"] == pytest.approx(0.6, abs=1e-4)


# ---------------------------------------------------------------- DQ / QAT / serialization
@pytest.fixture
def gpt2(tmp_path):
    sweep = tiny_sweep("dialogue", "tiny-gpt2", size=40)
    prepared = prepared_for(sweep, tmp_path)
    return tiny_model(sweep, prepared).eval(), prepared


def test_conv1d_to_linear_exact_and_every_block_quantized(gpt2):
    model, _ = gpt2
    ids = torch.arange(1, 20).unsqueeze(0)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    assert check_conv1d_conversion(model) == 4 * model.config.n_layer
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref) or torch.allclose(model(input_ids=ids).logits, ref, atol=1e-6)
    q, counts = quantize(model, embeddings=False)
    assert counts["quant/int8_linear"] == 4 * model.config.n_layer + 1  # c_attn, c_proj, c_fc, mlp.c_proj + lm_head
    assert counts["quant/float_linear"] == 0
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(q(input_ids=ids).logits.flatten(), ref.flatten(), dim=0)
    assert cos >= 0.99


@pytest.mark.parametrize("embeddings", [False, True])
def test_int8_save_load_bit_exact_and_smaller(tmp_path, gpt2, embeddings):
    model, _ = gpt2
    formats.save(model, tmp_path / "fp32", auto_class="AutoModelForCausalLM")
    q, counts = quantize(model, embeddings=embeddings)
    formats.save(q, tmp_path / "int8", auto_class="AutoModelForCausalLM")
    back = formats.load(tmp_path / "int8")
    ids = torch.arange(1, 30).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, q(input_ids=ids).logits)
    assert quant.count_quantized(back) == {k: v for k, v in counts.items() if k.startswith("quant/") and k != "quant/conv1d_converted"}
    ratio = formats.disk_bytes(tmp_path / "int8") / formats.disk_bytes(tmp_path / "fp32")
    assert ratio < (0.35 if embeddings else 0.6)


def test_sparse_save_load_bit_exact_and_smaller(tmp_path):
    sweep = tiny_sweep("sentiment", size=60)
    prepared = prepared_for(sweep, tmp_path)
    model = tiny_model(sweep, prepared).eval()
    formats.save(model, tmp_path / "dense", auto_class="AutoModelForSequenceClassification")
    w = imp.prune_to(model, 0.7)
    assert imp.sparsity(w) == pytest.approx(0.7, abs=1e-4)
    formats.save(model, tmp_path / "sparse", auto_class="AutoModelForSequenceClassification")
    fmt = formats.read_format(tmp_path / "sparse")
    assert set(w) <= set(fmt["sparse"])  # (zero-initialised biases are stored sparse too)
    back = formats.load(tmp_path / "sparse")
    for (k, v), v2 in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(v, v2), k
    dense_bytes = sum(v.numel() * 4 for v in w.values())
    assert formats.stored_bytes(tmp_path / "sparse", w) / dense_bytes <= 0.35
    assert formats.stored_bytes(tmp_path / "dense", w) == dense_bytes
    assert formats.disk_bytes(tmp_path / "sparse") < formats.disk_bytes(tmp_path / "dense")


def test_dq_on_model_without_linear_is_refused():
    with pytest.raises(ValueError, match="has no nn.Linear"):
        quant.dynamic_int8(torch.nn.Sequential(torch.nn.Embedding(4, 2)))


def test_qat_fake_quant_in_embeddings_and_linear_then_int8(tmp_path):
    from torch.nn.utils import parametrize

    sweep = tiny_sweep("sentiment", size=80, technique=("qat",), lr=1e-3, epochs=1)
    prepared = prepared_for(sweep, tmp_path)
    loop = recipe(sweep, prepared, tmp_path).loop
    assert isinstance(loop.hooks[0], QAT)
    m = loop.model
    assert parametrize.is_parametrized(m.bert.embeddings.word_embeddings, "weight")
    assert parametrize.is_parametrized(m.bert.encoder.layer[0].attention.self.query, "weight")
    assert m.bert.encoder.layer[0].attention.self.query._forward_pre_hooks
    list(loop.fit())
    q = loop.finalize()
    counts = quant.count_quantized(q)
    assert counts["quant/int8_linear"] > 0 and counts["quant/float_linear"] == 0 and counts["quant/int8_embedding"] == 3
    assert isinstance(q.bert.embeddings.word_embeddings, quant.Int8Embedding)


def test_teacher_given_as_mlflow_run_is_downloaded(tmp_path, teacher_setup):
    """params.pkd.teacher: runs:/<id> resolves to that run's model folder (through MLflow, no shared path)."""
    from mlflow import MlflowClient

    from squeeze import config, tracking
    from squeeze.driver.trial import _resolve_run_refs

    sweep, prepared, base = teacher_setup
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.ensure_experiment(uri, "t")
    run = MlflowClient(tracking_uri=uri).create_run(exp)
    MlflowClient(tracking_uri=uri).log_artifacts(run.info.run_id, str(base / "teacher"), "model")
    doc = {"experiment": "t", "sweeps": [{"name": "s", "task": "sentiment", "technique": ["pkd"], "model": {"name": "tiny-bert"},
                                          "params": {"pkd": {"teacher": f"runs:/{run.info.run_id}"}}}]}
    cfg = _resolve_run_refs(config.parse(doc).sweeps[0], uri, str(tmp_path / "cache"))
    folder = cfg.params["pkd"]["teacher"]
    assert folder.endswith("/model") and formats.read_format(folder)["auto_class"] == "AutoModelForSequenceClassification"
    assert pkd.PKD(context(sweep, prepared, tmp_path / "cache", "pkd", teacher=folder)).teacher is not None
