"""Decoding on ONNX Runtime with the key/value cache (``squeeze.formats.ort_decode``): the step graph gives the model's
own logits at every position of sequences longer than the one it was traced on, fp32 and int4 (MatMulNBits holding the
weight-only layers' integers), greedy decoding matches torch's ``generate``, and a graph that does not give the model's
logits is refused. Tiny models built from configs (Llama and GPT-2 shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from squeeze.formats import ort_decode
from squeeze.formats.ort_nbits import NotServable
from squeeze.formats.weight_only import quant_layers
from squeeze.registry import get_technique_class


def _llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()


def _gpt2(seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=128)).eval()


def _int4(model):
    rtn = get_technique_class("rtn")(None)
    rtn.p = rtn.Params(bits=4, group_size=32)
    return rtn.compress(model, [])


def _full_logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokens])).logits[0].numpy()


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_the_step_graph_gives_the_models_logits_at_every_position_past_the_traced_length(build):
    model = build()
    decoder = ort_decode.serve(model, threads=1)
    assert decoder.nbits == 0
    tokens = torch.randint(0, 300, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    got, want = decoder.logits(tokens), _full_logits(model, tokens)
    assert got.shape == want.shape == (40, 300)
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_int4_layers_run_as_matmulnbits_and_decode_as_the_torch_weight_only_model(build):
    model = _int4(build())
    layers = quant_layers(model)
    assert layers, "RTN left no weight-only layer"
    decoder = ort_decode.serve(model, threads=1)
    assert decoder.nbits == len(layers)  # every weight-only layer's MatMul became a MatMulNBits node
    tokens = torch.randint(0, 300, (30,), generator=torch.Generator().manual_seed(2)).tolist()
    want = _full_logits(model, tokens)
    assert np.abs(decoder.logits(tokens) - want).max() < 1e-3 * max(1.0, np.abs(want).max())
    fp32 = ort_decode.serve(build(), threads=1)  # the same model before quantization decodes differently
    assert np.abs(fp32.logits(tokens) - want).max() > 1e-3

    prompt = tokens[:6]
    out, seconds = decoder.generate(prompt, 12)
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                             pad_token_id=0)
    assert out == ref[0, len(prompt):].tolist()
    assert len(out) == 12 and seconds > 0


def test_a_graph_that_does_not_give_the_models_logits_is_refused():
    decoder = ort_decode.serve(_llama(seed=0), threads=1)
    with pytest.raises(NotServable, match="logits differ"):
        ort_decode._check(decoder, _llama(seed=1), torch.randint(0, 300, (1, 8)), "the torch model's")
    with pytest.raises(ValueError, match="non-empty prompt"):
        decoder.generate([], 3)
