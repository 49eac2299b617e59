"""Every data format loads; malformed files name the file and line; splits are sane."""

from __future__ import annotations

import json

import pytest

from squeeze.config import DataCfg
from squeeze.data import load_splits, split_pool, synthetic
from squeeze.data.conll import iob1_to_iob2, read_conll
from squeeze.data.errors import DataError
from squeeze.data.parlai import read_parlai
from squeeze.data.tabular import read_labelled


def read_csv(path, text_column="text", label_column="label"):
    return read_labelled(path, DataCfg(format="csv", text_column=text_column, label_column=label_column))


def read_jsonl(path, text_column="text", label_column="label"):
    return read_labelled(path, DataCfg(format="jsonl", text_column=text_column, label_column=label_column))
from squeeze.data.text import read_text
from squeeze.tasks.ner import NerTask
from squeeze.tasks.sentiment import SentimentTask


@pytest.mark.parametrize("tags,expected", [
    (["I-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"]),
    (["I-PER", "I-LOC"], ["B-PER", "B-LOC"]),                   # type change starts a new entity
    (["I-ORG", "B-ORG", "I-ORG"], ["B-ORG", "B-ORG", "I-ORG"]),  # IOB1 B- separates same-type entities
    (["O", "I-MISC", "O", "I-MISC"], ["O", "B-MISC", "O", "B-MISC"]),
    (["B-PER", "I-PER"], ["B-PER", "I-PER"]),                   # IOB2 stays as it is
])
def test_iob1_to_iob2(tags, expected):
    assert iob1_to_iob2(tags) == expected


