"""Config validation: bad input exits with code 2 and names the field, before anything runs."""

from __future__ import annotations

import pytest
import yaml

from squeeze import cli, config
from squeeze.driver import search_space
from squeeze.driver.overrides import set_dotted

GOOD = {"experiment": "t", "sweeps": [{"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"},
                                       "data": {"size": 60}, "search_space": {"lr": {"grid_search": [1e-3, 3e-4]}}}]}


def _with(path: str, value):
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    set_dotted(doc, path, value)
    return doc


def _bad(path: str, value):
    return yaml.safe_dump(_with(path, value))


BAD = [
    ("malformed yaml", "experiment: [unclosed\n", "malformed YAML"),
    ("unknown top key", _bad("colour", "red"), "colour: unknown key"),
    ("unknown train key", _bad("sweeps.0.train.learning_rate", 0.1), "sweeps.0.train.learning_rate: unknown key"),
    ("wrong type", _bad("sweeps.0.train.epochs", "three"), "sweeps.0.train.epochs"),
    ("lr <= 0", _bad("sweeps.0.train.lr", 0), "sweeps.0.train.lr"),
    ("lr <= 0 in grid", _bad("sweeps.0.search_space.lr", {"grid_search": [1e-3, -1]}), "search_space.lr.grid_search: value -1"),
    ("unknown task", _bad("sweeps.0.task", "translation"), "unknown task 'translation'; allowed: dialogue, lm, ner, sentiment"),
    ("unknown technique", _bad("sweeps.0.technique", ["finetune", "magic"]), "unknown technique 'magic'"),
    ("unknown model", _bad("sweeps.0.model.name", "no-such-org/no-such-model"), "sweeps.0.model.name"),
    ("missing model dir", _bad("sweeps.0.model.name", "./no/such/dir"), "model directory './no/such/dir' does not exist"),
    ("missing data file", yaml.safe_dump(_with("sweeps.0.data", {"source": "files", "files": ["nope.csv"]})), "data file 'nope.csv' does not exist"),
    ("empty search space", _bad("sweeps.0.search_space.lr", {"grid_search": []}), "search_space.lr.grid_search: expected a non-empty list"),
    ("unknown sampler", _bad("sweeps.0.search_space.lr", {"gaussian": [1, 2]}), "unknown sampler 'gaussian'; allowed: grid_search"),
    ("untunable key", _bad("sweeps.0.search_space.colour", {"choice": [1]}), "search_space.colour: not a tunable field"),
    ("reversed bounds", _bad("sweeps.0.search_space.lr", {"loguniform": [1e-3, 1e-5]}), "lower bound 0.001 must be below upper"),
    ("bad split", _bad("sweeps.0.data.split", [0.5, 0.5, 0.5]), "sweeps.0.data.split: must be three positive fractions"),
    ("no sweeps", yaml.safe_dump({"experiment": "t", "sweeps": []}), "sweeps:"),
    ("duplicate names", yaml.safe_dump({**GOOD, "sweeps": GOOD["sweeps"] * 2}), "sweep names must be unique"),
    ("hub without name", _bad("sweeps.0.data.source", "hub"), "source 'hub' needs `name`"),
    ("negative size", _bad("sweeps.0.data.size", -5), "sweeps.0.data.size"),
    ("not a mapping", "- a\n- b\n", "the top level must be a mapping"),
    ("max_length swept", _bad("sweeps.0.search_space.max_length", {"grid_search": [32, 64]}), "search_space.max_length: not tunable"),
]


