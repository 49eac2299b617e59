"""The one-shot menu (RTN, GPTQ, AWQ, magnitude, Wanda, SparseGPT) and the weight-only codec.

Hand-checked examples pin the conventions of the authors' code (IST-DASLab/gptq and sparsegpt, locuslab/wanda,
mit-han-lab/llm-awq); each technique then runs as a trial from a baseline on a tiny model of each family, saves,
reloads with parity, loads as an MLflow pyfunc, and (classifiers) is served by ONNX Runtime's MatMulNBits with the
torch model's logits.
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers import run_recipe, tiny_sweep
from squeeze import families, formats
from squeeze.formats import ort_nbits, weight_only
from squeeze.formats.weight_only import QuantLinear, pack, unpack
from squeeze.formats.fp8 import Fp8Linear
from squeeze.oneshot import grid, solvers


# ---------------------------------------------------------------- the grid (GPTQ's quantizer), by hand
def test_the_grid_is_gptqs_quantizer_on_a_hand_checked_row():
    w = torch.tensor([[-1.0, 0.5, 2.0, -0.25]])
    scale, zero = grid.find_params(w, bits=4, sym=False)  # range [-1, 2]: scale 3/15, zero round(1 / 0.2) = 5
    assert scale.item() == pytest.approx(0.2) and zero.item() == 5
    q = grid.to_int(w, scale, zero, 4)
    assert q.tolist() == [[0, 7, 15, 4]]  # 0.5/0.2 = 2.5 rounds half to even: 2 (+5)
    assert torch.allclose(grid.from_int(q, scale, zero), torch.tensor([[-1.0, 0.4, 2.0, -0.2]]))
    scale, zero = grid.find_params(w, bits=4, sym=True)  # max |w| = 2: range [-2, 2], scale 4/15, zero 8
    assert scale.item() == pytest.approx(4 / 15) and zero.item() == 8
    assert grid.to_int(w, scale, zero, 4).tolist() == [[4, 10, 15, 7]]  # 2 -> 7.5 -> 8 + 8 = 16, clamped to 15
    # the reference's symmetric grid widens the range to -max only where a weight is negative: a row of positive
    # weights keeps min = 0 (scale max/15, zero 8), as IST-DASLab/gptq's find_params does
    scale, zero = grid.find_params(torch.tensor([[0.5, 0.25]]), bits=4, sym=True)
    assert scale.item() == pytest.approx(0.5 / 15) and zero.item() == 8
    scale, zero = grid.find_params(torch.zeros(1, 4), bits=4, sym=False)  # an all-zero group: range [-1, 1]
    assert scale.item() == pytest.approx(2 / 15)


def test_the_asymmetric_grid_is_compressed_tensors_up_to_where_they_round_a_tie():
    """llm-compressor's grid (compressed-tensors' calculate_qparams and fake_quantize, int4 asymmetric groups): the
    same scales, zero points offset by 8 (its integers are signed) and values, except where ``w / scale`` is exactly
    .5: squeeze rounds ``w / scale`` then adds the zero point (GPTQ's reference code), compressed-tensors rounds the
    sum, and half-to-even rounding then differs by one step when the zero point is odd. Fails if upstream changes."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    gen = torch.Generator().manual_seed(0)
    W = torch.randn(64, 192, generator=gen) * 0.05 + 0.01
    W[:, :16] = torch.round(W[:, :16] * 40) / 40  # values on a coarse grid, as a GGUF-derived checkpoint has: ties
    args = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=64)
    groups = W.reshape(64, -1, 64)
    scale, zp = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
    q, s, z = grid.rtn(W, 4, 64, False)
    assert torch.equal(s, scale) and torch.equal(z - 8, zp.float())
    ours = grid.from_int(q, grid.expand(s, 64, 192), grid.expand(z, 64, 192))
    theirs = fake_quantize(W, scale, zp, args)
    differ = ours != theirs
    tie = (W / grid.expand(s, 64, 192)).frac().abs() == 0.5
    assert not (differ & ~tie).any() and differ.any()  # only ties differ, and this data's ties show it (5 of 11)
    assert torch.allclose(ours, theirs, atol=float(s.max()) + 1e-7)  # by one step at most


