"""Greedy decoding at batch 1 in torch, timed per token: the decoder a causal LM's codec returns where no other runtime
serves it (``Codec.decoder``; ``ort_decode`` is the ONNX Runtime one). Both answer ``generate(prompt, new_tokens) ->
(tokens, seconds after the prompt)``, always exactly ``new_tokens`` tokens (no stop at an end token: a timing)."""

from __future__ import annotations

import inspect
import time

import torch


def cache_arg(model: torch.nn.Module) -> str:
    """The forward argument that takes the cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out):
    """The cache a forward returned, under either name."""
    return out.get("cache", None) if "cache" in out else out.get("past_key_values", None)


class TorchDecoder:
    """The model's own forward with its key/value cache, one token per step."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    def generate(self, prompt: list[int], new_tokens: int) -> tuple[list[int], float]:
        if not prompt or new_tokens < 1:
            raise ValueError("generate needs a non-empty prompt and at least one new token")
        device, arg = next(self.model.parameters()).device, cache_arg(self.model)
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
            tokens = [int(out.logits[0, -1].argmax())]
            t0 = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = self.model(input_ids=torch.tensor([[tokens[-1]]], device=device), use_cache=True,
                                 **{arg: cache_of(out)})
                tokens.append(int(out.logits[0, -1].argmax()))
        return tokens, time.perf_counter() - t0
