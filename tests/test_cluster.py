"""Multi-node sweeps on Ray's own multi-node test cluster (a head and worker nodes on this
machine), logging to a real MLflow server on 127.0.0.1 with no shared local path assumed."""

from __future__ import annotations

import threading
import time

import pytest
import yaml

from squeeze import cli

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    yield c
    ray.shutdown()
    c.shutdown()


def _file(workdir, name, seeds, epochs, **sweep):
    doc = {"experiment": name, "sweeps": [{
        "name": "s", "task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80},
        "train": {"epochs": epochs, "batch_size": 16, "max_length": 32, "lr": 1e-3}, "measure": {"latency": False},
        "search_space": {"seed": {"grid_search": list(seeds)}}, **sweep}]}
    f = workdir / f"{name}.yaml"
    f.write_text(yaml.safe_dump(doc))
    return str(f)


def _children(uri, experiment):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id], "tags.`squeeze.trial_id` != ''") if exp else [])


def test_trials_run_on_both_nodes_and_reach_mlflow(workdir, cluster, mlflow_server):
    import ray

    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    f = _file(workdir, "multi", seeds=(0, 1, 2, 3), epochs=2)
    assert cli.main(["sweep", f, "--tracking-uri", mlflow_server]) == 0
    client, runs = _children(mlflow_server, "multi")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["ray.node_id"] for r in runs}) == 2  # both worker nodes ran trials
    for r in runs:
        assert "model/model.safetensors" in {a.path for a in client.list_artifacts(r.info.run_id, "model")}


def test_lost_worker_node_trial_resumes_on_another(workdir, cluster, mlflow_server):
    import ray

    first = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    # 12 epochs of 0.3 s steps: the trial outlasts the seconds a loaded machine takes to start the second node
    f = _file(workdir, "lost", seeds=(0,), epochs=12, max_failures=2, technique=["faulty:FailOnce"],
              params={"faulty:FailOnce": {"mode": "none", "sleep_s": 0.3}})
    result = {}
    driver = threading.Thread(target=lambda: result.update(code=cli.main(["sweep", f, "--tracking-uri", mlflow_server])))
    driver.start()

    def trial_reached(epochs):
        deadline = time.time() + 180
        while time.time() < deadline:
            time.sleep(0.5)
            client, runs = _children(mlflow_server, "lost")
            if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= epochs:
                return runs[0]
        raise AssertionError(f"the trial did not reach epoch {epochs} in 180 s")

    trial_reached(1)
    cluster.add_node(num_cpus=1)  # started while the trial runs on the first node
    run = trial_reached(2)
    before = run.data.tags["ray.node_id"]
    assert run.info.status == "RUNNING"  # still running when its node goes
    cluster.remove_node(first)
    driver.join(timeout=300)
    assert result.get("code") == 0
    client, runs = _children(mlflow_server, "lost")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # not duplicated, not left RUNNING
    assert runs[0].data.tags["ray.node_id"] != before            # it finished on the new node
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")) == list(range(12))


def test_trial_runs_on_a_worker_that_does_not_hold_the_data_files(workdir, cluster, mlflow_server, monkeypatch):
    """The driver validates and tokenizes once; the worker gets the config and the data through Ray and never
    looks for the files again (here they are deleted as soon as the driver has prepared them)."""
    import shutil

    import ray

    from squeeze.driver import sweep as sweep_mod

    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    (workdir / "data").mkdir()
    rows = "".join(f"\"{'great fun film' if i % 2 else 'dull boring film'} {i}\",{'pos' if i % 2 else 'neg'}\n" for i in range(80))
    (workdir / "data" / "reviews.csv").write_text("text,label\n" + rows)
    doc = {"experiment": "nodata", "sweeps": [{
        "name": "s", "task": "sentiment", "model": {"name": "tiny-bert"},
        "data": {"source": "files", "files": ["data/reviews.csv"]},  # relative: resolved on the driver
        "train": {"epochs": 1, "batch_size": 16, "max_length": 32}, "measure": {"latency": False}}]}
    f = workdir / "nodata.yaml"
    f.write_text(yaml.safe_dump(doc))
    real = sweep_mod.prepare

    def prepare_then_remove(*args, **kw):
        prepared = real(*args, **kw)
        shutil.rmtree(workdir / "data")  # from here on no node holds the file
        return prepared

    monkeypatch.setattr(sweep_mod, "prepare", prepare_then_remove)
    assert cli.main(["sweep", str(f), "--tracking-uri", mlflow_server]) == 0
    assert not (workdir / "data").exists()
    client, runs = _children(mlflow_server, "nodata")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    head = cluster.head_node.node_id
    assert runs[0].data.tags["ray.node_id"] != head and runs[0].data.params["data.n_train"] == "40"