@pytest.mark.parametrize("bits,cols", [(4, 7), (4, 64), (8, 5)])
def test_int4_and_int8_packing_round_trips_exactly(bits, cols):
    q = torch.randint(0, 2 ** bits, (3, cols), generator=torch.Generator().manual_seed(0))
    packed = pack(q, bits)
    assert packed.dtype == torch.uint8 and packed.shape[1] == math.ceil(cols * bits / 8)
    assert torch.equal(unpack(packed, bits, cols).long(), q)
    if bits == 4:  # low nibble first
        assert int(packed[0, 0]) == int(q[0, 0]) | (int(q[0, 1]) << 4)


# ---------------------------------------------------------------- GPTQ, by hand
def test_gptq_on_two_coupled_columns_matches_the_hand_computed_update_and_beats_rtn():
    """H = [[2, 1, 0], [1, 2, 0], [0, 0, 1]] (no damping): the upper Cholesky factor of H^-1 starts [[sqrt(2/3),
    -1/sqrt(6)], [0, 1/sqrt(2)]], so after column 0 is rounded, column 1 moves by (w0 - q0) / 2 (the OBS update
    -e0 H10 / H11); column 2 is uncoupled. Asymmetric 4 bits on w = [0.23, 0.513, 0.9]: scale 0.06, zero 0;
    w0 -> round(3.83) = 4 (0.24); w1 -> 0.513 - 0.005 = 0.508 -> round(8.47) = 8, where RTN rounds 8.55 to 9."""
    W = torch.tensor([[0.23, 0.513, 0.9]])
    H = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    q, scales, zeros, deq = solvers.gptq(W, H, bits=4, group=-1, sym=False, percdamp=0.0)
    assert q.tolist() == [[4, 8, 15]] and zeros.tolist() == [[0]] and scales.item() == pytest.approx(0.06)
    q_rtn, _, _ = grid.rtn(W, 4, -1, False)
    assert q_rtn.tolist() == [[4, 9, 15]]
    rtn = grid.from_int(q_rtn, scales, zeros)

    def err(Q):
        e = Q - W
        return float(e @ H @ e.T)

    assert err(deq) == pytest.approx(0.001718, abs=2e-6) and err(rtn) == pytest.approx(0.002198, abs=2e-6)


def _correlated(rows=32, cols=64, n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, cols, generator=g) @ (torch.eye(cols) + 0.6 * torch.randn(cols, cols, generator=g) / cols ** 0.5)
    return torch.randn(rows, cols, generator=g), X


@pytest.mark.parametrize("group,act_order,sym", [(16, False, False), (-1, False, True), (16, True, False)])
def test_gptq_output_error_is_below_rtns_and_its_integers_are_what_it_computes(group, act_order, sym):
    W, X = _correlated()
    H = 2 * X.T @ X / X.shape[0]
    q, scales, zeros, deq = solvers.gptq(W, H, bits=4, group=group, sym=sym, act_order=act_order)
    assert torch.allclose(grid.from_int(q, grid.expand(scales, group, 64), grid.expand(zeros, group, 64)), deq, atol=1e-6)
    q_rtn, s_rtn, z_rtn = grid.rtn(W, 4, group, sym)
    rtn = grid.from_int(q_rtn, grid.expand(s_rtn, group, 64), grid.expand(z_rtn, group, 64))
    gptq_err, rtn_err = ((X @ (deq - W).T) ** 2).mean(), ((X @ (rtn - W).T) ** 2).mean()
    assert gptq_err < 0.8 * rtn_err, (gptq_err, rtn_err)


def test_gptq_on_uncorrelated_inputs_is_rtn():
    """With a diagonal H no error spreads to other columns: GPTQ's integers are RTN's."""
    W, _ = _correlated()
    q, *_ = solvers.gptq(W, torch.diag(torch.rand(64) + 0.5), bits=4, group=-1, sym=False, percdamp=0.0)
    assert torch.equal(q, grid.rtn(W, 4, -1, False)[0])


def test_gptq_holds_pruned_weights_at_zero():
    W, X = _correlated()
    W = solvers.magnitude(W, n=2, m=4)
    q, scales, zeros, deq = solvers.gptq(W, 2 * X.T @ X / 512, bits=4, group=16, sym=False, pruned=W == 0)
    assert torch.equal(deq == 0, W == 0) or bool((deq[W == 0] == 0).all())
    assert _nm_ok(deq, 2, 4)


