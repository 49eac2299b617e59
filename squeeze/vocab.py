"""Tokenizers of the offline tiny presets, built from the sweep's own training text, deterministically.

- ``bert`` (``tiny-bert``): a WordPiece tokenizer with BERT's normalizer (lower case) and
  pre-tokenizer; its vocabulary is the special tokens, every character (as a word start and as a
  ``##`` continuation, so no word is ever unknown) and then the most frequent words, ties broken
  alphabetically. ``tokenizers``' WordPiece trainer is not used: it breaks ties in an order that
  changes from run to run (measured: two runs on the same text gave different vocabularies), so two
  runs of the same study would not see the same tokens.
- ``gpt2`` (``tiny-gpt2``): a byte-level BPE trained with ``tokenizers`` (the same merges on every
  run of the same text, checked by a test).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

SPECIAL = {"bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "gpt2": ["<|endoftext|>"]}


def _wordpiece(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIAL["bert"] + chars + [f"##{c}" for c in chars]
    seen = set(vocab)
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab.index("[SEP]")), ("[CLS]", vocab.index("[CLS]")))
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    return tok, dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _byte_bpe(texts: list[str], vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL["gpt2"],
                            show_progress=False)
    return tok._tokenizer, dict(unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def build(kind: str, texts: list[str], out: Path, vocab_size: int) -> None:
    """Write a ``PreTrainedTokenizerFast`` folder for a tiny preset of family ``kind`` to ``out``."""
    import transformers

    tok, names = (_wordpiece if kind == "bert" else _byte_bpe)(texts, vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **names).save_pretrained(out)