def cli_config(path):
    from squeeze import config

    return config.load(str(path))


def test_a_study_runs_independent_stages_at_once_across_nodes_and_dependents_after_their_source(workdir, cluster,
                                                                                                mlflow_server):
    """Two baselines on a two-node cluster are started together; the DQ stage of one starts as soon as that one's
    trials ended, not when the whole study did; `--sequential` gives the same trials and metrics one stage at a time.
    Asserted on the scheduler's recorded decisions (``dag.HISTORY``) and the runs' states, never on wall-clock
    overlap, which a loaded machine breaks."""
    import ray

    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    base = {"task": "sentiment", "model": {"name": "tiny-bert"}, "data": {"size": 80}, "measure": {"latency": False},
            "train": {"epochs": 2, "batch_size": 16, "max_length": 32, "lr": 1e-3}}
    sweeps = [{"name": "a", **base}, {"name": "b", **base, "technique": ["faulty:FailOnce"],  # slowed down: still training when DQ starts
               "params": {"faulty:FailOnce": {"mode": "none", "sleep_s": 2.0}}},
              {"name": "dq_a", **base, "train": {"max_length": 32}, "technique": ["dq"], "source": {"sweep": "a"}}]
    for name in ("dag", "seq"):
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump({"experiment": name, "sweeps": sweeps}))
    from squeeze.driver import dag

    assert cli.main(["study", str(workdir / "dag.yaml"), "--tracking-uri", mlflow_server]) == 0
    history = list(dag.HISTORY)
    assert cli.main(["study", str(workdir / "seq.yaml"), "--tracking-uri", mlflow_server, "--sequential"]) == 0
    seq_history = list(dag.HISTORY)
    spans, metrics = {}, {}
    for name in ("dag", "seq"):
        _, runs = _children(mlflow_server, name)
        assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
        spans[name] = {r.data.tags["squeeze.sweep"]: (r.info.start_time, r.info.end_time) for r in runs}
        metrics[name] = {r.data.tags["squeeze.sweep"]: r.data.metrics["val/accuracy"] for r in runs}
        if name == "dag":
            assert len({r.data.tags["ray.node_id"] for r in runs if r.data.tags["squeeze.sweep"] in "ab"}) == 2
    # the scheduler's recorded decisions, not wall-clock overlaps (a loaded machine may finish a before b starts):
    # both baselines were started before either ended; DQ waited for its source alone, starting as soon as a ended
    first_end = next(i for i, e in enumerate(history) if e[0] == "end")
    assert {("start", "a"), ("start", "b")} <= set(history[:first_end])
    assert history.index(("start", "dq_a")) == history.index(("end", "a")) + 1
    assert dag.dependencies(cli_config(workdir / "dag.yaml").sweeps) == {"a": set(), "b": set(), "dq_a": {"a"}}
    assert spans["dag"]["dq_a"][0] >= spans["dag"]["a"][1]  # its run began after its source's trial ended
    assert seq_history == [(k, n) for n in ("a", "b", "dq_a") for k in ("start", "end")]  # one at a time, in order
    a, b, dq = (spans["seq"][k] for k in ("a", "b", "dq_a"))
    assert a[1] <= b[0] and b[1] <= dq[0]
    assert metrics["dag"] == metrics["seq"]     # same trials, same seeds, same numbers