# ---------------------------------------------------------------- pruning, by hand
def _nm_ok(W, n, m):
    return bool(((W.reshape(W.shape[0], -1, m) == 0).sum(-1) >= n).all())


def test_wanda_scores_weights_by_input_norm_and_magnitude_by_size_alone():
    """W = [1, 2, 3, 4] with input norms^2 [16, 1, 1, 1]: Wanda scores [4, 2, 3, 4] and drops inputs 1 and 2;
    magnitude drops inputs 0 and 1 (Sun et al. 2024, Figure 1)."""
    W = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert solvers.wanda(W, torch.tensor([16.0, 1.0, 1.0, 1.0]), sparsity=0.5).tolist() == [[1.0, 0.0, 0.0, 4.0]]
    assert solvers.magnitude(W, sparsity=0.5).tolist() == [[0.0, 0.0, 3.0, 4.0]]
    assert solvers.wanda(W, torch.tensor([16.0, 1.0, 1.0, 1.0]), n=2, m=4).tolist() == [[1.0, 0.0, 0.0, 4.0]]


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"sparsity": 0.3}, {"n": 2, "m": 4}, {"n": 4, "m": 8}])
def test_pruners_hit_the_sparsity_or_n_m_exactly_and_sparsegpt_beats_magnitude(pattern):
    W, X = _correlated(rows=16, cols=256)
    H = 2 * X.T @ X / X.shape[0]
    pruned = {"magnitude": solvers.magnitude(W, **pattern), "wanda": solvers.wanda(W, (X * X).sum(0), **pattern),
              "sparsegpt": solvers.sparsegpt(W, H, **pattern)}
    for name, P in pruned.items():
        if "n" in pattern:
            assert _nm_ok(P, pattern["n"], pattern["m"]), name
            assert int((P == 0).sum()) == W.numel() * pattern["n"] // pattern["m"], name
        elif name == "wanda":  # per output row
            assert ((P == 0).sum(1) == int(256 * pattern["sparsity"])).all()
        elif name == "magnitude":  # over the layer
            assert int((P == 0).sum()) == int(W.numel() * pattern["sparsity"])
        else:  # per block of 128 columns
            assert int((P == 0).sum()) == 2 * int(16 * 128 * pattern["sparsity"])
    err = {k: float(((X @ (P - W).T) ** 2).mean()) for k, P in pruned.items()}
    assert err["sparsegpt"] < err["magnitude"], err


# ---------------------------------------------------------------- AWQ
def test_awq_never_does_worse_than_rtn_on_its_calibration_inputs():
    """Exponent 0 gives s = 1, which is RTN: the search can only improve on it; with a few loud channels it does."""
    W, X = _correlated()
    X[:, :4] *= 20  # activation outliers, AWQ's premise
    q, scales, zeros, s, a = solvers.awq(W, X.abs().mean(0), X, bits=4, group=16, sym=False)
    deq = grid.from_int(q, grid.expand(scales, 16, 64), grid.expand(zeros, 16, 64)) / s
    q_rtn, s_rtn, z_rtn = grid.rtn(W, 4, 16, False)
    rtn = grid.from_int(q_rtn, grid.expand(s_rtn, 16, 64), grid.expand(z_rtn, 16, 64))
    awq_err, rtn_err = ((X @ (deq - W).T) ** 2).mean(), ((X @ (rtn - W).T) ** 2).mean()
    assert a > 0 and awq_err < rtn_err
    assert float(torch.sqrt(s.max() * s.min())) == pytest.approx(1.0, rel=1e-5)  # AWQ's normalisation