def test_conll_iob1_file_is_converted(tmp_path):
    p = tmp_path / "eng.train"
    p.write_text("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n\n"
                 "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n")
    s = read_conll(p)
    assert s == [{"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]},
                 {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}]


def test_conll_tab_separated_and_tag_column(tmp_path):
    p = tmp_path / "x.conll"
    p.write_text("Paris\tB-LOC\tNNP\nis\tO\tVBZ\n")
    assert read_conll(p, tag_column=1) == [{"tokens": ["Paris", "is"], "tags": ["B-LOC", "O"]}]


def test_csv_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"good, fun film",1\nbad film,0\n')
    assert read_csv(tmp_path / "a.csv") == [{"text": "good, fun film", "label": "1"}, {"text": "bad film", "label": "0"}]
    (tmp_path / "a.jsonl").write_text(json.dumps({"review": "ok", "y": "pos"}) + "\n\n")
    assert read_jsonl(tmp_path / "a.jsonl", "review", "y") == [{"text": "ok", "label": "pos"}]


def test_parlai_convai2(tmp_path):
    p = tmp_path / "valid.txt"
    p.write_text("1 your persona: i like cats.\n2 hi there\thello !\t\tbye|hello !\n3 how are you ?\tfine .\t\tfine .|no\n"
                 "1 your persona: i am tall.\n2 hey\tyo\t\tyo|x\n")
    ex = read_parlai(p)
    assert len(ex) == 3
    assert ex[1] == {"persona": ["i like cats."], "history": ["hi there", "hello !", "how are you ?"], "reply": "fine .",
                     "candidates": ["fine .", "no"], "dialog": 0}
    assert ex[2]["persona"] == ["i am tall."] and ex[2]["history"] == ["hey"] and ex[2]["dialog"] == 1


def test_text(tmp_path):
    (tmp_path / "wiki.txt").write_text(" = T = \n\n a line . \n")
    assert read_text(tmp_path / "wiki.txt") == [{"text": "= T ="}, {"text": "a line ."}]


@pytest.mark.parametrize("name,content,reader,line", [
    ("bad.csv", 'text,label\nfine,1\n"unclosed,0\n', read_csv, None),
    ("bad2.csv", "text,label\nonly-one-field\n", read_csv, 2),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": \n', read_jsonl, 2),
    ("nolabel.jsonl", '{"text": "a"}\n', read_jsonl, None),  # a missing column is the file's: "no column 'label'"
    ("onelabel.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', read_jsonl, 2),
    ("bad.conll", "EU B-ORG\nrejects\n", read_conll, 2),
    ("badtag.conll", "EU ORG\n", read_conll, 1),
    ("bad.txt", "1 your persona: x\nhello\tworld\n", read_parlai, 2),
    ("nolabel.txt", "1 hi\t\t\ta|b\n", read_parlai, 1),
])
def test_malformed_files_name_file_and_line(tmp_path, name, content, reader, line):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError) as err:
        reader(p)
    assert name in str(err.value)
    if line is not None:
        assert f"{name}:{line}:" in str(err.value)


def test_a_file_in_another_encoding_is_named_with_its_encoding_and_read_with_data_encoding(tmp_path):
    p = tmp_path / "reviews.csv"
    p.write_bytes("text,label\nun café très réussi,pos\nune soirée ratée,neg\n".encode("cp1252"))
    cfg = DataCfg(source="files", files=[str(p)], split=[0.5, 0.25, 0.25])
    with pytest.raises(DataError, match=r"reviews.csv: not UTF-8 text .* set data.encoding"):
        load_splits("sentiment", cfg)
    cfg.encoding = "cp1252"
    more = tmp_path / "more.csv"  # the same file twice would be two copies of each review: too few to split in three
    more.write_bytes("text,label\nun thé réussi,pos\nune matinée ratée,neg\n".encode("cp1252"))
    rows = [e for part in load_splits("sentiment", DataCfg(source="files", files=[str(p), str(more)], encoding="cp1252",
                                                           split=[0.5, 0.25, 0.25])).splits.values() for e in part]
    assert {"un café très réussi", "une soirée ratée", "un thé réussi", "une matinée ratée"} == {e["text"] for e in rows}
    t = tmp_path / "latin.txt"
    t.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt: not UTF-8 text .*data.encoding"):
        load_splits("lm", DataCfg(source="files", files=[str(t)] * 3))


def test_splits_deterministic_disjoint_and_sized():
    pool = [{"text": str(i), "label": "a"} for i in range(200)]
    a, b = split_pool(pool, (0.5, 0.25, 0.25), seed=3), split_pool(pool, (0.5, 0.25, 0.25), seed=3)
    assert a == b
    assert [len(a[s]) for s in ("train", "dev", "test")] == [100, 50, 50]
    ids = [set(ex["text"] for ex in a[s]) for s in ("train", "dev", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert split_pool(pool, (0.5, 0.25, 0.25), seed=4) != a


def test_copies_of_one_input_stay_in_one_split_and_a_pool_without_copies_splits_as_before():
    """CoNLL-2003 pooled held the same sentence many times ("-DOCSTART-", score rows): split one by one, copies crossed
    from train into test. Copies (same input, any label) now go together; unique examples keep the old placement."""
    import random

    unique = [{"tokens": ["w", str(i)], "tags": ["O", "O"]} for i in range(120)]
    old = list(range(120))
    random.Random(7).shuffle(old)
    got = split_pool(unique, (0.5, 0.25, 0.25), seed=7)
    assert [ex["tokens"][1] for ex in got["train"]] == [str(k) for k in old[:60]]      # as before the change
    copies = [{"tokens": ["Division", "1", str(i % 3)], "tags": ["O", "O", "B-MISC" if i % 2 else "O"]} for i in range(30)]
    pool = unique + copies
    for seed in range(5):
        parts = split_pool(pool, (0.5, 0.25, 0.25), seed=seed)
        keys = [{tuple(ex["tokens"]) for ex in parts[s]} for s in ("train", "dev", "test")]
        assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2]), seed
        assert sum(len(p) for p in parts.values()) == 150                               # nothing dropped


def test_dialogue_split_keeps_dialogues_together():
    bundle = load_splits("dialogue", DataCfg(size=300, split=(0.8, 0.1, 0.1)))
    dialogs = [{ex["dialog"] for ex in bundle.splits[s]} for s in ("train", "dev", "test")]
    assert not (dialogs[0] & dialogs[1] or dialogs[0] & dialogs[2] or dialogs[1] & dialogs[2])
    assert bundle.sizes == {"train": 240, "dev": 30, "test": 30}


def test_a_limited_dialogue_split_samples_turns_across_dialogues_not_the_first_few_dialogues(tmp_path):
    """limit_eval: 60 of a ConvAI2 split took 4 whole dialogues (dev perplexity 1.9x test's in the repro); the turns are
    now a seeded sample across the split. A shuffled sentiment split still keeps its first n."""
    import json

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user" if k % 2 == 0 else "assistant",
                                                       "content": f"dialogue {d} says thing {k}"} for k in range(7)]}) + "\n"
                             for d in range(80)))
    cfg = dict(source="files", files=[str(chats)], split=(0.5, 0.25, 0.25), distractors=3)
    full = load_splits("dialogue", DataCfg(**cfg))
    cut = load_splits("dialogue", DataCfg(**cfg, limit_train=40, limit_eval=20))
    per_dialog = len(full.splits["test"]) / len({ex["dialog"] for ex in full.splits["test"]})
    for s, n in (("train", 40), ("dev", 20), ("test", 20)):
        got = cut.splits[s]
        assert len(got) == n and all(ex in full.splits[s] for ex in got)
        assert len({ex["dialog"] for ex in got}) > n / per_dialog + 3, s        # first-n would hold ~n / per_dialog
    again = load_splits("dialogue", DataCfg(**cfg, limit_train=40, limit_eval=20))
    assert again.splits == cut.splits
    plain = load_splits("sentiment", DataCfg(size=200, split=(0.5, 0.25, 0.25), limit_eval=10))
    whole = load_splits("sentiment", DataCfg(size=200, split=(0.5, 0.25, 0.25)))
    assert plain.splits["test"] == whole.splits["test"][:10]


