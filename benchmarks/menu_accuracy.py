"""Accuracy of every technique of a menu study (``sweeps/menu/*.yaml``) from its MLflow runs, as a JSON and a
Markdown table: per stage and setting, the test metric's mean and standard deviation over the baseline trials it
started from (each one-shot trial compresses one baseline trial), the paired difference to that baseline, disk size
and parity.

    squeeze study sweeps/menu/sentiment.yaml measure.latency=false
    .venv/bin/python benchmarks/menu_accuracy.py --experiment menu-sentiment [--tracking-uri sqlite:///mlflow.db]

Writes benchmarks/results/<date>-<experiment>.json. CPU latency per stored form is ``menu_latency.py``'s.
"""

from __future__ import annotations

import argparse
import datetime
import json

import common  # noqa: F401  (offline, repository on sys.path)

ROOT = common.ROOT
KNOBS = ("bits", "group_size", "pattern", "alpha", "sparsity")


def table(df, metric: str) -> list[dict]:
    import pandas as pd

    knobs = [c for c in df.columns if c.startswith("params.") and c.rsplit(".", 1)[-1] in KNOBS
             and not c.startswith("params.pkd.")]

    def value(v):
        return int(v) if isinstance(v, float) and v.is_integer() else v

    def setting(row) -> str:
        return " ".join(f"{c.split('.', 1)[1]}={value(row[c])}" for c in knobs
                        if isinstance(row[c], str) or pd.notna(row[c]))

    df = df.assign(setting=df.apply(setting, axis=1))
    base = df[df["sweep"] == "baseline"].set_index("run_id")[metric]
    rows = []
    for (sweep, how), g in df.groupby(["sweep", "setting"], sort=False):
        paired = (g[metric] - g["source_run"].map(base)).dropna() if sweep != "baseline" else None
        rows.append({"stage": sweep, "technique": g["technique"].iloc[0], "setting": how, "trials": int(len(g)),
                     "mean": float(g[metric].mean()), "sd": float(g[metric].std()),
                     "paired_diff_to_baseline": float(paired.mean()) if paired is not None and len(paired) else None,
                     "disk_mb": float(g["size/disk_mb"].mean()), "parity_ok": bool((g["parity/ok"] == 1).all())})
    return rows


def markdown(rows: list[dict], metric: str) -> str:
    out = [f"| stage | setting | trials | {metric} (mean ± sd) | vs its baseline (paired) | disk MB |", "|---|---|---|---|---|---|"]
    for r in rows:
        diff = "" if r["paired_diff_to_baseline"] is None else f"{r['paired_diff_to_baseline']:+.4f}"
        out.append(f"| {r['stage']} | {r['setting']} | {r['trials']} | {r['mean']:.4f} ± {r['sd']:.4f} | {diff} | "
                   f"{r['disk_mb']:.1f} |")
    return "\n".join(out)


def main() -> None:
    from analysis.runs import load_runs
    from run import machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    ap.add_argument("--metric", help="default: test/accuracy, or test/f1 for NER")
    args = ap.parse_args()
    df = load_runs(args.experiment, tracking_uri=args.tracking_uri)
    df = df[df["status"] == "FINISHED"]
    metric = args.metric or ("test/f1" if set(df["task"]) == {"ner"} else "test/accuracy")
    rows = table(df, metric)
    out = {"date": datetime.date.today().isoformat(), "command": f"benchmarks/menu_accuracy.py --experiment {args.experiment}",
           "machine": machine(), "experiment": args.experiment, "metric": metric, "test_n": int(df["test/n"].iloc[0]),
           "rows": rows, "markdown": markdown(rows, metric)}
    path = ROOT / "benchmarks" / "results" / f"{out['date']}-{args.experiment}.json"
    path.write_text(json.dumps(out, indent=1))
    print(out["markdown"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
