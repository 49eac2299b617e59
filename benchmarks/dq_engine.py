"""Does the int8 kernel library change what DQ costs? (evidence for the NER reproduction's DQ row)

    .venv/bin/python benchmarks/dq_engine.py --tracking-uri sqlite:///mlflow.db --experiment repro-ner

The paper quantized with QNNPACK; squeeze's DQ runs on torch's default engine for the CPU (``x86``: FBGEMM,
activations quantized with a reduced 7-bit range). For every finished baseline of the experiment, its saved model is
quantized with ``quant.dynamic_int8`` (squeeze's DQ) under each engine and scored on the test split that the
experiment's YAML defines (given with ``--config``, default ``sweeps/repro/ner.yaml``). Writes
benchmarks/results/<date>-dq-engine.json with the machine described.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time

import common  # noqa: F401  (offline, repository on sys.path)

ROOT = common.ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", default="repro-ner")
    ap.add_argument("--config", default=str(ROOT / "sweeps" / "repro" / "ner.yaml"))
    ap.add_argument("--sweep", default="baseline")
    args = ap.parse_args()

    import mlflow
    import torch

    from run import machine
    from squeeze import config, quant, formats
    from squeeze.prepare import prepare
    from squeeze.registry import get_task

    torch.set_num_threads(common.THREADS)
    t0 = time.perf_counter()
    sweep = next(s for s in config.load(args.config).sweeps if s.name == args.sweep)
    task = get_task(sweep.task)
    client = mlflow.MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    runs = [r for r in client.search_runs([exp.experiment_id], "tags.technique = 'baseline'")
            if r.info.status == "FINISHED" and "test/" + task.primary_metric in r.data.metrics]
    engines = [e for e in ("x86", "qnnpack") if e in torch.backends.quantized.supported_engines]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        p = prepare(sweep, tmp)

        def score(model):
            with torch.no_grad():
                s, _ = task.evaluate(model, p.features["test"], p.examples["test"], tokenizer=p.tokenizer,
                                     labels=p.labels, batch_size=64, device="cpu")
            return s[task.primary_metric]

        for r in runs:
            folder = mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path="model", dst_path=tmp,
                                                         tracking_uri=args.tracking_uri)
            row = {"run_id": r.info.run_id, "lr": r.data.params.get("train.lr"), "seed": r.data.params.get("train.seed"),
                   "logged_fp32": r.data.metrics["test/" + task.primary_metric]}
            row["fp32"] = score(formats.load(folder))
            for engine in engines:
                torch.backends.quantized.engine = engine
                row[engine] = score(quant.dynamic_int8(formats.load(folder)))
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    out = ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-dq-engine.json"
    out.write_text(json.dumps({"date": str(datetime.date.today()), "command": "benchmarks/dq_engine.py --experiment "
                               + args.experiment, "machine": machine(), "wall_s": time.perf_counter() - t0,
                               "config": str(args.config), "sweep": args.sweep, "metric": "test/" + task.primary_metric,
                               "engines": engines, "baselines": rows}, indent=1))
    print(out)


if __name__ == "__main__":
    main()
