"""The paper's checkable claims (Sections 4.1 to 4.5), each with our estimate, a 95% interval and a verdict.

    from analysis.claims import claims_table, pass_fail
    claims_table(df)          # one row per claim x task: ours, interval, units, rule, verdict
    pass_fail(df)             # per task x technique: primary metric as a fraction of the baseline's, 99% / 99.9%

Each claim is a bound on a change against a reference technique (``op`` and ``threshold``, in percent). The
interval comes from ``analysis.intervals.compare``. The rule, stated with every row:

- **supported**: the whole 95% interval satisfies the bound;
- **contradicted**: the whole interval violates it;
- **inconclusive**: the interval straddles the bound, or it rests on fewer than ``MIN_UNITS`` units of a
  quantity that varies between them (two seeds give an interval that is only their range);
- **not measured**: the runs lack the task, the technique or the quantity.

A size does not vary by seed: its interval is a point and decides with any number of units. Energy claims use
each trial's measured training energy when every compared trial has one; otherwise training time, said so in
``measured as`` (the paper's own argument in 4.5: "techniques that require lower training time spend less
energy").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.intervals import Comparison, _finished, compare, training_energy
from analysis.tables import primary, task_metrics

MIN_UNITS = 3
# the paper's tasks by its own names; which of ours reproduces each, each task declares (``Task.paper_task``)
SENTIMENT, NER, GENERATION_TASK = "sentiment analysis", "named entity recognition", "sentence generation"
BERT_TASKS, GENERATION = (SENTIMENT, NER), (GENERATION_TASK,)
OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, ">": lambda v, t: v > t, "<": lambda v, t: v < t,
       "within": lambda v, t: abs(v) <= t}


@dataclass(frozen=True)
class Claim:
    """One checkable sentence of the paper. ``quantity``: ``quality`` (the task's primary metric, or the worst of
    ``metrics``, signed so that negative is worse), a test metric's name (``bleu``), ``size``, ``latency``,
    ``train`` (training energy) or ``train+prune`` (training energy plus the prune stage it came from)."""

    id: str
    section: str
    text: str
    paper: str
    tasks: tuple[str, ...]
    technique: str
    quantity: str
    op: str
    threshold: float
    reference: str = "baseline"
    metrics: tuple[str, ...] = ()
    paper_by_task: tuple[tuple[str, str], ...] = ()
    note: str = ""               # said when the claim is contradicted: what differs between the paper's set-up and ours


CLAIMS = [
    Claim("pkd-quality", "4.1", "PKD: no recorded metric degrades more than 1% (sentiment, NER)",
          "at most 1% (its Table 4: worst -0.85% sentiment, -1.54% NER)", BERT_TASKS, "pkd", "quality", ">=", -1.0,
          metrics=("paper",)),
    Claim("pkd-size", "4.1", "PKD cuts the model's size by 39% (270 MB)", "-39%", BERT_TASKS, "pkd", "size", "<=", -39.0,
          note="embeddings"),
    Claim("pkd-latency", "4.1", "PKD: 79% latency improvement on sentiment", "-79% latency", (SENTIMENT,), "pkd",
          "latency", "<", 0.0),
    Claim("pkd-generation", "4.1", "PKD hurts generation", "BLEU -16.37%", GENERATION, "pkd", "bleu", "<", 0.0),
    Claim("pkd-generation-time", "4.1", "PKD extends generation's training time", "+52% (teacher run online)",
          GENERATION, "pkd", "train", ">", 0.0),
    Claim("imp-quality", "4.2", "IMP worsens quality on sentiment and NER", "sentiment accuracy -6.90%, NER F1 -3.53%",
          BERT_TASKS, "imp", "quality", "<", 0.0),
    Claim("imp-time", "4.2", "IMP: no major difference in training time on sentiment and NER (within 10%)",
          "no major difference", BERT_TASKS, "imp", "train", "within", 10.0),
    Claim("imp-generation", "4.2", "IMP improves generation", "BLEU +13.56%", GENERATION, "imp", "bleu", ">", 0.0),
    Claim("imp-generation-time", "4.2", "IMP shortens generation's training time", "-4%", GENERATION, "imp", "train",
          "<", 0.0),
    Claim("imp-generation-latency", "4.2", "IMP shortens generation's inference time", "-9%", GENERATION, "imp",
          "latency", "<", 0.0),
    Claim("imp-size", "4.2", "IMP gives no size improvement", "no size change", BERT_TASKS + GENERATION, "imp", "size",
          ">=", -1.0, note="squeeze stores pruned weights sparse (the paper could not save sparse weights in PyTorch)"),
    Claim("dq-quality", "4.3", "DQ: minor quality loss on the BERT tasks (at most about 1%)",
          "sentiment accuracy -0.51%, F1 -1.00%", BERT_TASKS, "dq", "quality", ">=", -1.0),
    Claim("dq-size-bert", "4.3", "DQ shrinks BERT-family models to 60% of their size", "60% (-40%)", BERT_TASKS, "dq",
          "size", "<=", -40.0, note="embeddings"),
    Claim("dq-size-gpt2", "4.3", "DQ shrinks GPT-2 to 57% of its size", "280 MB, 57% (-43%)", GENERATION, "dq", "size",
          "<=", -43.0),
    Claim("dq-latency", "4.3", "DQ speeds up CPU inference", "51.5% / 59.9% / 63.1% faster (Raspberry Pi)",
          BERT_TASKS + GENERATION, "dq", "latency", "<", 0.0,
          paper_by_task=((SENTIMENT, "51.50% faster"), (NER, "59.89% faster"), (GENERATION_TASK, "63.10% faster"))),
    Claim("dq-generation", "4.3", "DQ lowers generation's scores", "BLEU -12.10%", GENERATION, "dq", "bleu", "<", 0.0),
    Claim("dqimp-sentiment", "4.4", "DQ on the pruned model: a minor improvement on sentiment (vs IMP)",
          "accuracy 0.874 -> 0.883", (SENTIMENT,), "dq+imp", "quality", ">", 0.0, reference="imp"),
    Claim("dqimp-ner", "4.4", "DQ on the pruned model: a major decline on NER (vs IMP)", "F1 0.907 -> 0.775", (NER,),
          "dq+imp", "quality", "<", 0.0, reference="imp"),
    Claim("dq-energy", "4.5", "DQ needs no training energy (under 1% of the baseline's)", "null CO2",
          BERT_TASKS + GENERATION, "dq", "train", "<=", -99.0),
    Claim("pkd-energy", "4.5", "PKD spends less training energy than the baseline (sentiment, NER)", "lowest of all",
          BERT_TASKS, "pkd", "train", "<", 0.0),
    Claim("imp-prune-energy", "4.5", "IMP with its prune stage costs more energy than the baseline",
          "up to +342% CO2 (NER)", BERT_TASKS + GENERATION, "imp", "train+prune", ">", 0.0),
]

CROSS_TASK = ("dqimp-inconsistent", "4.4", "DQ's effect on the pruned models is inconsistent across tasks",
              "sentiment up, NER down, generation slightly down")


def _paper_metric_columns(df: pd.DataFrame, task: str) -> list[str]:
    from squeeze.registry import get_task

    try:
        names = list(dict(get_task(task).paper_metrics).values())
    except KeyError:
        names = []
    return [f"test/{m}" for m in names if f"test/{m}" in df] or [f"test/{primary(df, task)[0]}"]


def _energy_column(df: pd.DataFrame, task: str, techniques: list[str]) -> tuple[str, str]:
    col = training_energy(df[(df["task"] == task) & df["technique"].isin(techniques)])
    return col, "training kWh (measured)" if col.startswith("energy/") else "training time (no energy counter here)"


def _with_source(df: pd.DataFrame, column: str):
    """A trial's cost plus its source prune trial's (IMP's pruned start, paid before fine-tuning)."""
    by_id = df.set_index("run_id")

    def read(row, col):
        own = float(row.get(col, float("nan")))
        src = row.get("source_run")
        if isinstance(src, str) and src in by_id.index and by_id.at[src, "technique"] == "imp_prune":
            return own + float(by_id.at[src, col])
        return own
    return read


def _measure(df: pd.DataFrame, task: str, claim: Claim) -> tuple[Comparison, str]:
    q = claim.quantity
    if q == "quality":
        metrics = task_metrics(df, task)
        cols = _paper_metric_columns(df, task) if claim.metrics == ("paper",) else [f"test/{primary(df, task)[0]}"]
        modes = [metrics.get(c.removeprefix("test/"), "max") for c in cols]
        label = ("worst of " if len(cols) > 1 else "test ") + ", ".join(c.removeprefix("test/") for c in cols)
        return compare(df, task, claim.technique, claim.reference, cols, modes, reduce="worst"), label
    if q == "size":
        return compare(df, task, claim.technique, claim.reference, ["size/disk_mb"]), "size on disk"
    if q == "latency":
        return compare(df, task, claim.technique, claim.reference, ["latency/cpu_ms_per_example"]), "CPU ms/example"
    if q in ("train", "train+prune"):
        col, label = _energy_column(df, task, [claim.technique, claim.reference])
        value = _with_source(df, col) if q == "train+prune" else None
        return (compare(df, task, claim.technique, claim.reference, [col], value=value),
                label + (" incl. the prune stage" if value else ""))
    return compare(df, task, claim.technique, claim.reference, [f"test/{q}"]), f"test {q}"


def verdict(c: Comparison, op: str, threshold: float, min_units: int = MIN_UNITS) -> tuple[str, str]:
    """(verdict, why) by the module's rule."""
    if c.n == 0 or math.isnan(c.estimate):
        return "not measured", "no comparable trials"
    ok = OPS[op]
    lo, hi = (c.estimate, c.estimate) if math.isnan(c.low) else (c.low, c.high)
    outside = (hi < -threshold or lo > threshold) if op == "within" else not ok(lo, threshold) and not ok(hi, threshold)
    if ok(lo, threshold) and ok(hi, threshold):
        decided = "supported"
    elif outside:
        decided = "contradicted"
    else:
        bound = f"±{threshold:g}%" if op == "within" else f"{threshold:+g}%"
        return "inconclusive", f"the interval straddles {bound}"
    if c.n < min_units and not c.constant:
        return "inconclusive", f"leans {decided}, but on {c.units} (a decision needs {min_units})"
    return decided, "the whole interval " + ("satisfies" if decided == "supported" else "violates") + " the bound"


def ours(df: pd.DataFrame) -> dict[str, str]:
    """``{the paper's task: our task}`` for the tasks in ``df`` that declare one (``Task.paper_task``)."""
    from squeeze.registry import get_task

    out = {}
    for task in sorted(df["task"].dropna().unique()):
        try:
            paper_task = get_task(task).paper_task
        except KeyError:
            continue
        if paper_task:
            out.setdefault(paper_task, task)
    return out


def _present(df: pd.DataFrame, task: str, *techniques: str) -> bool:
    return all(len(_finished(df, task, t)) for t in techniques)


def claims_table(df: pd.DataFrame, min_units: int = MIN_UNITS) -> pd.DataFrame:
    """One row per claim x task the runs hold (a task they do not hold is left out; a technique they lack is "not
    measured"), and one across tasks when they hold several, in the paper's order."""
    rows = []
    here = ours(df)
    for claim in CLAIMS:
        for paper_task, task in ((t, here[t]) for t in claim.tasks if t in here):
            paper = dict(claim.paper_by_task).get(paper_task, claim.paper)
            base = {"claim": claim.id, "section": claim.section, "paper says": claim.text, "paper's figure": paper,
                    "task": task, "technique": claim.technique, "vs": claim.reference,
                    "rule": (f"|change| <= {claim.threshold:g}%" if claim.op == "within"
                             else f"change {claim.op} {claim.threshold:+g}%")}
            if not _present(df, task, claim.technique, claim.reference):
                rows.append({**base, "measured as": "", "ours": float("nan"), "95% interval": "n/a", "units": "",
                             "verdict": "not measured", "why": f"no finished {claim.technique} or {claim.reference} "
                             f"trials for {task}", "_low": float("nan"), "_high": float("nan")})
                continue
            c, label = _measure(df, task, claim)
            v, why = verdict(c, claim.op, claim.threshold, min_units)
            note = _note(df, task, claim) if v == "contradicted" else ""
            rows.append({**base, "measured as": label, "ours": c.estimate, "95% interval": c.interval, "units": c.units,
                         "verdict": v, "why": why + (f"; {note}" if note else ""), "_low": c.low, "_high": c.high})
    if len(here) > 1:
        rows.append(_cross_task(df, here, min_units))
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["claim", "verdict", "_low", "_high"])