def test_synthetic_is_deterministic_and_named():
    assert synthetic.sentiment(50, seed=1) == synthetic.sentiment(50, seed=1)
    assert synthetic.sentiment(50, seed=1) != synthetic.sentiment(50, seed=2)
    bundle = load_splits("ner", DataCfg(size=100, split=(0.7, 0.15, 0.15)))
    assert bundle.name == "synthetic-ner"
    assert all(t == "O" or t[:2] in ("B-", "I-") for ex in bundle.splits["train"] for t in ex["tags"])


def test_files_source_with_own_splits(tmp_path):
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    cfg = DataCfg(source="files", train=str(tmp_path / "train.csv"), dev=str(tmp_path / "dev.csv"), test=str(tmp_path / "test.csv"))
    bundle = load_splits("sentiment", cfg)
    assert bundle.sizes == {"train": 2, "dev": 2, "test": 2}


def test_label_sets_must_match_between_splits():
    splits = {"train": [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}],
              "dev": [{"text": "c", "label": "neutral"}], "test": [{"text": "d", "label": "pos"}]}
    with pytest.raises(DataError, match="neutral"):
        SentimentTask().labels(splits)
    ner = {"train": [{"tokens": ["a"], "tags": ["B-PER"]}], "dev": [{"tokens": ["b"], "tags": ["B-LOC"]}], "test": []}
    assert NerTask().labels(ner) == ["B-PER", "B-LOC"]  # a tag train lacks is a warning: its entities count as missed


def test_hub_source_offline_gives_clear_error():
    cfg = DataCfg(source="hub", name="squeeze-test/does-not-exist")
    with pytest.raises(DataError, match="squeeze-test/does-not-exist: could not load from the Hugging Face hub"):
        load_splits("sentiment", cfg)


