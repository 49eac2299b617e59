"""The bad-input catalogue: one case per row, each must exit 2 before Ray starts, naming the field or file.

Every row is (id, setup, command, needle): ``setup`` writes what the case needs into the working directory
(sweep files, data files, model folders), ``command`` is the CLI's argv, ``needle`` a piece of the message that
names what is wrong. The test asserts exit code 2, the needle, no traceback, and that no Ray started.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from squeeze import cli

BASE = {"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60},
        "train": {"epochs": 1, "max_length": 32}}


def doc(*sweeps, **top):
    return {"experiment": "bad", "sweeps": [copy.deepcopy(s) for s in sweeps] or [copy.deepcopy(BASE)], **top}


def sweep(**kw):
    out = copy.deepcopy(BASE)
    from squeeze.registry import TECHNIQUES, get_technique_class

    if any(get_technique_class(t).post_training for t in kw.get("technique", []) if t in TECHNIQUES):
        out["train"]["epochs"] = 0  # post-training
    for key, value in kw.items():
        node = out
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def yml(d, name="s.yaml"):
    def write(w):
        (w / name).write_text(yaml.safe_dump(d) if not isinstance(d, str) else d)
    return write


def files(*pairs, then=None):
    """Write data files (name, text or bytes), then the sweep file."""
    def write(w):
        for name, content in pairs:
            (w / name).parent.mkdir(parents=True, exist_ok=True)
            (w / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        if then is not None:
            then(w)
    return write


def model_dir(w, tokenizer=True):
    import transformers

    from squeeze import vocab

    cfg = transformers.AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                            intermediate_size=64, vocab_size=300)
    transformers.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(w / "mine")
    if tokenizer:
        vocab.build("bert", ["some words of text"] * 5, w / "mine", 300)


RUN = ["sweep", "s.yaml", "--dry-run"]
CSV = "text,label\n" + "".join(f"review number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
PRUNE = {"name": "p", "task": "lm", "technique": ["imp_prune"], "model": {"name": "tiny-bert"}, "data": {"size": 60}}
BASELINE = sweep(name="base")

CASES = [
    # ---- the sweep file
    ("malformed yaml", yml("experiment: [unclosed\n"), RUN, "malformed YAML"),
    ("duplicate key", yml("experiment: a\nexperiment: b\nsweeps: []\n"), RUN, "duplicate key 'experiment'"),
    ("sweep file not utf-8", lambda w: (w / "s.yaml").write_bytes("experiment: caf\xe9\n".encode("latin-1")), RUN,
     "s.yaml: not UTF-8 text"),
    ("top level a list", yml("- a\n- b\n"), RUN, "the top level must be a mapping"),
    ("unknown top key", yml(doc(colour="red")), RUN, "colour: unknown key"),
    ("unknown sweep key", yml(doc(sweep(size=3))), RUN, "sweeps.0.size: unknown key"),
    ("unknown train key", yml(doc(sweep(train__learning_rate=0.1))), RUN, "sweeps.0.train.learning_rate: unknown key"),
    ("epochs not a number", yml(doc(sweep(train__epochs="three"))), RUN, "sweeps.0.train.epochs"),
    ("lr zero", yml(doc(sweep(train__lr=0))), RUN, "sweeps.0.train.lr"),
    ("lr infinite", yml("experiment: bad\nsweeps:\n- {name: s, task: sentiment, model: {name: tiny-bert}, train: {lr: .inf}}\n"),
     RUN, "sweeps.0.train.lr"),
    ("batch size zero", yml(doc(sweep(train__batch_size=0))), RUN, "sweeps.0.train.batch_size"),
    ("unknown task", yml(doc(sweep(task="translation"))), RUN, "unknown task 'translation'"),
    ("unknown technique", yml(doc(sweep(technique=["magic"]))), RUN, "unknown technique 'magic'"),
    ("plug-in not importable", yml(doc(sweep(technique=["nopkg.mod:Tech"]))), RUN, "technique 'nopkg.mod:Tech' cannot be imported"),
    ("params of absent technique", yml(doc(sweep(params={"pkd": {"alpha": 0.1}}))), RUN, "params.pkd: technique 'pkd' is not in"),
    ("unknown technique param", yml(doc(sweep(technique=["qat"], params={"qat": {"bits": 4}}))), RUN, "params.qat.bits: unknown key"),
    ("pkd without teacher", yml(doc(sweep(technique=["pkd"]))), RUN, "technique 'pkd' needs a teacher"),
    ("dq without source", yml(doc(sweep(technique=["dq"]))), RUN, "technique 'dq' needs `source"),
    ("imp without source", yml(doc(sweep(technique=["imp"]))), RUN, "technique 'imp' needs `source"),
    ("imp_prune on sentiment", yml(doc(sweep(technique=["imp_prune"]))), RUN, "a pre-training task runs only with"),
    ("lm without imp_prune", yml(doc(sweep(task="lm"))), RUN, "a pre-training task runs only with"),
    ("dq that trains", yml(doc(BASELINE, sweep(technique=["dq"], source={"sweep": "base"}, train__epochs=2))), RUN,
     "train.epochs: technique 'dq' is post-training"),
    ("sparsity above 1", yml(doc({**PRUNE, "params": {"imp_prune": {"sparsity": 1.5}}})), RUN,
     "params.imp_prune.sparsity: Input should be less than 1"),
    ("duplicate sweep names", yml(doc(BASE, BASE)), RUN, "sweep names must be unique"),
    ("source comes later", yml(doc(sweep(technique=["dq"], source={"sweep": "base"}), BASELINE)), RUN,
     "'base' must come before 's'"),
    ("best_per without per", yml(doc(BASELINE, sweep(technique=["dq"], source={"sweep": "base", "select": "best_per"}))),
     RUN, "select 'best_per' needs `per`"),
    ("no sweeps", yml({"experiment": "bad", "sweeps": []}), RUN, "sweeps:"),
    ("split not summing to 1", yml(doc(sweep(data__split=[0.5, 0.5, 0.5]))), RUN, "sweeps.0.data.split: must be three"),
    ("hub without a name", yml(doc(sweep(data__source="hub"))), RUN, "source 'hub' needs `name`"),
    ("files source without files", yml(doc(sweep(data__source="files"))), RUN, "source 'files' needs `files"),
    ("header false without columns", yml(doc(sweep(data__header=False))), RUN, "header: false needs `columns"),
    ("columns with a header", yml(doc(sweep(data__columns=["a", "b"]))), RUN, "columns: names the columns of a file without"),
    ("token and tag column alike", yml(doc(sweep(task="ner", data__tag_column=0))), RUN, "token_column and tag_column are both 0"),
    ("two-character delimiter", yml(doc(sweep(data__delimiter="::"))), RUN, "sweeps.0.data.delimiter"),
    # ---- the search space
    ("max_length searched", yml(doc(sweep(search_space={"max_length": {"grid_search": [32, 64]}}))), RUN,
     "search_space.max_length: not tunable"),
    ("unknown sampler", yml(doc(sweep(search_space={"lr": {"gaussian": [1, 2]}}))), RUN, "unknown sampler 'gaussian'"),
    ("empty grid", yml(doc(sweep(search_space={"lr": {"grid_search": []}}))), RUN, "expected a non-empty list"),
    ("invalid grid value", yml(doc(sweep(search_space={"lr": {"grid_search": [1e-3, -1]}}))), RUN, "value -1 is invalid"),
    ("reversed bounds", yml(doc(sweep(search_space={"lr": {"loguniform": [1e-3, 1e-5]}}))), RUN, "lower bound 0.001 must be below"),
    ("loguniform from zero", yml(doc(sweep(search_space={"lr": {"loguniform": [0, 1e-3]}}))), RUN, "a log-scale sampler needs a positive"),
    ("uniform on an integer field", yml(doc(sweep(search_space={"epochs": {"uniform": [1, 4]}}))), RUN,
     "epochs takes integers"),
    ("normal draw on a bounded field", yml(doc(sweep(search_space={"lr": {"randn": [1e-3, 1e-4]}}))), RUN,
     "a normal draw can go below lr's lower bound"),
    ("zero quantum", yml(doc(sweep(search_space={"batch_size": {"qrandint": [8, 32, 0]}}))), RUN, "the quantum q must be positive"),
    ("infinite bound", yml("experiment: bad\nsweeps:\n- name: s\n  task: sentiment\n  model: {name: tiny-bert}\n"
                           "  search_space: {lr: {uniform: [0.001, .inf]}}\n"), RUN, "arguments must be finite numbers"),
    ("untunable key", yml(doc(sweep(search_space={"colour": {"choice": [1]}}))), RUN, "search_space.colour: not a tunable field"),
    ("space key of absent technique", yml(doc(sweep(search_space={"pkd.alpha": {"grid_search": [0.1]}}))), RUN,
     "technique 'pkd' is not in"),
    ("plug-in param unknown", yml(doc(sweep(technique=["faulty:FailOnce"], search_space={"fail_once.bogus": {"grid_search": [1]}}))),
     RUN, "search_space.faulty:FailOnce.bogus: unknown key"),
    # ---- models
    ("model folder missing", yml(doc(sweep(model={"name": "./no/such/dir"}))), RUN, "model directory './no/such/dir' does not exist"),
    ("model folder without tokenizer", lambda w: (model_dir(w, tokenizer=False), yml(doc(sweep(model={"name": "./mine"})))(w)),
     RUN, "holds no tokenizer"),
    ("unknown hub model", yml(doc(sweep(model={"name": "no-such-org/no-such-model"}))), RUN, "not found on the Hugging Face hub"),
    ("teacher not a model", yml(doc(sweep(technique=["pkd"], params={"pkd": {"teacher": "/tmp"}}))), RUN,
     "teacher '/tmp' is neither runs:/"),
    ("BERTScore model missing", yml(doc(sweep(task="dialogue", model={"name": "tiny-gpt2"}, eval={"bertscore_model": "/nope"}))),
     RUN, "BERTScore model '/nope' is not a model folder"),
    # ---- across stages and against the machine
    ("missing source sweep", yml(doc(sweep(technique=["dq"], source={"sweep": "ghost"}))), RUN,
     "sweeps.0.source.sweep (s): no sweep 'ghost' in this file or finished in the experiment"),
    ("source of another task", yml(doc(sweep(name="base", task="ner"), sweep(technique=["dq"], source={"sweep": "base"}))), RUN,
     "'base' runs task 'ner', this sweep 'sentiment'"),
    ("source of another family", yml(doc(sweep(name="base", model={"name": "tiny-gpt2"}),
                                         sweep(technique=["dq"], source={"sweep": "base"}))), RUN,
     "'tiny-bert' is not the model family of its source"),
    ("student deeper than teacher", yml(doc(BASELINE, sweep(technique=["pkd"], source={"sweep": "base"},
                                                            params={"pkd": {"layers": 6}}))), RUN,
     "a 6-layer student is deeper than its 4-layer teacher"),
    ("a searched student deeper than teacher", yml(doc(BASELINE, sweep(technique=["pkd"], source={"sweep": "base"},
        search_space={"pkd.layers": {"grid_search": [1, 6]}}))), RUN, "a 6-layer student is deeper than its 4-layer teacher"),
    ("max_length above positions", yml(doc(sweep(train__max_length=1024))), RUN, "takes at most 512"),
    ("cuda without a gpu", yml(doc(sweep(train__device="cuda"))), RUN, "cuda needs resources.gpu > 0"),
    ("a gpu this machine lacks", yml(doc(sweep(resources={"gpu": 1}))), RUN, "this machine has no CUDA GPU"),
    # ---- data files
    ("missing data file", yml(doc(sweep(data={"source": "files", "files": ["nope.csv"]}))), RUN, "data file 'nope.csv' does not exist"),
    ("csv with extra fields", files(("d.csv", CSV + "a,b,c\n"), then=yml(doc(sweep(data={"source": "files", "files": ["d.csv"]})))),
     RUN, "d.csv:42: cannot be read as csv"),
    ("csv without the label column", files(("d.csv", CSV.replace("label", "y")),
                                           then=yml(doc(sweep(data={"source": "files", "files": ["d.csv"]})))),
     RUN, "d.csv: no column 'label'"),
    ("ner without entities", files(("n.conll", "a O\nb O\n\nc O\n" * 20),
                                   then=yml(doc(sweep(task="ner", data={"source": "files", "files": ["n.conll"]})))),
     RUN, "no entity tag: every tag is O"),
    ("labels differing by case", files(("d.csv", CSV.replace(",pos", ",Pos", 3).replace(",neg", ",neg")),
                                       then=yml(doc(sweep(data={"source": "files", "files": ["d.csv"]})))),
     RUN, "differ only by case"),
    ("dialogue without candidates", files(("dd.txt", "".join(f"hi {i} __eou__ hello {i} __eou__\n" for i in range(30))),
                                          then=yml(doc(sweep(task="dialogue", model={"name": "tiny-gpt2"},
                                                             data={"source": "files", "files": ["dd.txt"], "distractors": 0})))),
     RUN, "no turn has candidate replies"),
    ("data file not utf-8", files(("d.csv", CSV.replace("review", "caf\xe9").encode("cp1252")),
                                  then=yml(doc(sweep(data={"source": "files", "files": ["d.csv"]})))), RUN,
     "d.csv: not UTF-8 text"),
    ("tag column of tokens", files(("t.conll", "B-ORG EU\nO rejects\n\n" * 10),
                                   then=yml(doc(sweep(task="ner", data={"source": "files", "files": ["t.conll"]})))),
     RUN, "column 1 does not look like tags"),
    ("format the task cannot read", files(("r.txt", "a review\n" * 20),
                                          then=yml(doc(sweep(data={"source": "files", "files": ["r.txt"]})))),
     RUN, "format 'text' cannot feed task 'sentiment'"),
    ("prune schedule too long", yml(doc({**PRUNE, "params": {"imp_prune": {"every": 1000}}})), RUN,
     "sweep 'p': IMP schedule X=0.7, Y=1000"),
    # ---- overrides and options
    ("override without =", yml(doc()), RUN + ["train.epochs"], "expected key=value"),
    ("override index out of range", yml(doc()), RUN + ["sweeps.5.train.epochs=1"], "index 5 is out of range"),
    ("override unknown sweep", yml(doc()), RUN + ["sweeps.nope.train.epochs=1"], "no sweep named 'nope'"),
    ("override not yaml", yml(doc()), RUN + ["train.epochs=[1"], "the value is not valid YAML"),
    ("override unknown key", yml(doc()), RUN + ["colour=red"], "unknown key 'colour'"),
    ("only an unknown sweep", yml(doc()), RUN + ["--only", "zzz"], "--only zzz: no such sweep"),
    # ---- input that used to be silently misread (issue 22): each family refused, naming the field or file
    ("files with another source", files(("d.csv", CSV), then=yml(doc(sweep(data={"source": "synthetic", "files": ["d.csv"]})))),
     RUN, "data files are read only with source 'files'"),
    ("files with train/dev/test", files(("d.csv", CSV), ("t.csv", CSV), then=yml(doc(sweep(data={
        "files": ["d.csv"], "train": "t.csv", "dev": "d.csv", "test": "t.csv"})))), RUN, "give either `files`"),
    ("one file for train, dev and test", files(("d.csv", CSV), then=yml(doc(sweep(data={
        "train": "d.csv", "dev": "d.csv", "test": "d.csv"})))), RUN, "train and dev and test are the same file"),
    ("dev equal to test", files(("d.csv", CSV), ("t.csv", CSV), then=yml(doc(sweep(data={
        "train": "t.csv", "dev": "d.csv", "test": "d.csv"})))), RUN, "dev and test are the same file"),
    ("size with a file source", files(("d.csv", CSV), then=yml(doc(sweep(data={"files": ["d.csv"], "size": 100})))),
     RUN, "size: applies to synthetic data"),
    ("dev fraction above 1", files(("d.csv", CSV), ("t.csv", CSV), then=yml(doc(sweep(data={
        "train": "d.csv", "dev": 1.5, "test": "t.csv"})))), RUN, "must be between 0 and 1"),
    ("iob1 file declared iob2", files(("n.conll", "EU I-ORG\nrejects O\n\nPeter I-PER\nruns O\n\n" * 10),
                                      then=yml(doc(sweep(task="ner", data={"files": ["n.conll"], "scheme": "iob2"})))),
     RUN, "that is IOB1"),
    ("ner types differing by case", files(("n.conll", "".join(f"EU{i} B-ORG\nrejects O\n\nPeter{i} B-Org\nruns O\n\n"
                                                          for i in range(10))),
                                          then=yml(doc(sweep(task="ner", data={"files": ["n.conll"]})))),
     RUN, "differ only by case"),
    ("parlai candidates only the gold reply", files(("p.txt", "".join(f"1 hi {i}\thello {i}\t\thello {i}\n" for i in range(20))),
                                                    then=yml(doc(sweep(task="dialogue", model={"name": "tiny-gpt2"},
                                                                       data={"files": ["p.txt"], "format": "parlai"})))),
     RUN, "the candidates hold only the gold reply"),
    ("parlai superscript turn number", files(("p.txt", "\u00b9 hi\thello\t\thello|bye\n"),
                                             then=yml(doc(sweep(task="dialogue", model={"name": "tiny-gpt2"},
                                                                data={"files": ["p.txt"], "format": "parlai"})))),
     RUN, "each line must start with a turn number"),
    ("chat content a list", files(("c.jsonl", "".join(json.dumps({"messages": [{"role": "user", "content": ["a"]},
                                                                               {"role": "assistant", "content": "b"}]}) + "\n"
                                                      for _ in range(10))),
                                  then=yml(doc(sweep(task="dialogue", model={"name": "tiny-gpt2"},
                                                     data={"files": ["c.jsonl"], "format": "chat"})))),
     RUN, "expected a 'messages' list"),
    ("chat content null", files(("c.jsonl", "".join(json.dumps({"messages": [{"role": "user", "content": None},
                                                                             {"role": "assistant", "content": "b"}]}) + "\n"
                                                    for _ in range(10))),
                                then=yml(doc(sweep(task="dialogue", model={"name": "tiny-gpt2"},
                                                   data={"files": ["c.jsonl"], "format": "chat"})))),
     RUN, "expected a 'messages' list"),
    ("epochs: on", yml("experiment: bad\nsweeps:\n- {name: s, task: sentiment, model: {name: tiny-bert}, train: {epochs: on}}\n"),
     RUN, "sweeps.0.train.epochs: Input should be a valid integer"),  # YAML 1.2: `on` is text, not True (1 epoch)
    ("epochs: true", yml("experiment: bad\nsweeps:\n- {name: s, task: sentiment, model: {name: tiny-bert}, train: {epochs: true}}\n"),
     RUN, "epochs: expected a number, got True"),
    ("batch_size: true", yml(doc(sweep(train__batch_size=True))), RUN, "batch_size: expected a number"),
    ("technique param a boolean", yml(doc(BASELINE, sweep(technique=["pkd"], source={"sweep": "base"},
                                                         params={"pkd": {"alpha": True}}))), RUN, "expected a number"),
    ("no technique", yml(doc(sweep(technique=[]))), RUN, "an empty list runs nothing"),
    ("a technique twice", yml(doc(sweep(technique=["baseline", "baseline"]))), RUN, "'baseline' is listed twice"),
    ("a technique under two names", yml(doc(sweep(technique=["baseline", "finetune"]))), RUN, "is listed twice"),
    ("duplicate csv header", files(("d.csv", CSV.replace("text,label", "text,text")),
                                   then=yml(doc(sweep(data={"files": ["d.csv"], "label_column": "text"})))),
     RUN, "column 'text' appears twice"),
    ("list labels", files(("d.jsonl", "".join(json.dumps({"text": f"t {i}", "label": ["pos"]}) + "\n" for i in range(20))),
                          then=yml(doc(sweep(data={"files": ["d.jsonl"]})))), RUN, "is a list"),
    ("grad_accum above batch", yml(doc(sweep(train__grad_accum=32, train__batch_size=8))), RUN,
     "grad_accum 32 is larger than batch_size 8"),
    ("data size beyond reason", yml(doc(sweep(data__size=10**9))), RUN, "sweeps.0.data.size"),
    ("a grid of millions", yml(doc(sweep(search_space={"lr": {"grid_search": [1e-3 + i * 1e-7 for i in range(1600)]},
                                                       "seed": {"grid_search": list(range(1600))}}))), RUN,
     "makes 2,560,000 trials"),
    ("seed beyond numpy", yml(doc(sweep(train__seed=2**63))), RUN, "sweeps.0.train.seed"),
    ("quantum not dividing the bounds", yml(doc(sweep(search_space={"batch_size": {"qrandint": [5, 32, 8]}}))), RUN,
     "bound 5 is not a multiple of the quantum q=8"),
    ("tracking uri garbage", yml(doc()), RUN + ["--tracking-uri", "garbage"], "not a URI and not an existing"),
    ("tracking uri unknown scheme", yml(doc()), RUN + ["--tracking-uri", "foo://x"], "unknown scheme 'foo'"),
    ("tracking database unreachable", yml(doc()), RUN + ["--tracking-uri", "postgresql://u:hunter2@127.0.0.1:9/db"],
     "postgresql://***@127.0.0.1:9/db cannot be used"),
    ("yaml nested too deeply", yml("experiment: " + "[" * 3000 + "]" * 3000 + "\n"), RUN, "nested too deeply"),
    ("technique not a technique", yml(doc(sweep(technique=["os:system"]))), RUN, "'os:system' is not a technique class"),
    ("task not a task", yml(doc(sweep(task="json:dumps"))), RUN, "'json:dumps' is not a squeeze.tasks.base.Task"),
    ("model folder with broken config", lambda w: (model_dir(w), (w / "mine" / "config.json").write_text("{nope"),
                                                   yml(doc(sweep(model={"name": "./mine"})))(w)),
     RUN, "config.json is not valid JSON"),
    ("model folder of an unknown architecture", lambda w: (model_dir(w), (w / "mine" / "config.json").write_text(
        '{"model_type": "nosuchnet"}'), yml(doc(sweep(model={"name": "./mine"})))(w)), RUN, "does not know"),
    ("model folder without weights", lambda w: (model_dir(w), (w / "mine" / "model.safetensors").unlink(),
                                                yml(doc(sweep(model={"name": "./mine"})))(w)), RUN, "holds no weights"),
    ("model folder with corrupt safetensors", lambda w: (model_dir(w), (w / "mine" / "model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"), yml(doc(sweep(model={"name": "./mine"})))(w)), RUN,
     "not a readable safetensors file"),
    ("model folder with a broken tokenizer", lambda w: (model_dir(w), (w / "mine" / "tokenizer.json").write_text("{"),
                                                        yml(doc(sweep(model={"name": "./mine"})))(w)), RUN,
     "its tokenizer does not load"),
    ("bertscore layers beyond the scorer", lambda w: (model_dir(w), yml(doc(sweep(
        task="dialogue", model={"name": "tiny-gpt2"}, eval={"bertscore_model": "./mine", "bertscore_layers": 9})))(w)),
     RUN, "bertscore_layers 9: the scorer"),
    ("dq of a dq stage", yml(doc(BASELINE, sweep(name="dq1", technique=["dq"], source={"sweep": "base"}),
                                 sweep(name="dq2", technique=["dq"], source={"sweep": "dq1"}))), RUN, "already ran 'dq'"),
    ("dialogue on an encoder", yml(doc(sweep(task="dialogue"))), RUN, "needs a decoder model"),
    ("mlflow file store", lambda w: (yml(doc())(w), (w / "mlruns").mkdir()), ["sweep", "s.yaml", "--tracking-uri", "mlruns"],
     "mlruns cannot be used (MlflowException: The filesystem tracking backend"),  # MLflow 3 refuses it by default
    ("ray address pointing at nothing", yml(doc()), ["sweep", "s.yaml"], "RAY_ADDRESS '127.0.0.1:9': no Ray head answers"),
    ("storage uri that cannot be listed", yml(doc(storage_path="s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http")),
     RUN, "storage_path s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http: cannot be used"),
    ("sqlite store where no folder can be made", yml(doc()), RUN + ["--tracking-uri", "sqlite:////proc/no/m.db"],
     "its folder /proc/no cannot be created"),
    ("storage folder that cannot be made", yml(doc(storage_path="/proc/no/ray")), ["sweep", "s.yaml"],
     "storage_path /proc/no/ray: cannot be created"),
    ("cache folder that cannot be made", yml(doc(cache_dir="/proc/no/cache")), RUN, "cache_dir /proc/no/cache: cannot be created"),
    ("empty storage path", yml(doc(storage_path=" ")), RUN, "storage_path: empty"),
    ("a million epochs", yml(doc(sweep(train__epochs=10**6))), RUN, "sweeps.0.train.epochs"),
    ("threads beyond reason", yml(doc(sweep(train__num_threads=10**5))), RUN, "sweeps.0.train.num_threads"),
    ("a grid value twice", yml(doc(sweep(search_space={"seed": {"grid_search": [0, 1, 0]}}))), RUN,
     "search_space.seed.grid_search: lists 0 twice"),
    ("defaults a list", yml({"experiment": "bad", "defaults": [], "sweeps": [BASE]}), RUN, "defaults: must be a mapping"),
    ("label_map to a list", files(("d.csv", CSV), then=yml(doc(sweep(data={"files": ["d.csv"], "label_map": {
        "pos": [1], "neg": "n"}})))), RUN, "raw labels and names are single values"),
    ("sweep name too long for a folder", yml(doc(sweep(name="x" * 300))), RUN, "sweeps.0.name: String should have at most 100"),
    ("experiment climbing out", yml(doc(experiment="../../x")), RUN, "experiment: String should match pattern"),
    ("experiment with a newline", yml(doc(experiment="a\nb")), RUN, "experiment: String should match pattern"),
    ("ls into a folder that cannot be made", lambda w: None, ["ls", "--experiment", "x", "--parquet", "/proc/no/r.parquet"],
     "--parquet /proc/no: cannot be created"),
    ("ls into a file that cannot be written", lambda w: None, ["ls", "--experiment", "x", "--parquet", "/proc/r.parquet"],
     "--parquet /proc/r.parquet: cannot be written"),
    ("ls into a folder", lambda w: (w / "pq").mkdir(), ["ls", "--experiment", "x", "--parquet", "pq"],
     "--parquet pq: is a folder; name a file"),
    ("report into a folder that cannot be made", lambda w: None, ["report", "--experiment", "x", "--out", "/proc/no"],
     "--out /proc/no: cannot be created"),
    # ---- commands
    ("missing sweep file", lambda w: None, ["sweep", "nope.yaml"], "nope.yaml: no such sweep file"),
    ("gptq without source", yml(doc(sweep(technique=["gptq"]))), RUN, "technique 'gptq' needs `source"),
    ("gptq of a gptq stage", yml(doc(BASELINE, sweep(name="q1", technique=["gptq"], source={"sweep": "base"}),
                                     sweep(name="q2", technique=["gptq"], source={"sweep": "q1"}))), RUN, "already ran 'gptq'"),
    # a technique that compresses nn.Linear layers after one that replaced them would silently do nothing, under a label
    # that sorts its names ([gptq, sparsegpt] would read as the joint sparsegpt+gptq recipe)
    ("prune after quantizing, one stage", yml(doc(BASELINE, sweep(technique=["gptq", "sparsegpt"], source={"sweep": "base"}))),
     RUN, "[sparsegpt, gptq] prunes, then quantizes"),
    ("two quantizers, one stage", yml(doc(BASELINE, sweep(technique=["awq", "rtn"], source={"sweep": "base"}))), RUN,
     "'rtn' compresses the model's nn.Linear layers, and 'awq' before it replaces them"),
    ("a searched alternative in the wrong order", yml(doc(BASELINE, sweep(source={"sweep": "base"}, train__epochs=0, search_space={
        "technique": {"grid_search": ["rtn", ["fp8", "wanda"]]}}))), RUN, "alternative 'fp8+wanda'"),
    ("prune a quantized stage", yml(doc(BASELINE, sweep(name="q", technique=["rtn"], source={"sweep": "base"}),
                                        sweep(name="p", technique=["wanda"], source={"sweep": "q"}))), RUN,
     "'q' holds models quantized by 'rtn'"),
    ("quantize a stage whose source quantized", yml(doc(
        BASELINE, sweep(name="q", technique=["qat"]), sweep(name="p", technique=["pkd"], source={"sweep": "q"}),
        sweep(name="d", technique=["dq"], source={"sweep": "p"}))), RUN, "'p' holds models quantized by 'qat'"),
    ("a quantizer among a source's alternatives", yml(doc(BASELINE, sweep(name="m", source={"sweep": "base"}, train__epochs=0, search_space={
        "technique": {"grid_search": ["sparsegpt", "gptq"]}}), sweep(name="p", technique=["awq"], source={"sweep": "m"}))),
     RUN, "'m' holds models quantized by 'gptq'"),
    ("three-bit gptq", yml(doc(BASELINE, sweep(technique=["gptq"], source={"sweep": "base"}, params={"gptq": {"bits": 3}}))),
     RUN, "params.gptq.bits"),
    ("a group size no kernel holds", yml(doc(BASELINE, sweep(technique=["awq"], source={"sweep": "base"},
                                                             params={"awq": {"group_size": 24}}))), RUN,
     "group_size must be -1 (per output row) or a multiple of 16"),
    ("n:m that is not", yml(doc(BASELINE, sweep(technique=["wanda"], source={"sweep": "base"},
                                                params={"wanda": {"pattern": "4:4"}}))), RUN, "pattern: '4:4' is not N:M"),
    ("sparsity against its pattern", yml(doc(BASELINE, sweep(technique=["sparsegpt"], source={"sweep": "base"}, params={
        "sparsegpt": {"pattern": "2:4", "sparsity": 0.7}}))), RUN, "sparsity: 0.7 disagrees with pattern 2:4"),
    ("a searched pattern that is not n:m", yml(doc(BASELINE, sweep(technique=["sparsegpt"], source={"sweep": "base"},
        search_space={"sparsegpt.pattern": {"grid_search": ["2:4", "2-4"]}}))), RUN, "'2-4' is not N:M"),
    ("no calibration examples", yml(doc(BASELINE, sweep(technique=["gptq"], source={"sweep": "base"},
                                                        params={"gptq": {"calibration": {"examples": 0}}}))), RUN,
     "params.gptq.calibration.examples"),
    ("a calibration key misspelt", yml(doc(BASELINE, sweep(technique=["rtn"], source={"sweep": "base"},
                                                           params={"rtn": {"calibration": {"sample": 8}}}))), RUN,
     "params.rtn.calibration.sample: unknown key"),
    ("smoothquant alpha beyond 1", yml(doc(BASELINE, sweep(technique=["smoothquant"], source={"sweep": "base"},
                                                            params={"smoothquant": {"alpha": 2}}))), RUN,
     "params.smoothquant.alpha"),
    # ---- recipe search: search, objectives, constraints, budget
    ("an unknown search algorithm", yml(doc(sweep(search={"algorithm": "bayes"}))), RUN, "search.algorithm"),
    ("an unknown scheduler", yml(doc(sweep(search={"scheduler": "pbt"}))), RUN, "search.scheduler"),
    ("an objective on the test set", yml(doc(sweep(objectives=[{"metric": "test/accuracy", "mode": "max"}]))), RUN,
     "objectives.0.metric: test/accuracy would choose on the test set"),
    ("an objective no trial logs", yml(doc(sweep(objectives=[{"metric": "val/bleu", "mode": "max"}]))), RUN,
     "objectives.0.metric: 'val/bleu' is not a metric a sentiment trial logs"),
    ("an objective the wrong way round", yml(doc(sweep(objectives=[{"metric": "size/disk_mb", "mode": "max"}]))), RUN,
     "objectives.0.mode: size/disk_mb is better when lower"),
    ("an objective twice", yml(doc(sweep(objectives=[{"metric": "val/accuracy", "mode": "max"}] * 2))), RUN,
     "objectives: val/accuracy is listed twice"),
    ("nsga2 with one objective", yml(doc(sweep(search={"algorithm": "nsga2"}, search_space={"lr": {"uniform": [1e-4, 1e-3]}}))),
     RUN, "nsga2 searches several objectives"),
    ("tpe on cpu latency", yml(doc(sweep(search={"algorithm": "tpe"}, search_space={"lr": {"uniform": [1e-4, 1e-3]}},
                                         objectives=[{"metric": "latency/cpu_ms_per_example", "mode": "min"}]))), RUN,
     "latency/cpu_ms_per_example is measured by the driver after the stage's trials ended"),
    ("tpe without a space", yml(doc(sweep(search={"algorithm": "tpe"}))), RUN, "tpe needs a search_space"),
    ("tpe on a normal draw", yml(doc(sweep(search={"algorithm": "tpe"}, search_space={"lr": {"qloguniform": [1e-4, 1e-3, 1e-4]}}))),
     RUN, "has no Optuna distribution"),
    ("a seed for grid search", yml(doc(sweep(search={"seed": 3}))), RUN, "search.seed: seeds Optuna's sampler"),
    ("a scheduler on a post-training stage", yml(doc(BASELINE, sweep(technique=["dq"], source={"sweep": "base"},
                                                                     search={"scheduler": "asha"}))), RUN,
     "technique 'dq' is post-training (no epochs)"),
    ("a grace period as long as training", yml(doc(sweep(train__epochs=2, search={"scheduler": "asha", "grace_period": 2}))),
     RUN, "search.grace_period: 2 epochs leaves nothing to stop"),
    ("asha on a metric known at the end", yml(doc(sweep(train__epochs=3, search={"scheduler": "asha"},
                                                        objectives=[{"metric": "size/disk_mb", "mode": "min"}]))), RUN,
     "size/disk_mb is known only when a trial ends"),
    ("mo-asha on one objective", yml(doc(sweep(train__epochs=3, search={"scheduler": "mo-asha"}))), RUN,
     "mo-asha stops trials on several objectives"),
    ("a reduction factor of 1", yml(doc(sweep(search={"reduction_factor": 1}))), RUN, "search.reduction_factor"),
    ("an empty budget", yml(doc(sweep(budget={}))), RUN, "sweeps.0.budget: name at least one of trials, hours, kwh"),
    ("a negative budget", yml(doc(sweep(budget={"hours": -1}))), RUN, "budget.hours"),
    ("a study budget key misspelt", yml(doc(budget={"trial": 3})), RUN, "budget.trial: unknown key"),
    ("a constraint with two bounds", yml(doc(sweep(constraints=[{"metric": "val/accuracy", "min": 0.5, "max": 0.9}]))), RUN,
     "give exactly one of min, max"),
    ("a ratio constraint without a source", yml(doc(sweep(constraints=[{"metric": "val/accuracy", "min_ratio_of_source": 0.99}]))),
     RUN, "constraints.0.min_ratio_of_source: this sweep has no source"),
    # ---- searching the technique itself (squeeze.driver.search.alternatives)
    ("a searched technique given twice", yml(doc(BASELINE, sweep(technique=["dq"], source={"sweep": "base"},
        search_space={"technique": {"choice": ["dq", "rtn"]}}))), RUN, "list the alternatives there only"),
    ("one technique alternative", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}, train__epochs=0),
        "search_space": {"technique": {"choice": ["dq"]}}})), RUN, "list at least two alternatives"),
    ("a technique range", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}), "search_space": {"technique": {"uniform": [0, 1]}}})),
     RUN, "search_space.technique: expected grid_search or choice"),
    ("an unknown technique alternative", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}, train__epochs=0),
        "search_space": {"technique": {"grid_search": ["dq", "gpt-q"]}}})), RUN,
     "search_space.technique.grid_search.1: unknown technique 'gpt-q'"),
    ("a composition twice in another order", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}, train__epochs=0),
        "search_space": {"technique": {"grid_search": [["sparsegpt", "gptq"], ["gptq", "sparsegpt"]]}}})), RUN,
     "'gptq+sparsegpt' is listed twice"),
    ("a knob of no alternative", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}, train__epochs=0),
        "search_space": {"technique": {"grid_search": ["dq", "rtn"]}, "gptq.bits": {"grid_search": [4]}}})), RUN,
     "technique 'gptq' is not in any alternative of search_space.technique"),
    ("an alternative that fails its own rules", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}), "train": {"max_length": 32},
        "search_space": {"technique": {"grid_search": ["dq", "imp_prune"]}}})), RUN,
     "search_space.technique: alternative 'imp_prune'"),
    ("epochs for post-training alternatives", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}, train__epochs=2),
        "search_space": {"technique": {"grid_search": ["dq", "rtn"]}}})), RUN, "train.epochs: technique 'dq' is post-training"),
    ("a scheduler over a post-training alternative", yml(doc(BASELINE, {**sweep(source={"sweep": "base"}, train__epochs=2),
        "search": {"scheduler": "asha"}, "search_space": {"technique": {"grid_search": ["dq", "pkd"]}}})), RUN,
     "technique 'dq' is post-training (no epochs)"),
    ("ls without a store", lambda w: None, ["ls", "--experiment", "x"], "no MLflow store at"),
    ("report without a store", lambda w: None, ["report", "--experiment", "x"], "no MLflow store at"),
    ("ls of an unknown experiment", lambda w: __import__("squeeze.tracking").tracking.ensure_experiment(
        f"sqlite:///{w / 'mlflow.db'}", "other"), ["ls", "--experiment", "x"], "experiment 'x' not found"),
    ("unreachable server", yml(doc()), ["sweep", "s.yaml", "--tracking-uri", "http://127.0.0.1:9"],
     "MLflow tracking server http://127.0.0.1:9 is unreachable"),
    ("ls on an unreachable server", lambda w: None, ["ls", "--experiment", "x", "--tracking-uri", "http://127.0.0.1:9"],
     "is unreachable"),
]


@pytest.mark.parametrize("name,setup,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_before_ray_naming_what_is_wrong(workdir, capsys, monkeypatch, name, setup, argv, needle):
    import ray
    import torch

    if name == "a gpu this machine lacks":  # the hardware boundary: on a machine with a GPU, answer as one without
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if name == "ray address pointing at nothing":
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    ray_before = ray.is_initialized()
    setup(workdir)
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err and "hunter2" not in err  # no secret echoed
    assert not (workdir / "ray_results").exists() and ray.is_initialized() == ray_before
    if name not in ("ls of an unknown experiment",):
        assert not (workdir / "mlflow.db").exists()  # nothing was created either


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 120
    assert json.dumps([c[0] for c in CASES])  # ids are plain text