def _note(df: pd.DataFrame, task: str, claim: Claim) -> str:
    """What differs from the paper's set-up where a claim is contradicted; ``embeddings``: how much of the reference
    model is embeddings, which DQ keeps in fp32 and PKD's student keeps whole (measured from the runs)."""
    if claim.note != "embeddings":
        return claim.note
    ref = df[(df["task"] == task) & (df["technique"] == claim.reference)]
    if "size/embeddings_mb" not in ref or ref.empty:
        return ""
    share = float((ref["size/embeddings_mb"] / ref["size/disk_mb"]).median())
    return f"embeddings are {share:.0%} of the {claim.reference}'s size here (about 21% of BERT-base's)"


def _cross_task(df: pd.DataFrame, here: dict[str, str], min_units: int) -> dict:
    """4.4: DQ's effect on the pruned model differs in sign between tasks: supported when two tasks' changes are
    decided with opposite signs, contradicted when every task's is decided with the same sign."""
    cid, section, text, paper = CROSS_TASK
    signs, parts = {}, []
    for task in (here[t] for t in BERT_TASKS + GENERATION if t in here):
        if not _present(df, task, "dq+imp", "imp"):
            continue
        c, _ = _measure(df, task, Claim(cid, section, text, paper, (task,), "dq+imp", "quality", ">", 0.0, "imp"))
        decided = c.n >= min_units or c.constant
        if decided and c.low > 0:
            signs[task] = 1
        elif decided and c.high < 0:
            signs[task] = -1
        else:
            signs[task] = 0
        parts.append(f"{task} {c.estimate:+.2f}% {c.interval} ({c.units})")
    if not parts:
        v, why = "not measured", "no task has both IMP and DQ+IMP trials"
    elif {1, -1} <= set(signs.values()):
        v, why = "supported", "decided changes of both signs"
    elif len(signs) > 1 and 0 not in signs.values() and len(set(signs.values())) == 1:
        v, why = "contradicted", "every task's change is decided with the same sign"
    else:
        v, why = "inconclusive", "no two tasks decided with opposite signs"
    return {"claim": cid, "section": section, "paper says": text, "paper's figure": paper, "task": "all",
            "technique": "dq+imp", "vs": "imp", "rule": "signs differ between tasks", "measured as": "primary metric",
            "ours": float("nan"), "95% interval": "; ".join(parts), "units": "", "verdict": v, "why": why,
            "_low": float("nan"), "_high": float("nan")}