@pytest.mark.parametrize("name,text,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_config_exits_2_naming_the_field(tmp_path, capsys, name, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    assert cli.main(["sweep", str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert str(f) in err or "--only" in err


def test_missing_sweep_file(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such sweep file" in capsys.readouterr().err


def test_bad_override_and_unknown_only(tmp_path, capsys):
    f = tmp_path / "ok.yaml"
    f.write_text(yaml.safe_dump(GOOD))
    assert cli.main(["sweep", str(f), "--dry-run", "train.epochs"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert cli.main(["sweep", str(f), "--dry-run", "--only", "zzz"]) == 2
    assert "--only zzz: no such sweep; sweeps in this file: s" in capsys.readouterr().err


def test_malformed_data_file_is_caught_before_any_trial(workdir, capsys):
    (workdir / "bad.csv").write_text("text,label\ngood,1\nonly-one-field\n")
    f = workdir / "s.yaml"
    f.write_text(yaml.safe_dump(_with("sweeps.0.data", {"source": "files", "files": ["bad.csv"]})))
    assert cli.main(["sweep", str(f)]) == 2
    assert "bad.csv:3: empty label in column 'label'" in capsys.readouterr().err  # a row with a field missing
    assert not (workdir / "mlflow.db").exists() and not (workdir / "ray_results").exists()


def test_overrides_apply_to_every_sweep_and_by_index(tmp_path):
    f = tmp_path / "ok.yaml"
    doc = {**GOOD, "sweeps": [GOOD["sweeps"][0], {**GOOD["sweeps"][0], "name": "s2"}]}
    f.write_text(yaml.safe_dump(doc))
    cfg = config.load(f, ["train.epochs=7", "sweeps.1.train.lr=0.5", "max_concurrent_trials=3"])
    assert [s.train.epochs for s in cfg.sweeps] == [7, 7]
    assert [s.train.lr for s in cfg.sweeps] == [5e-5, 0.5]
    assert cfg.max_concurrent_trials == 3


def test_defaults_merge_and_task_default_split():
    cfg = config.parse({"experiment": "t", "defaults": {"train": {"epochs": 9, "lr": 0.1}},
                        "sweeps": [{"name": "a", "task": "ner", "model": {"name": "tiny-bert"}, "train": {"lr": 0.2}}]})
    s = cfg.sweeps[0]
    assert (s.train.epochs, s.train.lr) == (9, 0.2)
    assert s.data.split == (0.7, 0.15, 0.15)


def test_param_space_uses_ray_samplers():
    from ray import tune

    sweep = config.parse({**GOOD, "sweeps": [{**GOOD["sweeps"][0], "search_space": {
        "lr": {"loguniform": [1e-5, 1e-3]}, "seed": {"grid_search": [0, 1]}, "batch_size": {"choice": [8, 16]}}}]}).sweeps[0]
    space = search_space.param_space(sweep)["train"]
    assert space["seed"] == tune.grid_search([0, 1])
    assert isinstance(space["lr"], tune.search.sample.Float) and space["lr"].lower == 1e-5
    assert isinstance(space["batch_size"], tune.search.sample.Categorical)
    assert search_space.resolve_trial(sweep, {"train": {"lr": 2e-4, "seed": 1}}).train.lr == 2e-4


def test_a_stage_counts_its_trials_from_its_grids_and_samples():
    from ray import tune

    from squeeze.driver.sweep import count_trials

    space = {"train": {"lr": tune.grid_search([1, 2]), "seed": tune.grid_search([0, 1, 2]), "epochs": 3},
             "params": {"pkd": {"beta": tune.loguniform(1, 10)}}, "source_run": tune.grid_search(["a", "b"])}
    assert count_trials(space) == 12 and count_trials(space, num_samples=2) == 24 and count_trials({}) == 1


def test_every_sweep_file_validates():
    import glob
    import os

    files = glob.glob(os.path.join(os.path.dirname(__file__), "..", "sweeps", "**", "*.yaml"), recursive=True)
    assert len(files) >= 4
    shared = os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    for f in files:
        preset = "tiny-gpt2" if "generation" in f else "tiny-bert"
        over = [f"model.name={preset}"] if "paper" in f else []
        if "../shared" in open(f).read() and not shared:  # the real data is absent: validate the rest on generated data
            over += ["data.source=synthetic", "data.files=[]", "data.train=null", "data.dev=null", "data.test=null"]
        config.load(f, over)


def _sweep_doc(**kw):
    base = {"name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 60}}
    return {"experiment": "t", "sweeps": [{**base, **kw}]}


TECHNIQUE_BAD = [
    ("pkd without teacher", _sweep_doc(technique=["pkd"]), "technique 'pkd' needs a teacher"),
    ("dq without source", _sweep_doc(technique=["dq"], train={"epochs": 0}), "technique 'dq' needs `source"),
    ("imp without source", _sweep_doc(technique=["imp"]), "technique 'imp' needs `source"),
    ("imp_prune on a task", _sweep_doc(technique=["imp_prune"]), "a pre-training task runs only with a prune-stage technique"),
    ("lm without imp_prune", {"experiment": "t", "sweeps": [{"name": "p", "task": "lm", "model": {"name": "tiny-bert"}}]},
     "a pre-training task runs only with a prune-stage technique"),
    ("dq that trains", _sweep_doc(technique=["dq"], source={"sweep": "x"}, train={"epochs": 2}),
     "train.epochs: technique 'dq' is post-training"),
    ("imp from a baseline", {"experiment": "t", "sweeps": [
        {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}},
        {"name": "imp", "task": "sentiment", "technique": ["imp"], "model": {"name": "tiny-bert"}, "source": {"sweep": "base"}}]},
     "technique 'imp' needs a source sweep running imp_prune or imp; 'base' runs ['baseline']"),
    ("pkd on the prune task", {"experiment": "t", "sweeps": [{"name": "p", "task": "lm", "technique": ["imp_prune", "pkd"],
                                "model": {"name": "tiny-bert"}, "params": {"pkd": {"teacher": "runs:/x"}}}]},
     "technique 'pkd' does not apply to task 'lm'"),
    ("unknown plug-in param searched", _sweep_doc(technique=["faulty:FailOnce"],
                                                  search_space={"fail_once.bogus": {"grid_search": [1]}}),
     "search_space.faulty:FailOnce.bogus: unknown key"),
    ("sparsity out of range", {"experiment": "t", "sweeps": [{"name": "p", "task": "lm", "technique": ["imp_prune"],
                                "model": {"name": "tiny-bert"}, "params": {"imp_prune": {"sparsity": 1.5}}}]},
     "params.imp_prune.sparsity: Input should be less than 1"),
    ("Y <= 0 in grid", {"experiment": "t", "sweeps": [{"name": "p", "task": "lm", "technique": ["imp_prune"],
                         "model": {"name": "tiny-bert"}, "search_space": {"imp_prune.every": {"grid_search": [100, 0]}}}]},
     "search_space.imp_prune.every: Input should be greater than 0 (value 0 of grid_search)"),
    ("unknown technique param", _sweep_doc(technique=["qat"], params={"qat": {"bits": 4}}), "params.qat.bits: unknown key"),
    ("params for absent technique", _sweep_doc(params={"pkd": {"alpha": 0.1}}), "params.pkd: technique 'pkd' is not in"),
    ("space key of absent technique", _sweep_doc(search_space={"pkd.alpha": {"grid_search": [0.1]}}),
     "search_space.pkd.alpha: technique 'pkd' is not in"),
    ("source after", {"experiment": "t", "sweeps": [
        {"name": "dq", "task": "sentiment", "technique": ["dq"], "model": {"name": "tiny-bert"}, "source": {"sweep": "base"}},
        {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}}]}, "'base' must come before 'dq'"),
    ("pkd teacher not a model", _sweep_doc(technique=["pkd"], params={"pkd": {"teacher": "/tmp"}}),
     "params.pkd.teacher: teacher '/tmp' is neither runs:/<MLflow run id> nor a model folder"),
    ("best_per without per", _sweep_doc(technique=["dq"], source={"sweep": "x", "select": "best_per"}),
     "select 'best_per' needs `per`"),
]


@pytest.mark.parametrize("name,doc,needle", TECHNIQUE_BAD, ids=[b[0] for b in TECHNIQUE_BAD])
def test_bad_technique_config_exits_2(tmp_path, capsys, name, doc, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert cli.main(["sweep", str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle in err, err


def test_technique_params_reach_param_space():
    doc = _sweep_doc(technique=["pkd"], params={"pkd": {"teacher": "runs:/0123abcd", "beta": 7}},
                     search_space={"pkd.alpha": {"grid_search": [0.2, 0.5]}, "lr": {"choice": [1e-3]}})
    sweep = config.parse(doc).sweeps[0]
    space = search_space.param_space(sweep)
    assert set(space["params"]["pkd"]) == {"alpha"} and set(space["train"]) == {"lr"}
    resolved = search_space.resolve_trial(sweep, {"train": {"lr": 1e-3}, "params": {"pkd": {"alpha": 0.2}}})
    p = search_space.technique_params(resolved, "pkd")
    assert (p.alpha, p.beta, p.teacher, resolved.train.lr) == (0.2, 7, "runs:/0123abcd", 1e-3)


def test_plugin_technique_params_are_searched_by_path_or_declared_name():
    """A technique named by import path validates its Params and is searched like a built-in one."""
    for key in ("faulty:FailOnce.sleep_s", "fail_once.sleep_s"):
        doc = _sweep_doc(technique=["faulty:FailOnce"], params={"fail_once": {"mode": "none"}},
                         search_space={key: {"grid_search": [0.0, 0.25]}})
        sweep = config.parse(doc).sweeps[0]
        assert sweep.params == {"faulty:FailOnce": {"mode": "none"}}  # the declared name maps to the entry
        space = search_space.param_space(sweep)
        assert list(space["params"]) == ["faulty:FailOnce"] and set(space["params"]["faulty:FailOnce"]) == {"sleep_s"}
        trial = search_space.resolve_trial(sweep, {"params": {"faulty:FailOnce": {"sleep_s": 0.25}}})
        p = search_space.technique_params(trial, "faulty:FailOnce")
        assert (p.sleep_s, p.mode) == (0.25, "none")
    with pytest.raises(config.ConfigError, match=r"search_space.faulty:FailOnce.sleep_s: Input should be a valid number"):
        config.parse(_sweep_doc(technique=["faulty:FailOnce"], search_space={"fail_once.sleep_s": {"grid_search": ["x"]}}))


def test_post_training_sweeps_train_zero_epochs_whatever_defaults_and_overrides_say(tmp_path, capsys):
    doc = {"experiment": "t", "defaults": {"train": {"epochs": 4, "lr": 0.1, "max_length": 40}}, "sweeps": [
        {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}},
        {"name": "dq", "task": "sentiment", "technique": ["dq"], "model": {"name": "tiny-bert"}, "source": {"sweep": "base"}}]}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(doc))
    notes = []
    cfg = config.load(f, ["train.epochs=1", "train.max_length=32", "sweeps.base.train.seed=3"], notes)
    base, dq = cfg.sweeps
    assert (base.train.epochs, base.train.lr, base.train.max_length, base.train.seed) == (1, 0.1, 32, 3)
    assert (dq.train.epochs, dq.train.lr, dq.train.max_length) == (0, 5e-5, 32)  # max_length still applies: same tokens
    assert notes == ["train.epochs=1 not applied to post-training sweeps (they train 0 epochs): dq"]


def test_a_default_override_says_which_sweeps_keep_their_own_value(tmp_path):
    """``defaults.train.epochs=3`` reaches only the sweeps that do not set ``train.epochs`` (and train): it says which
    keep their own, judged after every override (a later ``sweeps.<name>`` one may set a sweep's own value)."""
    doc = {"experiment": "t", "defaults": {"train": {"max_length": 40}}, "sweeps": [
        {"name": "own", "task": "sentiment", "model": {"name": "tiny-bert"}, "train": {"epochs": 2}},
        {"name": "base", "task": "sentiment", "model": {"name": "tiny-bert"}},
        {"name": "dq", "task": "sentiment", "technique": ["dq"], "model": {"name": "tiny-bert"}, "source": {"sweep": "base"}}]}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(doc))
    notes = []
    own, base, dq = config.load(f, ["defaults.train.epochs=3", "defaults.train.max_length=32"], notes).sweeps
    assert (own.train.epochs, base.train.epochs, dq.train.epochs) == (2, 3, 0)
    assert {s.train.max_length for s in (own, base, dq)} == {32}
    assert notes == ["defaults.train.epochs=3 not applied to the sweeps that set train.epochs themselves (or are "
                     "post-training): own, dq"]
    with pytest.raises(config.ConfigError, match="no sweep takes this default"):
        config.load(f, ["defaults.train.epochs=3", "sweeps.base.train.epochs=1"])


@pytest.mark.parametrize("override,needle", [
    ("sweeps.5.train.epochs=1", "override sweeps.5.train.epochs: index 5 is out of range (1 entries)"),
    ("sweeps.nope.train.epochs=1", "override sweeps.nope.train.epochs: no sweep named 'nope'; sweeps: s"),
    ("train.epochs=[1", "override 'train.epochs=[1': the value is not valid YAML"),
    ("colour=red", "override colour: unknown key 'colour'"),
    ("defaults.data.size=80", "override defaults.data.size=80: no sweep takes this default (every sweep sets data.size"),
])
def test_bad_overrides_exit_2_without_a_traceback(tmp_path, capsys, override, needle):
    f = tmp_path / "ok.yaml"
    f.write_text(yaml.safe_dump(GOOD))
    assert cli.main(["sweep", str(f), "--dry-run", override]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err


def test_trials_get_the_validated_config_without_file_checks(tmp_path):
    """Validation with file checks happens once, on the driver; a worker's copy is never re-checked."""
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    sweep = config.parse(_sweep_doc(data={"source": "files", "files": [str(data)]})).sweeps[0]
    data.unlink()  # a worker node without the file
    resolved = search_space.resolve_trial(sweep, {"train": {"lr": 1e-3}})
    assert resolved.data.files == [str(data)] and resolved.train.lr == 1e-3
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.parse(_sweep_doc(data={"source": "files", "files": [str(data)]}))


def test_numbers_and_booleans_read_as_yaml_1_2_in_sweep_files_and_overrides(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string, ``2:4`` as the base-60 integer 124 and ``yes`` as True: a grid of
    ``1e-3`` then differed from the same grid written ``0.001`` (the point's key, its params), ``loguniform: [1e-4,
    1e-2]`` was refused as not numbers, ``pattern: 2:4`` as not text, and ``label_map: {yes: pos}`` mapped "True"."""
    from squeeze import yamlfile
    from squeeze.driver.sweep import stage_points

    for text, value in (("1e-3", 0.001), ("2E5", 2e5), ("1.0e3", 1000.0), ("-1e3", -1000.0), ("+1E+3", 1000.0),
                        (".5e-2", 0.005), ("-.5", -0.5), ("1.5", 1.5), ("3.", 3.0), ("10", 10), ("0x1f", 31),
                        ("2:4", "2:4"), ("1:30", "1:30"), ("1e", "1e"), ("1e3.5", "1e3.5"), ("abc1e3", "abc1e3")):
        got = yamlfile.load(text)
        assert got == value and type(got) is type(value), (text, got)
    assert yamlfile.load(".inf") == float("inf") and yamlfile.load("~") is None
    assert [yamlfile.load(t) for t in ("true", "False", "yes", "no", "on", "off")] == [True, False, "yes", "no", "on", "off"]
    with pytest.raises(yaml.YAMLError, match="duplicate key"):
        yamlfile.load("a: 1\na: 2\n")

    def study(space: str, params: str = "") -> str:
        return (f"experiment: e\nsweeps:\n- {{name: base, task: sentiment, model: {{name: tiny-bert}}}}\n"
                f"- {{name: s, task: sentiment, model: {{name: tiny-bert}}, technique: [sparsegpt], source: {{sweep: base}}, "
                f"train: {{epochs: 0}}{params}, search_space: {{{space}}}}}\n")

    path = tmp_path / "s.yaml"
    path.write_text(study("sparsegpt.pattern: {grid_search: [2:4, 4:8]}"))
    s = config.load(path).sweeps[1]
    assert s.search_space["sparsegpt.pattern"] == {"grid_search": ["2:4", "4:8"]}
    path.write_text(study("sparsegpt.sparsity: {loguniform: [1e-2, 5e-1]}"))
    assert config.load(path).sweeps[1].search_space["sparsegpt.sparsity"] == {"loguniform": [0.01, 0.5]}
    path.write_text(study("", ", params: {sparsegpt: {pattern: 2:4}}"))
    assert search_space.technique_params(config.load(path).sweeps[1], "sparsegpt").pattern == "2:4"
    # a grid written 1e-3 is the grid written 0.001: the same points, keys and values
    base = "experiment: e\nsweeps:\n- {name: b, task: sentiment, model: {name: tiny-bert}, search_space: {lr: {grid_search: [%s]}}}\n"
    keys = []
    for grid in ("1e-3, 2e-3", "0.001, 0.002"):
        path.write_text(base % grid)
        keys.append(stage_points(config.load(path).sweeps[0], "ident", None))
    assert keys[0] == keys[1] and [p["train"]["lr"] for p in keys[0]] == [0.001, 0.002]
    # yes / no are labels, and a boolean field still reads on / off
    path.write_text("experiment: e\nsweeps:\n- {name: b, task: sentiment, model: {name: tiny-bert}, measure: {latency: off}, "
                    "data: {label_map: {yes: pos, no: neg}}}\n")
    b = config.load(path).sweeps[0]
    assert b.data.label_map == {"yes": "pos", "no": "neg"} and b.measure.latency is False
    # and an override's value likewise
    path.write_text(base % "0.001")
    cfg = config.load(path, ["train.weight_decay=1e-2", "sweeps.b.search_space.lr.grid_search=[1e-3]"])
    assert cfg.sweeps[0].train.weight_decay == 0.01 and cfg.sweeps[0].search_space["lr"] == {"grid_search": [0.001]}