def test_lines_one_file_per_label(tmp_path):
    """Rotten Tomatoes layout: rt-polarity.pos / rt-polarity.neg, label from the extension or declared."""
    (tmp_path / "rt.pos").write_text("a fine film .\n\nwarm and witty .\n")
    (tmp_path / "rt.neg").write_text("a dull mess .\n")
    cfg = DataCfg(source="files", format="lines", files=[str(tmp_path / "rt.pos"), str(tmp_path / "rt.neg")],
                  split=[0.34, 0.33, 0.33])
    pool = [ex for part in load_splits("sentiment", cfg).splits.values() for ex in part]
    assert sorted((ex["label"], ex["text"]) for ex in pool) == [
        ("neg", "a dull mess ."), ("pos", "a fine film ."), ("pos", "warm and witty .")]
    named = cfg.model_copy(update={"labels": ["good", "bad"]})
    assert {ex["label"] for part in load_splits("sentiment", named).splits.values() for ex in part} == {"good", "bad"}
    (tmp_path / "noext").write_text("text\n")
    with pytest.raises(DataError, match="noext.*needs a label per file"):
        load_splits("sentiment", DataCfg(source="files", format="lines", files=[str(tmp_path / "noext")] * 2))
    with pytest.raises(DataError, match=r"rt.pos.*cannot tell the format from the extension '.pos'.*lines"):
        load_splits("sentiment", DataCfg(source="files", files=[str(tmp_path / "rt.pos")]))


@pytest.mark.parametrize("bad, match", [
    ({"train": "rt.pos", "dev": "rt.pos", "test": "rt.pos"}, "format 'lines' reads one file per label"),
    ({"files": ["rt.pos"], "labels": ["a", "b"]}, "labels: one per file"),
])
def test_lines_config_errors(tmp_path, monkeypatch, bad, match):
    from squeeze import config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rt.pos").write_text("x\n")
    with pytest.raises(config.ConfigError, match=match):
        config.parse({"experiment": "e", "sweeps": [{"name": "a", "task": "sentiment", "model": {"name": "tiny-bert"},
                                                     "data": {"source": "files", "format": "lines", **bad}}]})