def pass_fail(df: pd.DataFrame, fractions=(0.99, 0.999), min_units: int = MIN_UNITS) -> pd.DataFrame:
    """MLPerf-style: each technique's primary test metric as a fraction of the baseline's (for a lower-is-better
    metric, the baseline's over the technique's), with its 95% interval; a technique passes a fraction only if the
    interval's lower end reaches it, on at least ``min_units`` units (or a quantity with no spread)."""
    from analysis.tables import ORDER, report_tasks

    rows = []
    for task in report_tasks(df):
        name, mode = primary(df, task)
        techs = sorted(set(df.loc[(df["task"] == task) & (df["status"] == "FINISHED"), "technique"]) - {"baseline"},
                       key=lambda t: (ORDER.index(t) if t in ORDER else len(ORDER), t))
        for tech in techs:
            c = compare(df, task, tech, "baseline", [f"test/{name}"], [mode], reduce="worst")
            if c.n == 0:
                continue
            # the signed change is -(relative loss); as a fraction of the baseline: 1 + change/100 for "max"; for "min"
            # the ratio baseline/technique = 1 / (1 - change/100) (change = -(T/B - 1))
            frac = (lambda ch: 1 + ch / 100) if mode == "max" else (lambda ch: 1 / (1 - ch / 100))
            row = {"task": task, "technique": tech, "metric": name, "fraction": frac(c.estimate),
                   "low": frac(c.low), "high": frac(c.high), "units": c.units}
            enough = c.n >= min_units or c.constant
            for f in fractions:
                row[f"{f:.1%}".replace(".0%", "%")] = ("pass" if enough and row["low"] >= f else
                                                      "fail" if row["high"] < f or enough else "n/a")
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The claims table as Markdown (the rule is the module docstring's)."""
    cols = ["section", "paper says", "task", "paper's figure", "measured as", "ours", "95% interval", "units", "verdict",
            "why"]
    t = table[cols].copy()
    t["ours"] = t["ours"].map(lambda v: "" if isinstance(v, float) and math.isnan(v) else f"{v:+.2f}%")
    t["verdict"] = t["verdict"].map(lambda v: f"**{v}**" if v in ("supported", "contradicted") else v)
    return t.to_markdown(index=False)


def summary(table: pd.DataFrame) -> str:
    counts = table["verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in ("supported", "contradicted", "inconclusive", "not measured"))