# ---------------------------------------------------------------- SmoothQuant
@pytest.mark.parametrize("k,n", [(384, 1536), (1536, 384), (576, 1536), (1536, 576)])  # MiniLM's and SmolLM2's shapes
def test_smoothing_leaves_the_fp32_output_unchanged_at_real_layer_sizes(k, n):
    """x / s @ (W s)^T = x @ W^T up to fp32 rounding: at most 1e-5 of the output's range, on 2,048 rows with a few
    outlier channels (SmoothQuant's premise), for alpha 0.5 and 0.8."""
    from squeeze.formats.smoothed_int8 import InputScaled

    g = torch.Generator().manual_seed(k + n)
    x = torch.randn(2048, k, generator=g)
    x[:, :6] *= 40
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():
        want = lin(x)
    for alpha in (0.5, 0.8):
        s = solvers.smooth_scales(x.abs().amax(0), lin.weight, alpha)
        smoothed = torch.nn.Linear(k, n)
        with torch.no_grad():
            smoothed.weight.copy_(lin.weight * s)
            smoothed.bias.copy_(lin.bias)
        wrapped = InputScaled(smoothed, k)
        wrapped.input_scale.copy_(s)
        with torch.no_grad():
            got = wrapped(x)
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
        # the outlier channels' range moved into the weights: the smoothed input's max is far smaller
        assert float((x / s).abs().amax(0).max()) < 0.5 * float(x.abs().amax(0).max())


def test_smooth_scales_follow_the_reference_formula():
    """s_j = max|x_j|^a / max_i|W_ij|^(1-a): with max|x| = [4, 1] and max|W| per input = [1, 4], a = 0.5: s = [2, 0.5]."""
    W = torch.tensor([[1.0, -4.0], [0.5, 2.0]])
    assert solvers.smooth_scales(torch.tensor([4.0, 1.0]), W, 0.5).tolist() == [2.0, 0.5]


# ---------------------------------------------------------------- the codec and its runtime
def _layer(bits, group, input_scale):
    lin = torch.nn.Linear(64, 24)
    W = lin.weight.detach()
    s = torch.rand(64) + 0.5 if input_scale else None
    q, scales, zeros = grid.rtn(W * (s if s is not None else 1), bits, group, sym=False)
    return lin, QuantLinear.from_quantized(lin, q, scales, zeros, bits=bits, group_size=group, input_scale=s), q


@pytest.mark.parametrize("bits,group,input_scale", [(4, 16, False), (4, -1, True), (8, 32, False)])
def test_quant_linear_computes_with_its_dequantized_integers(bits, group, input_scale):
    lin, ql, q = _layer(bits, group, input_scale)
    assert torch.equal(ql.int_weight().long(), q.long())
    x = torch.randn(5, 64)
    want = (x / ql.input_scale if input_scale else x) @ ql.dequantized().T + lin.bias
    assert torch.allclose(ql(x), want, atol=1e-6)


@pytest.mark.parametrize("group,K,block", [(128, 512, 128), (32, 64, 32), (-1, 384, 128), (-1, 64, 64), (48, 96, 16)])
def test_matmulnbits_blocks_fit_the_groups(group, K, block):
    assert ort_nbits.block_size(group if group > 0 else K, K) == block


def test_a_group_matmulnbits_cannot_hold_is_refused():
    with pytest.raises(ort_nbits.NotServable, match="multiple of 16"):
        ort_nbits.block_size(24, 96)


CASES = [("tiny-bert", "sentiment"), ("tiny-gpt2", "dialogue"), ("tiny-llama", "dialogue")]
MENU = [(["rtn"], {"rtn": {"bits": 8, "group_size": -1}}), (["gptq"], {"gptq": {"group_size": 32, "act_order": True}}),
        (["awq"], {"awq": {"group_size": 32, "sym": True}}), (["magnitude"], {}), (["wanda"], {"wanda": {"pattern": "2:4"}}),
        (["sparsegpt"], {"sparsegpt": {"sparsity": 0.6}}),
        (["sparsegpt", "gptq"], {"sparsegpt": {"pattern": "2:4"}, "gptq": {"group_size": 32}}),
        (["smoothquant"], {"smoothquant": {"alpha": 0.5}}),
        # fp8 needs a GPU of compute capability >= 8.9; on this CPU, torch's reference kernel (emulate) computes it
        (["fp8"], {"fp8": {"emulate": True}}), (["sparsegpt", "fp8"], {"sparsegpt": {"pattern": "2:4"}, "fp8": {"emulate": True}})]


