"""Persona dialogue with GPT-2 in the TransferTransfo style (Wolf et al. 2019).

Input: ``<bos> persona <speaker1> u1 <speaker2> u2 ... <speaker2> reply <eos>``, with
token_type_ids naming the speaker of each segment and the LM loss on the reply only.
Metrics: perplexity of the reply per word (``word_ppl``: the primary, comparable across tokenizers) and
per token (``ppl``), Hits@1/5/10 by ranking the candidate replies by their mean log-likelihood, BLEU and
TER (a fraction, the paper's scale) of generated replies, BERTScore when a scorer model is configured.
The context that prompts generation and ranking has a fixed token budget (half of ``max_length``), so it
never depends on the gold reply's length. Perplexities are computed at every evaluation; ranking and
generation (20 forward passes per turn, and decoding) only for the final model's test set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from squeeze import metrics
from pathlib import Path

from squeeze.data import chat, dailydialog, synthetic
from squeeze.data.errors import DataError
from squeeze.tasks.base import MODEL_KEYS, Task, batches, collate, to_device

SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                  "additional_special_tokens": ["<speaker1>", "<speaker2>"]}


class DialogueTask(Task):
    data_options = ('distractors', 'dialogue_column', 'turn_column', 'speaker_column', 'text_column')
    uses_eval = True
    needs_decoder = True
    name = "dialogue"
    auto_class = "AutoModelForCausalLM"
    metrics = {"word_ppl": "min", "ppl": "min", "hits_at_1": "max", "hits_at_5": "max", "hits_at_10": "max", "bleu": "max", "ter": "min",
               "bertscore_f1": "max"}
    formats = ("parlai", "dailydialog", "chat", "turns")
    default_split = (0.99, 0.005, 0.005)
    synthetic = staticmethod(synthetic.dialogue)
    # the paper's Table 4 column -> ours; the first ranks the techniques in the comparison
    paper_metrics = {"hits_at_1": "hits_at_1", "hits_at_5": "hits_at_5", "hits_at_10": "hits_at_10", "bleu": "bleu",
                     "ter": "ter", "bertscore": "bertscore_f1"}
    paper_task = "sentence generation"
    pkd_positions = "reply"
    lm_scored = True

    def sniff_format(self, path):
        """JSON with a ``messages`` list: chat; other tables: one utterance per row; text: DailyDialog or ParlAI."""
        suffix = Path(path).suffix.lower()
        if suffix in (".json", ".jsonl"):
            return "chat" if chat.has_messages(path) else "turns"
        if suffix in (".csv", ".tsv", ".parquet"):
            return "turns"
        return "dailydialog" if dailydialog.looks_like(path) else "parlai"

    def from_hub(self, ds, data):
        cols = set(ds.column_names)
        if not {"personality", "history", "candidates"} <= cols:
            raise DataError(data.name, f"expected columns personality, history, candidates; got {sorted(cols)}")
        return [{"persona": r["personality"], "history": r["history"], "reply": r["candidates"][-1],
                 "candidates": r["candidates"], "dialog": r.get("conv_id", i)} for i, r in enumerate(ds)]

    def texts(self, examples):
        for ex in examples:
            yield " ".join(ex["persona"] + ex["history"] + [ex["reply"]])

    def split_summary(self, examples):
        return {"turns with candidates": sum(1 for ex in examples if ex.get("candidates"))}

    def labels(self, splits):
        if not any(ex["candidates"] for ex in splits["test"]):
            raise DataError("test", "no turn has candidate replies, so Hits@k cannot be measured; set data.distractors "
                                    "above 0 (replies drawn from other dialogues, as ConvAI2 built its candidates)")
        return None

    def prepare_tokenizer(self, tokenizer):
        tokenizer.add_special_tokens(SPECIAL_TOKENS)
        return tokenizer

    def _ids(self, tokenizer, text):
        return tokenizer(" " + text, add_special_tokens=False)["input_ids"]

    def _context(self, tokenizer, ex, budget):
        """Context ids and types ending in ``<speaker2>``, within ``budget`` tokens, filled by priority: the partner's
        last utterance (the one being answered; its most recent tokens if it alone is too long), then the persona
        (its first sentences), then older turns, newest first. The layout stays TransferTransfo's:
        ``<bos> persona <speaker?> older turns ... <speaker1> last utterance <speaker2>``."""
        s1, s2 = tokenizer.convert_tokens_to_ids(["<speaker1>", "<speaker2>"])
        room = budget - 2  # <bos> and the closing <speaker2>
        turns = []  # newest first
        for back, utt in enumerate(reversed(ex["history"])):
            spk = s1 if back % 2 == 0 else s2
            turns.append(([spk] + self._ids(tokenizer, utt), spk))
        kept = []
        if turns and room > 0:
            last, spk = turns[0]
            last = last if len(last) <= room else [spk] + last[len(last) - room + 1:]
            kept.append((last, spk))
            room -= len(last)
        persona = [t for p in ex["persona"] for t in self._ids(tokenizer, p)][: max(room, 0)]
        room -= len(persona)
        for t, spk in turns[1:]:
            if len(t) > room:
                break
            kept.append((t, spk))
            room -= len(t)
        ids = [tokenizer.bos_token_id] + persona
        types = [s2] * len(ids)
        for t, spk in reversed(kept):
            ids += t
            types += [spk] * len(t)
        return ids + [s2], types + [s2]

    @staticmethod
    def _reply(tokenizer, reply, max_length):
        """The scored reply: its ids and ``<eos>``, at most half of ``max_length``."""
        return (reply + [tokenizer.eos_token_id])[: max_length // 2]

    def _join(self, tokenizer, ctx, reply, max_length):
        s2 = tokenizer.convert_tokens_to_ids("<speaker2>")
        reply = self._reply(tokenizer, reply, max_length)
        ids, types = ctx
        ids, types = ids[-(max_length - len(reply)):], types[-(max_length - len(reply)):]
        return {"input_ids": ids + reply, "token_type_ids": types + [s2] * len(reply),
                "attention_mask": [1] * (len(ids) + len(reply)), "labels": [-100] * len(ids) + reply}

    def encode(self, examples, tokenizer, labels, max_length):
        out = []
        for ex in examples:
            reply = self._ids(tokenizer, ex["reply"])
            ctx = self._context(tokenizer, ex, max_length - min(len(reply) + 1, max_length // 2))
            feat = self._join(tokenizer, ctx, reply, max_length)
            feat["n_words"] = scored_words(tokenizer, feat["labels"])
            feat["context"] = self._context(tokenizer, ex, max_length - max_length // 2)  # prompt: fixed budget
            feat["candidates"] = [self._ids(tokenizer, c) for c in ex["candidates"]]
            feat["gold"] = ex["candidates"].index(ex["reply"]) if ex["candidates"] else -1
            out.append(feat)
        return out

    @staticmethod
    def _token_nll(model, batch):
        """Per-sequence summed NLL and token counts over the labelled (reply) positions."""
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        logits = model(**inputs).logits[:, :-1]  # token types only where the family takes them (not Llama)
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100, reduction="none")
        mask = labels != -100
        return (nll * mask).sum(1), mask.sum(1)

    def _rank(self, model, tokenizer, features, limit, device, max_length):
        scores, gold, chance = [], [], []
        for f in [f for f in features if f["gold"] >= 0][: limit or None]:
            scores.append(self._candidate_scores(model, tokenizer, f, device, max_length))
            gold.append(f["gold"])
            chance.append(1 / len(f["candidates"]))
        if not gold:
            return {}
        return {**metrics.hits_at_k(scores, gold), "chance_hits_at_1": sum(chance) / len(chance), "n": float(len(gold))}

    def _candidate_scores(self, model, tokenizer, f, device, max_length):
        """Mean log-likelihood of each candidate reply after the turn's prompt. The prompt is shared, so it runs once
        and its key/value cache is repeated for the candidates (about 4x fewer tokens than 20 whole sequences at
        ConvAI2's lengths); the same scores as :meth:`_joined_scores`, which is used where the cache cannot be
        (a prompt that the longest candidate would truncate, a model that returns no cache)."""
        ctx_ids, ctx_types = f["context"]
        cands = [self._reply(tokenizer, c, max_length) for c in f["candidates"]]
        if len(ctx_ids) + max(len(c) for c in cands) > max_length:
            return self._joined_scores(model, tokenizer, f, device, max_length)
        types = "token_type_ids" in f
        s2 = tokenizer.convert_tokens_to_ids("<speaker2>")
        ids = torch.tensor([ctx_ids], device=device)
        extra = {"token_type_ids": torch.tensor([ctx_types], device=device)} if types else {}
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **extra)
        cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return self._joined_scores(model, tokenizer, f, device, max_length)
        n = len(cands)
        batch = to_device(collate([{"input_ids": c, "attention_mask": [1] * len(c), "token_type_ids": [s2] * len(c)}
                                   for c in cands], tokenizer.pad_token_id,
                                  ("input_ids", "attention_mask") + (("token_type_ids",) if types else ())), device)
        cand, mask = batch["input_ids"], batch.pop("attention_mask")
        cache.batch_repeat_interleave(n)
        attention = torch.cat([torch.ones((n, len(ctx_ids)), dtype=torch.long, device=device), mask], 1)
        logits = model(**batch, attention_mask=attention, past_key_values=cache).logits
        logits = torch.cat([out.logits[:, -1:].expand(n, 1, -1), logits[:, :-1]], 1)  # position t predicts token t
        nll = F.cross_entropy(logits.transpose(1, 2).float(), cand, reduction="none")
        return (-(nll * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()

    def _joined_scores(self, model, tokenizer, f, device, max_length):
        cands = [self._join(tokenizer, f["context"], c, max_length) for c in f["candidates"]]
        keys = [k for k in MODEL_KEYS if k in f]
        nll, n = self._token_nll(model, to_device(collate(cands, tokenizer.pad_token_id, keys), device))
        return (-nll / n.clamp(min=1)).tolist()

    def _generate(self, model, tokenizer, features, eval_cfg, device):
        hyps = []
        for f in features:
            ids = torch.tensor([f["context"][0]], device=device)
            types = {"token_type_ids": torch.tensor([f["context"][1]], device=device)} if "token_type_ids" in f else {}
            out = model.generate(input_ids=ids, **types, attention_mask=torch.ones_like(ids), max_new_tokens=eval_cfg.max_new_tokens,
                                 num_beams=eval_cfg.num_beams, do_sample=eval_cfg.do_sample,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            hyps.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
        return hyps

    @torch.no_grad()
    def predict(self, model, tokenizer, texts, max_new_tokens: int = 24):
        """A reply to each conversation: its turns one per line, the last one the partner's."""
        model.eval()
        types = "token_type_ids" in getattr(model, "forward").__code__.co_varnames
        out = []
        for text in texts:
            ex = {"persona": [], "history": [t for t in text.splitlines() if t.strip()] or [text]}
            ids, token_types = self._context(tokenizer, ex, 256)
            ids_t = torch.tensor([ids])
            kw = {"token_type_ids": torch.tensor([token_types])} if types else {}
            gen = model.generate(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **kw)
            out.append(tokenizer.decode(gen[0, ids_t.shape[1]:], skip_special_tokens=True).strip())
        return out

    @torch.no_grad()
    def evaluate(self, model, features, examples, *, tokenizer, labels, batch_size, device, eval_cfg=None, final=False):
        model.eval()
        nll_sum, n_tok = 0.0, 0
        for chunk in batches(features, batch_size):
            nll, n = self._token_nll(model, to_device(collate(chunk, tokenizer.pad_token_id), device))
            nll_sum, n_tok = nll_sum + float(nll.sum()), n_tok + int(n.sum())
        max_length = max(len(f["input_ids"]) for f in features) + 64
        n_words = sum(f["n_words"] for f in features)
        scores = {"word_ppl": metrics.perplexity(nll_sum, n_words), "ppl": metrics.perplexity(nll_sum, n_tok),
                  "nll": nll_sum / max(n_tok, 1)}
        if final:  # ranking 20 candidates per turn costs 20 forward passes: once, on the final model's test set
            scores.update(self._rank(model, tokenizer, features, eval_cfg.max_rank if eval_cfg else 0, device, max_length))
        rows = [{"context": " | ".join(ex["history"]), "reply": ex["reply"]} for ex in examples]
        if final and eval_cfg is not None and eval_cfg.max_generate >= 0:
            n_gen = eval_cfg.max_generate or len(features)
            hyps = self._generate(model, tokenizer, features[:n_gen], eval_cfg, device)
            refs = [ex["reply"] for ex in examples[:n_gen]]
            scores.update(metrics.generation(hyps, refs))
            if eval_cfg.bertscore_model:
                from squeeze.presets import resolve_source  # a preset name (minilm) or a model folder

                scores.update(metrics.bertscore(hyps, refs, resolve_source(eval_cfg.bertscore_model),
                                                eval_cfg.bertscore_layers))
            for row, hyp in zip(rows, hyps):
                row["prediction"] = hyp
        return scores, rows


def scored_words(tokenizer, labels: list[int]) -> int:
    """Words in the scored span of a feature (its decoded text split on white space), its end-of-sequence token
    counting as one, as WikiText's word-level perplexity counts <eos>: the denominator of a per-word perplexity
    that two tokenizers of the same text share."""
    ids = [t for t in labels if t != -100]
    eos = sum(t == tokenizer.eos_token_id for t in ids)
    return len(tokenizer.decode([t for t in ids if t != tokenizer.eos_token_id], skip_special_tokens=True).split()) + eos
