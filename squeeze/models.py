"""Models and tokenizers: hub names, local directories, and the offline presets of ``squeeze.presets``."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path
from typing import Iterable

import torch
import transformers

from squeeze import vocab
from squeeze.checksum import verify_manifest, write_manifest
from squeeze.presets import TINY, minilm_path, resolve_source  # noqa: F401  (re-exported: the preset API)


def tiny_tokenizer_dir(name: str, texts: Iterable[str], cache_dir: str | Path, vocab_size: int = 2000) -> Path:
    """The folder of a tiny preset's tokenizer built from ``texts`` (cached by their digest)."""
    texts = list(texts)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "tokenizers" / f"{name}-{vocab_size}-{digest}-v2"  # v2: deterministic vocab
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(str(out) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not verify_manifest(out):  # not built yet, or corrupt since: build it (again)
            shutil.rmtree(out, ignore_errors=True)
            vocab.build(TINY[name]["tokenizer"], texts, out, vocab_size)
            write_manifest(out)
    return out


def load_tokenizer(name: str, texts: Iterable[str], cache_dir: str | Path, vocab_size: int = 2000):
    """The tokenizer of a model: built and cached for tiny presets, else ``AutoTokenizer``."""
    if name not in TINY:
        return transformers.AutoTokenizer.from_pretrained(resolve_source(name))
    return transformers.AutoTokenizer.from_pretrained(tiny_tokenizer_dir(name, texts, cache_dir, vocab_size))


def build_model(name: str, auto_class: str, tokenizer, *, seed: int, labels: list[str] | None = None):
    """Instantiate the task model: random init for tiny presets (seeded), pre-trained otherwise.

    ``model.squeeze_fresh`` lists the weights the pre-trained checkpoint did not hold (a new task head,
    an LM head a package left out); empty for a tiny preset, which has nothing pre-trained to protect.
    """
    cls = getattr(transformers, auto_class)
    label_kw = {}
    if labels is not None:
        label_kw = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(seed)
    if name in TINY:
        spec = TINY[name]
        config = transformers.AutoConfig.for_model(spec["type"], vocab_size=len(tokenizer), **spec["config"], **label_kw)
        if spec["tokenizer"] == "gpt2":  # decoders: their tokenizer's end of text opens and closes a sequence
            config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id  # before building: RoBERTa's positions skip its padding index
        model = cls.from_config(config)
        model.squeeze_fresh = []
    else:
        model, info = cls.from_pretrained(resolve_source(name), output_loading_info=True, **label_kw)
        model.squeeze_fresh = sorted(info["missing_keys"])
    return fit_embeddings(model, tokenizer)


def fit_embeddings(model, tokenizer):
    """Grow the embeddings for tokens the task added (speaker tokens) and set the pad id."""
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def from_source(directory: str | Path, auto_class: str, tokenizer, *, seed: int, labels: list[str] | None = None,
                pretrained: str | None = None):
    """The model a trial starts from when its sweep has a source: the source trial's saved model.

    With the same head it continues as it is (a fine-tuned baseline for DQ, a pruned model for IMP). With
    another head (a pruned MLM feeding a classifier) the model is the pre-trained ``pretrained`` model with
    that head, initialised as a baseline's is (same seed), and every weight the source holds is taken from
    the source; what the source lacks (BERT's pooler: an MLM has none) stays pre-trained, as in every other
    technique's model. ``model.squeeze_init`` counts the tensors taken from each.
    """
    from squeeze import formats

    source = formats.load(directory)
    if formats.read_format(directory)["auto_class"] == auto_class:
        model = fit_embeddings(source, tokenizer).train()
        model.squeeze_init = {"init/from_source": len(model.state_dict()), "init/from_pretrained": 0}
        return model
    model = build_model(pretrained or str(directory), auto_class, tokenizer, seed=seed, labels=labels)
    theirs, ours = source.state_dict(), model.state_dict()
    taken = {}
    for k, v in theirs.items():
        if k in ours and ours[k].shape[1:] == v.shape[1:] and ours[k].ndim == v.ndim:
            rows = min(len(v), len(ours[k])) if v.ndim else None  # embeddings grown for added tokens keep the new rows
            taken[k] = v if rows is None or rows == len(ours[k]) else torch.cat([v[:rows], ours[k][rows:]])
    model.load_state_dict(taken, strict=False)
    model.squeeze_init = {"init/from_source": len(taken), "init/from_pretrained": len(ours) - len(taken)}
    return model.train()