@pytest.mark.parametrize("preset,task", CASES, ids=[f"{p}-{t}" for p, t in CASES])
def test_the_menu_runs_from_a_baseline_on_each_family_and_reloads_with_parity(tmp_path, preset, task):
    import mlflow

    from squeeze.formats.onnx_int8 import example_batch

    cache = tmp_path / "cache"

    def sweep(technique, params=None):
        post = technique != ["finetune"]
        return tiny_sweep(task, preset, size=80, technique=technique, params=params, epochs=0 if post else 1,
                          max_length=40, num_threads=2, source="x" if post else None)

    base, base_dir, prepared = run_recipe(sweep(["finetune"]), cache, tmp_path / "base")
    if task == "dialogue":  # the latency pass's decode tokens/s: the fp32 model decodes in torch with its cache
        from squeeze.driver.sweep import decode_speed

        metrics, tags = decode_speed(formats.load(base_dir), prepared, sweep(["finetune"]), threads=2)
        assert tags["latency/decode_runtime"] == "torch; key/value cache" and metrics["latency/cpu_decode_tokens_per_s"] > 0
    served_as_pyfunc = set()
    for technique, params in MENU:
        name = "-".join(technique)
        final, folder, _ = run_recipe(sweep(technique, params), cache, tmp_path / name, source=base_dir)
        m = final.metrics
        model = formats.load(folder)
        quantizer = technique[-1] in ("rtn", "gptq", "awq")
        codec = ("weight-only" if quantizer else "smoothed-int8" if technique == ["smoothquant"] else
                 "fp8" if technique[-1] == "fp8" else "torch")
        assert formats.read_format(folder)["codec"] == codec, name
        if technique == ["smoothquant"]:
            assert m["quant/int8_linear"] > 0 and m["quant/float_linear"] == 0
            assert m["size/disk_mb"] < base.metrics["size/disk_mb"]
        assert m["oneshot/layers"] == len(weight_only.quant_layers(model)) if quantizer else m["oneshot/layers"] > 0
        if quantizer:
            assert m["size/disk_mb"] < base.metrics["size/disk_mb"], name
        linears = [mod.dequantized() if isinstance(mod, Fp8Linear) else mod.weight
                   for mod in families.layer_list(model).modules() if isinstance(mod, (torch.nn.Linear, QuantLinear, Fp8Linear))]
        if technique[-1] == "fp8":  # every Linear of the transformer layers, smaller on disk, no CPU speed-up claimed
            assert m["quant/fp8_layers"] == len(linears) == m["oneshot/layers"] and m["size/disk_mb"] < base.metrics["size/disk_mb"]
            assert "no speed-up here" in formats.of(model).serving(model)[1]
        if "sparsegpt" in technique or "wanda" in technique:
            assert linears, name
            pattern = params[technique[0]].get("pattern")
            if pattern:  # the N:M structure survives quantization, save and load
                assert all(_nm_ok(w, 2, 4) for w in linears), name
            else:
                zeros = sum(int((w == 0).sum()) for w in linears) / sum(w.numel() for w in linears)
                assert zeros == pytest.approx(params[technique[0]]["sparsity"], abs=0.01), name
        if codec not in served_as_pyfunc:  # each stored form once: an MLflow Model, predicting on text
            assert mlflow.pyfunc.load_model(folder).predict(["a film"]), name
            served_as_pyfunc.add(codec)
        if task == "sentiment" and quantizer:
            served, line = formats.of(model).serving(model, example_batch(prepared.features["test"][:4], prepared.pad_id))
            assert line == "onnxruntime MatMulNBits (CPU)", line
            batch = example_batch(prepared.features["test"][4:9], prepared.pad_id)
            with torch.no_grad():
                assert torch.allclose(served(**batch).logits, model(**batch).logits, atol=1e-4)
        if task == "dialogue" and quantizer:  # int4/int8 layers decode as MatMulNBits nodes, the cache in the graph
            metrics, tags = decode_speed(model, prepared, sweep(technique, params), threads=2)
            assert tags["latency/decode_runtime"].startswith("onnxruntime MatMulNBits"), tags
            assert metrics["latency/cpu_decode_tokens_per_s"] > 0 and "32 new tokens" in tags["latency/decode_setting"]