def _dailydialog(path, n=12):
    lines = [f"hello friend {d} . __eou__ how are you {d} ? __eou__ fine thanks {d} . __eou__ see you {d} . __eou__"
             for d in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dailydialog_turns_and_seeded_candidates(tmp_path):
    f = _dailydialog(tmp_path / "dialogues_text.txt")
    cfg = DataCfg(source="files", files=[str(f)], split=[0.5, 0.25, 0.25])  # format detected from __eou__
    examples = [ex for part in load_splits("dialogue", cfg).splits.values() for ex in part]
    assert len(examples) == 12 * 3 and all(ex["persona"] == [] for ex in examples)
    ex = next(e for e in examples if e["reply"] == "fine thanks 3 .")
    assert ex["history"] == ["hello friend 3 .", "how are you 3 ?"]
    for e in examples:
        assert len(e["candidates"]) == 20 and e["reply"] in e["candidates"] and len(set(e["candidates"])) == 20
        own = f" {e['reply'].split()[-2]} "  # the dialogue's number: distractors come from other dialogues
        assert sum(own in f" {c} " for c in e["candidates"]) == 1
    again = [ex for part in load_splits("dialogue", cfg).splits.values() for ex in part]
    assert again == examples  # seeded
    none = cfg.model_copy(update={"distractors": 0})
    assert all(ex["candidates"] == [] for part in load_splits("dialogue", none).splits.values() for ex in part)
    (tmp_path / "short.txt").write_text("only one utterance __eou__\n")
    with pytest.raises(DataError, match=r"short.txt:1: a dialogue needs at least two utterances"):
        load_splits("dialogue", DataCfg(source="files", files=[str(tmp_path / "short.txt")], format="dailydialog"))
    _dailydialog(tmp_path / "one.txt", n=1)
    with pytest.raises(DataError, match=r"one.txt: distractor replies come from other dialogues.*distractors: 0"):
        load_splits("dialogue", DataCfg(source="files", files=[str(tmp_path / "one.txt")], split=[0.5, 0.25, 0.25]))


def test_dailydialog_feeds_hits_at_k(tmp_path):
    """The drawn candidates reach the dialogue task's ranking: Hits@1/5/10 are reported."""
    from helpers import prepared_for, tiny_model, tiny_sweep

    sweep = tiny_sweep("dialogue", "tiny-gpt2")
    f = _dailydialog(tmp_path / "dd.txt", n=40)
    sweep = sweep.model_copy(update={"data": DataCfg(source="files", files=[str(f)], split=[0.6, 0.2, 0.2])})
    prepared = prepared_for(sweep, tmp_path / "cache")
    from squeeze.registry import get_task

    m, _ = get_task("dialogue").evaluate(tiny_model(sweep, prepared), prepared.features["dev"], prepared.examples["dev"],
                                         tokenizer=prepared.tokenizer, labels=prepared.labels, batch_size=8, device="cpu",
                                         eval_cfg=sweep.eval, final=True)
    assert {"hits_at_1", "hits_at_5", "hits_at_10"} <= set(m) and 0 <= m["hits_at_1"] <= m["hits_at_5"] <= m["hits_at_10"]


def test_tiny_preset_tokenizers_are_identical_on_every_run(tmp_path):
    """Built in separate processes (other hash seeds) from the same text, the tiny tokenizers are byte-identical:
    the same study gives the same tokens, hence the same metrics (tokenizers' WordPiece trainer did not)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from squeeze import vocab; from squeeze.data import synthetic; "
            "texts = [r['text'] for r in synthetic.text(400, 0)]; "
            "[vocab.build(k, texts, Path(sys.argv[1]) / k, 2000) for k in ('bert', 'gpt2')]")
    for i in range(2):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / str(i))], check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(i + 1)})
    for kind in ("bert", "gpt2"):
        assert (tmp_path / "0" / kind / "tokenizer.json").read_bytes() == (tmp_path / "1" / kind / "tokenizer.json").read_bytes()


# ---------------------------------------------------------------- native layouts (tables, column NER, chats)
def _labelled(path, **kw):
    return read_labelled(path, DataCfg(source="files", files=[str(path)], **kw))


def test_tables_with_the_quirks_real_files_have(tmp_path):
    """GLUE TSV with a header and a stray quote, headerless TSV, CSV with BOM + CRLF + quoted commas and newlines,
    a JSON array, Parquet, a label map; NA and 007 stay as written."""
    import pandas as pd

    glue = tmp_path / "train.tsv"
    glue.write_text('sentence\tlabel\nhe said "hi to me\t1\nNA\t0\n')
    assert _labelled(glue, text_column="sentence") == [{"text": 'he said "hi to me', "label": "1"}, {"text": "NA", "label": "0"}]
    bare = tmp_path / "bare.tsv"
    bare.write_text("a fine film\t1\nawful\t0\n")
    assert _labelled(bare, header=False, columns=["sentence", "y"], text_column="sentence", label_column="y",
                     label_map={1: "pos", 0: "neg"}) == [{"text": "a fine film", "label": "pos"}, {"text": "awful", "label": "neg"}]
    crlf = tmp_path / "reviews.csv"
    crlf.write_bytes('\ufefftext,label\r\n"good, fun\r\nfilm",007\r\nbad,1\r\n'.encode())
    assert _labelled(crlf) == [{"text": "good, fun\r\nfilm", "label": "007"}, {"text": "bad", "label": "1"}]
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"t": "ok", "l": 1}, {"t": "meh", "l": 0}]))
    assert _labelled(arr, text_column="t", label_column="l") == [{"text": "ok", "label": "1"}, {"text": "meh", "label": "0"}]
    pq = tmp_path / "a.parquet"
    pd.DataFrame({"text": ["x", "y"], "label": ["pos", "neg"]}).to_parquet(pq)
    assert _labelled(pq) == [{"text": "x", "label": "pos"}, {"text": "y", "label": "neg"}]
    with pytest.raises(DataError, match=r"bare.tsv: no column 'text' \(columns: \['a fine film', '1'\]\)"):
        _labelled(bare)  # read with a header it does not have: named, not guessed
    with pytest.raises(DataError, match=r"label '2' is not in data.label_map"):
        bare.write_text("x\t2\n")
        _labelled(bare, header=False, columns=["text", "label"], label_map={1: "pos", 0: "neg"})


def test_table_options_are_checked_before_anything_runs():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="header: false needs `columns"):
        DataCfg(header=False)
    with pytest.raises(ValidationError, match="token_column and tag_column are both 0"):
        DataCfg(token_column=0, tag_column=0)
    with pytest.raises(ValidationError, match="delimiter"):
        DataCfg(delimiter="::")


def test_column_ner_either_order_comments_and_extra_columns(tmp_path):
    first = tmp_path / "labels_first.bio"
    first.write_text("B-ORG\tEU\nO\trejects\nB-MISC\tGerman\n\nO\tfine\n")
    assert read_conll(first, tag_column=0, token_column=1) == [
        {"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]}, {"tokens": ["fine"], "tags": ["O"]}]
    with pytest.raises(DataError, match=r"labels_first.bio:1: column 1 does not look like tags .* column 0 does: set "
                                         r"data.tag_column: 0"):
        read_conll(first)  # token-first by default: refused, the fix named
    export = tmp_path / "export.conllu"
    export.write_text("# sent_id = 1\n# text = Anna lives\n1\tAnna\tPROPN\tB-PER\n2\tlives\tVERB\tO\n\n"
                      "# sent_id = 2\n1\tParis\tPROPN\tI-LOC\n")
    assert read_conll(export, token_column=1, tag_column=3, comment_prefix="#") == [
        {"tokens": ["Anna", "lives"], "tags": ["B-PER", "O"]}, {"tokens": ["Paris"], "tags": ["B-LOC"]}]  # IOB1 -> IOB2
    spaced = tmp_path / "spaced.tsv"
    spaced.write_text("New York\tB-LOC\nis\tO\n")
    assert read_conll(spaced, delimiter="\t") == [{"tokens": ["New York", "is"], "tags": ["B-LOC", "O"]}]


def test_label_first_file_with_only_the_tag_column_set_is_refused(workdir, capsys):
    """The silently-wrong case of the audit: tag_column 0 with the token column left at 0."""
    import yaml

    from squeeze import cli

    (workdir / "lf.bio").write_text("B-ORG\tEU\nO\trejects\n\nO\tok\n")
    doc = {"experiment": "t", "sweeps": [{"name": "n", "task": "ner", "model": {"name": "tiny-bert"},
                                          "data": {"source": "files", "files": ["lf.bio"], "tag_column": 0}}]}
    (workdir / "s.yaml").write_text(yaml.safe_dump(doc))
    assert cli.main(["sweep", "s.yaml", "--dry-run"]) == 2
    assert "token_column and tag_column are both 0" in capsys.readouterr().err


def test_dialogue_from_chat_json_lines_and_from_a_turn_table(tmp_path):
    chat = tmp_path / "chats.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "system", "content": f"i like cats {i} ."},
                                                     {"role": "user", "content": f"hi {i}"},
                                                     {"role": "assistant", "content": f"hello {i} !"},
                                                     {"role": "user", "content": f"how are you {i} ?"}]}) + "\n"
                            for i in range(6)))
    ex = load_splits("dialogue", DataCfg(source="files", files=[str(chat)], split=[0.5, 0.25, 0.25], distractors=3))
    rows = [e for part in ex.splits.values() for e in part]
    first = next(e for e in rows if e["reply"] == "hello 0 !")
    assert first["persona"] == ["i like cats 0 ."] and first["history"] == ["hi 0"]
    assert len(first["candidates"]) == 4 and "hello 0 !" in first["candidates"]
    assert len(rows) == 12  # two replies per conversation
    table = tmp_path / "turns.csv"
    table.write_text("conv,idx,who,utt\nb,2,bot,fine\na,1,usr,hey\na,2,bot,hi\na,3,bot,there\nb,1,usr,yo\n"
                     "c,1,usr,x\nc,2,bot,y\n")
    cfg = DataCfg(source="files", files=[str(table)], split=[0.34, 0.33, 0.33], dialogue_column="conv", turn_column="idx",
                  speaker_column="who", text_column="utt", distractors=1)
    rows = [e for part in load_splits("dialogue", cfg).splits.values() for e in part]
    a = next(e for e in rows if e["history"] == ["hey"])
    assert a["reply"] == "hi there"  # ordered by turn, the same speaker's consecutive rows joined
    assert {e["reply"] for e in rows} == {"hi there", "fine", "y"}
    with pytest.raises(DataError, match=r"turns.csv: no column 'dialogue_id' \(columns: \['conv', 'idx', 'who', 'utt'\]\); "
                                        r"set data.dialogue_column"):
        load_splits("dialogue", DataCfg(source="files", files=[str(table)], format="turns"))


def test_the_prune_stage_reads_any_plain_text_corpus(tmp_path):
    corpus = tmp_path / "corpus.raw"
    corpus.write_text("\n".join(f"sentence number {i} of a plain corpus ." for i in range(30)) + "\n")
    bundle = load_splits("lm", DataCfg(source="files", files=[str(corpus)], split=[0.8, 0.1, 0.1]))
    assert sum(bundle.sizes.values()) == 30 and bundle.splits["train"][0]["text"].startswith("sentence number")


def test_a_data_file_counts_in_a_stage_identity_by_its_contents_not_its_modification_time(tmp_path):
    """A dataset copied anew (same bytes, new mtime: a re-sync, a fresh checkout) must not make a finished
    study run again; an edited file must (found when a restored ../shared/data re-ran a 40-minute prune stage)."""
    import os

    from squeeze import config
    from squeeze.prepare import cache_key

    f = tmp_path / "reviews.csv"
    f.write_text("text,label\na fine film,pos\na dull film,neg\n" * 20)
    sweep = config.parse({"experiment": "t", "sweeps": [{"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"},
                                                          "data": {"source": "files", "files": [str(f)]}}]}).sweeps[0]
    before = cache_key(sweep)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**12))
    assert cache_key(sweep) == before
    f.write_text(f.read_text().replace("dull", "slow"))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**12))
    assert cache_key(sweep) != before


def test_a_dev_split_given_as_a_fraction_of_the_train_file_is_part_of_the_identity_not_a_file(tmp_path):
    """``dev: 0.1`` (the repro prune stages) was read as a path to hash: every repro study failed before its first
    trial with a TypeError. The fraction counts in the identity through the data config; the files by contents."""
    from squeeze import config
    from squeeze.prepare import cache_key

    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    for f in (train, test):
        f.write_text("some words of text here\n" * 50)

    def key(dev):
        return cache_key(config.parse({"experiment": "t", "sweeps": [{
            "name": "s", "task": "lm", "technique": ["imp_prune"], "model": {"name": "tiny-bert"},
            "data": {"source": "files", "train": str(train), "dev": dev, "test": str(test)}}]}).sweeps[0])

    assert key(0.1) != key(0.2)
    assert key(0.1) == key(0.1)


def test_stages_preparing_the_same_data_at_once_share_one_cache_without_tearing_it(tmp_path):
    """A DAG starts sibling stages over one baseline together, each preparing the same data in its own thread: one
    writes the cache while the others wait, then read it (rewriting a file another thread had memory-mapped killed
    the driver with SIGBUS before the cache folder had a lock)."""
    import threading

    from helpers import tiny_sweep
    from squeeze.prepare import prepare

    sweep = tiny_sweep("sentiment", size=400)
    out, errors = [], []

    def work():
        try:
            out.append(prepare(sweep, tmp_path))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 6
    assert all(p.features == out[0].features and p.examples == out[0].examples for p in out)
    assert not list(tmp_path.rglob("*.partial"))


def test_a_split_left_empty_by_copies_of_one_input_says_how_many_are_distinct(tmp_path):
    """Copies of one input stay in one split (no test sentence is also trained on): 30 copies of one review fill one
    split, and the error says so instead of asking for more data that it already has."""
    p = tmp_path / "same.csv"
    p.write_text("text,label\n" + "a fine film,pos\n" * 30)
    with pytest.raises(DataError, match=r"split 'train' is empty \(30 examples in all, 1 distinct: copies of one input"):
        load_splits("sentiment", DataCfg(source="files", files=[str(p)], split=[0.8, 0.1, 0.1]))
    q = tmp_path / "few.csv"
    q.write_text("text,label\na fine film,pos\na dull film,neg\n")
    with pytest.raises(DataError, match=r"is empty \(2 examples in all\); use more data"):
        load_splits("sentiment", DataCfg(source="files", files=[str(q)], split=[0.8, 0.1, 0.1]))