def test_folders_saved_by_the_release_before_codecs_still_load_to_the_logits_they_gave():
    """tests/fixtures/release-0.1: dense, torch int8 (BERT and GPT-2 with Conv1D converted), sparse and ONNX Runtime
    int8 folders written by squeeze 0.1's ``serialize.save``, with the logits they gave then (to the last bits of the
    CPU's kernels)."""
    import json
    from pathlib import Path

    root = Path(__file__).parent / "fixtures" / "release-0.1"
    kinds = sorted(p.name for p in root.iterdir())
    assert kinds == ["dense", "gpt2-int8", "int8", "onnx-int8", "sparse"]
    for kind in kinds:
        expected = json.loads((root / kind / "expected_logits.json").read_text())
        ids = torch.tensor(expected["input_ids"])
        model = formats.load(root / kind)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        want = torch.tensor(expected["logits"])
        # the same weights through another CPU's GEMM kernels differ in the last bits (2e-9 of 0.03 on one VM that
        # recorded none): within 1e-5 of the logits' scale; a load that changed any weight moves them by far more
        assert torch.allclose(logits, want, rtol=0, atol=1e-5 * float(want.abs().max())), kind
        assert formats.of(model).name == ("onnx-int8" if kind == "onnx-int8" else "torch")


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_the_calibration_walk_feeds_each_layer_what_the_compressed_layers_before_it_produce(tmp_path, preset):
    """Each layer is compressed (here: its weights scaled by 0.8) after its statistics are gathered; the next layer's
    inputs must then be what a plain forward of the compressed model feeds it. A decoder hands its layers a key/value
    cache that each call appends to: replayed, a compressed layer attended to the keys of its uncompressed replay
    (causal masks align to the first keys), which made GPTQ worse than RTN on SmolLM2 until the walk dropped it."""
    from squeeze import models, quant
    from squeeze.oneshot import calibrate

    tok = models.load_tokenizer(preset, ["a b c d e f g h i j k l m n o p"] * 4, tmp_path)
    model = models.build_model(preset, "AutoModelForCausalLM" if preset != "tiny-bert" else
                               "AutoModelForSequenceClassification", tok, seed=0).eval()
    quant.conv1d_to_linear(model)  # as the techniques do first (checked exact in test_techniques)
    n = model.get_input_embeddings().num_embeddings
    batches = [{"input_ids": torch.randint(0, n, (1, 12), generator=torch.Generator().manual_seed(i))} for i in range(3)]
    names = {id(m): name for name, m in model.named_modules()}
    seen = {}

    def process(index, layer, found):
        for name, (lin, stats) in found.items():
            seen[names[id(lin)]] = stats
            with torch.no_grad():
                lin.weight.mul_(0.8)

    calibrate.walk(model, batches, process, lambda name, lin: calibrate.InputStats(lin.in_features))
    plain = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: plain.setdefault(name, []).append(inp[0]))
             for name, m in model.named_modules() if name in seen]
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in hooks:
        h.remove()
    assert len(seen) == len(plain) > 0
    # the layers' first Linears read the layer's input (through a norm); within a layer all statistics are gathered
    # before any of its Linears is compressed, as in the reference codes, so later ones (o_proj) read uncompressed q/v
    first = [name for name in seen if name.rsplit(".", 1)[-1] in ("q_proj", "query", "c_attn")]
    assert len(first) == 4
    for name, stats in ((n, seen[n]) for n in first):
        xs = torch.cat([x.reshape(-1, x.shape[-1]) for x in plain[name]])
        assert torch.allclose(stats.xtx, xs.T @ xs, rtol=1e-4, atol=1e-4), name


def test_a_technique_that_finds_no_linear_layer_refuses_instead_of_passing_the_model_through():
    """A pruner or quantizer run on a model another quantizer already converted would find no nn.Linear layer; the
    config refuses such an order before Ray starts, and the technique itself refuses too (a model family whose layers
    hold none), rather than returning the model unchanged under its own name."""
    import transformers

    from squeeze.registry import get_technique_class

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=2, intermediate_size=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    batches = [{"input_ids": torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(i))} for i in range(4)]
    rtn = get_technique_class("rtn")(None)
    model = rtn.compress(model, [])
    assert rtn.info["oneshot/layers"] == 14 and not any(type(m) is torch.nn.Linear for m in families.layer_list(model).modules())
    for name in ("wanda", "gptq", "magnitude"):
        with pytest.raises(ValueError, match=f"{name}: the model's transformer layers hold no nn.Linear layer"):
            get_technique_class(name)(None).compress(model, batches)
