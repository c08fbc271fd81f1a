"""The report page: charts of one or several runs overlaid, and the tables beside them.

Every chart is drawn twice, against optimizer steps and against tokens seen, and a CSS-only
switch shows one of the two: the page has no script, no font and no link outside itself.
Several runs share each chart (one colour per run); a table lists the config keys they differ in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape
from typing import Callable

import numpy as np

from bertcli import __version__
from bertcli.report.runs import Run, flatten
from bertcli.report.svg import PALETTE, Series, legend, line_chart, thin

GENERATOR = "bertcli report"  # the marker a report file carries (see is_bertcli_report)
X_AXES = (("step", "optimizer step"), ("tokens_seen", "tokens seen"))
SENTENCE_TASKS = (("nsp", "next_sentence"), ("sop", "sentence_order"))  # train key stem, eval key stem


@dataclass(frozen=True)
class ChartSpec:
    title: str
    train: tuple[str, ...] = ()  # training-record keys (the first present in a run is drawn)
    eval: tuple[str, ...] = ()  # eval-record keys
    baseline: tuple[str, ...] = ()  # eval-record keys of the baseline
    percent: bool = False
    y_floor: float | None = None


CHARTS = (
    ChartSpec("Loss (total)", ("loss",), ("eval/loss",), y_floor=0.0),
    ChartSpec("Masked-LM loss", ("mlm_loss",), ("eval/masked_lm_loss",), y_floor=0.0),
    ChartSpec("Sentence-task loss (NSP or SOP)", ("nsp_loss", "sop_loss"),
              ("eval/next_sentence_loss", "eval/sentence_order_loss"), y_floor=0.0),
    ChartSpec("Masked-LM accuracy", ("mlm_accuracy",), ("eval/masked_lm_accuracy",),
              ("eval/baseline_masked_lm_accuracy",), percent=True, y_floor=0.0),
    ChartSpec("Sentence-task accuracy (NSP or SOP)", ("nsp_accuracy", "sop_accuracy"),
              ("eval/next_sentence_accuracy", "eval/sentence_order_accuracy"),
              ("eval/baseline_next_sentence_accuracy", "eval/baseline_sentence_order_accuracy"), percent=True),
    ChartSpec("Learning rate", ("lr",), y_floor=0.0),
    ChartSpec("Gradient norm", ("grad_norm",), y_floor=0.0),
    ChartSpec("Tokens per second", ("tokens_per_second",), y_floor=0.0),
    ChartSpec("MFU (model FLOPs utilisation)", ("mfu",), percent=True, y_floor=0.0),
    ChartSpec("Peak memory (MB)", ("peak_memory_mb",), y_floor=0.0),
)


# ---- chart data: pure functions of the records ---------------------------------------------------


def segments(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The runs of points where both x and y are finite: a record without the key (NaN in its
    column) or with a non-finite value ends a run, so the chart shows the gap instead of drawing across it."""
    ok = np.isfinite(x) & np.isfinite(y)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))  # starts and ends, in pairs
    return [(x[a:b], y[a:b]) for a, b in zip(edges[::2], edges[1::2])]


def step_to_tokens(run: Run) -> Callable[[np.ndarray], np.ndarray]:
    """steps → tokens seen, from the training records (linear between logged steps, NaN outside them)."""
    steps, tokens = run.column("step"), run.column("tokens_seen")
    ok = np.isfinite(tokens)
    steps, tokens = steps[ok], tokens[ok]

    def lookup(at: np.ndarray) -> np.ndarray:
        if not len(steps):
            return np.full(len(at), np.nan)
        return np.interp(at, steps, tokens, left=np.nan, right=np.nan)

    return lookup


def first_key(present: set[str], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in present), None)


def chart_series(spec: ChartSpec, runs: list[Run], x: str) -> list[Series]:
    """The (thinned) series of one chart against x (step or tokens_seen), every run."""
    series = []
    several = len(runs) > 1
    lo, hi = _x_extent(runs, x)
    for n, run in enumerate(runs):
        color = PALETTE[n % len(PALETTE)]
        prefix = f"{run.name} · " if several else ""
        meta = lambda key: {"run": run.name, "key": key}  # noqa: E731
        if (key := first_key(run.train_keys, spec.train)) is not None:
            segs = [list(zip(*_lists(sx[kept], sy[kept])))
                    for sx, sy in segments(run.column(x), run.column(key)) for kept in [thin(sx, sy, lo, hi)]]
            series.append(Series(f"{prefix}train {_short(key)}", segs, color, meta=meta(key)))
        eval_x = run.column("step", evals=True)
        if x != "step":
            eval_x = step_to_tokens(run)(eval_x)
        if (key := first_key(run.eval_keys, spec.eval)) is not None:
            points = [p for sx, sy in segments(eval_x, run.column(key, evals=True)) for p in zip(*_lists(sx, sy))]
            series.append(Series(f"{prefix}eval {_short(key)}", [[p] for p in points], color, "points", meta(key)))
        extent = _x_extent([run], x)
        if not np.isfinite(extent[0]):
            continue
        if (key := first_key(run.eval_keys, spec.baseline)) is not None:
            values = run.column(key, evals=True)
            value = float(values[np.isfinite(values)][-1])  # the latest evaluation's
            series.append(Series(f"{prefix}baseline {_short(key).removeprefix('baseline_')} (eval)",
                                 [[(extent[0], value), (extent[1], value)]], color, "dashed", meta(key)))
        elif spec.baseline and (value := _majority_share(run)) is not None and spec.train[0] == "nsp_accuracy":
            series.append(Series(f"{prefix}baseline (train split's majority label)",
                                 [[(extent[0], value), (extent[1], value)]], color, "dashed", meta("manifest/majority_share")))
    return series


def _lists(x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
    """Python numbers (ints where the column is whole: steps and token counts stay exact)."""
    as_list = lambda a: a.astype(np.int64).tolist() if np.all(a == np.round(a)) and np.all(np.abs(a) < 2 ** 53) else a.tolist()  # noqa: E731
    return as_list(x), y.tolist()


def _short(key: str) -> str:
    return key.removeprefix("eval/")


def _x_extent(runs: list[Run], x: str) -> tuple[float, float]:
    """The x range of the runs' records (NaN, NaN when there are none)."""
    values = []
    for run in runs:
        steps = np.concatenate([run.column("step"), run.column("step", evals=True)])
        values.append(steps if x == "step" else step_to_tokens(run)(steps))
    values = np.concatenate(values) if values else np.array([])
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if len(values) else (float("nan"), float("nan"))


def _majority_share(run: Run) -> float | None:
    """Before any evaluation: the sentence task's majority share in the training split (make-data's stats)."""
    stats = _dig(run.manifest, ("splits", "train", "stats")) or {}
    share = stats.get("random_next_fraction", stats.get("swapped_fraction"))
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        return None
    return max(share, 1 - share)


# ---- the page ------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:0 0 4px}.muted{color:#666}.note{color:#8a5a00}
.charts{display:flex;flex-wrap:wrap;gap:18px}figure{margin:0;width:560px}
svg .plot{fill:#fafafa;stroke:#bbb}svg .grid{stroke:#e6e6e6}svg .tick{font-size:11px;fill:#555}svg .axis{font-size:12px;fill:#333}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin-top:2px}.empty{width:560px;height:80px;border:1px dashed #ccc;
display:flex;align-items:center;justify-content:center;color:#777}
table{border-collapse:collapse;font-size:13px;margin:4px 0 12px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
.switch{margin:10px 0}.switch label{margin-left:10px;cursor:pointer;padding:2px 8px;border:1px solid #ccc;border-radius:4px}
#x-step:checked~main label[for=x-step],#x-tokens_seen:checked~main label[for=x-tokens_seen]{background:#1f77b4;color:#fff}
#x-step:checked~main .by-tokens_seen{display:none}#x-tokens_seen:checked~main .by-step{display:none}
details{margin:6px 0}summary{cursor:pointer}
"""


def render(runs: list[Run]) -> str:
    """The whole report as one HTML document."""
    pretraining = [r for r in runs if r.has_metrics or r.config]
    title = "bertcli report: " + ", ".join(r.name for r in runs)
    body = [f"<h1>{escape(title)}</h1>",
            f'<p class="muted">made by bertcli {escape(__version__)} on '
            f'{dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} from {len(runs)} run(s); '
            "reload after rerunning <code>bertcli report</code> (pretrain rewrites its own at every checkpoint)</p>"]
    body.append(_summary_table(runs))
    for run in runs:
        for note in run.notes:
            body.append(f'<p class="note">{escape(run.name)}: {escape(note)}</p>')
    if pretraining:
        body.append('<h2>Training curves</h2><div class="switch">x axis: <label for="x-step">optimizer step</label>'
                    '<label for="x-tokens_seen">tokens seen</label></div>')
        body.append(_charts(pretraining))
        body.append("<h2>Evaluations</h2>" + "".join(_eval_table(r) for r in pretraining))
        body.append("<h2>Data</h2>" + "".join(_data_table(r) for r in pretraining))
        body.append("<h2>Config</h2>" + _config_section(pretraining))
    if any(r.results for r in runs):
        body.append("<h2>Fine-tuning and GLUE results</h2>" + "".join(_results(r) for r in runs))
    # the switch's radio inputs precede <main>: the CSS sibling selector shows one x axis
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>" + _switch_inputs(bool(pretraining)) + "<main>" + "".join(body) + "</main></body></html>\n")


def _switch_inputs(shown: bool) -> str:
    if not shown:
        return ""
    return '<input type="radio" name="x" id="x-step" checked hidden><input type="radio" name="x" id="x-tokens_seen" hidden>'


def _charts(runs: list[Run]) -> str:
    out = ['<div class="charts">']
    for spec in CHARTS:
        out.append(f"<figure><h3>{escape(spec.title)}</h3>")
        for x, label in X_AXES:
            series = chart_series(spec, runs, x)
            if any(s.points for s in series):
                out.append(f'<div class="by-{x}">{line_chart(series, label, spec.percent, spec.y_floor)}{legend(series)}</div>')
            else:
                what = ", ".join(spec.train + spec.eval)
                out.append(f'<div class="by-{x} empty">not in these runs\' metrics.jsonl ({escape(what)})</div>')
        out.append("</figure>")
    out.append("</div>")
    return "".join(out)


def _cell(v) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, (str, list, dict)):
        return f"<td>{escape(str(v))}</td>"
    if isinstance(v, int):
        return f'<td class="n">{v:,}</td>'
    return f'<td class="n">{v:.4g}</td>' if abs(v) < 1e-3 or abs(v) >= 1e5 else f'<td class="n">{v:.4f}</td>'


def _count(v) -> str:
    return f'<td class="n">{v:,.0f}</td>' if isinstance(v, (int, float)) else "<td></td>"


def _summary_table(runs: list[Run]) -> str:
    rows = ["<table><tr><th>run</th><th>directory</th><th>objective</th><th>last step</th><th>of</th>"
            "<th>tokens seen</th><th>time</th><th>last tokens/s</th><th>last MFU</th><th>peak memory (MB)</th></tr>"]
    for run in runs:
        last = run.train[-1] if run.train else {}
        max_steps = run.config.get("train", {}).get("max_steps") if isinstance(run.config.get("train"), dict) else None
        objective = ((run.manifest or {}).get("options") or {}).get("objective", "")
        mfu = f"{last['mfu']:.1%}" if "mfu" in last else ""
        elapsed = f"{last['elapsed']:.0f} s" if "elapsed" in last else ""
        rows.append(f"<tr><td>{escape(run.name)}</td><td>{escape(str(run.path))}</td><td>{escape(str(objective))}</td>"
                    f"{_count(last.get('step'))}{_count(max_steps)}{_count(last.get('tokens_seen'))}<td>{elapsed}</td>"
                    f"{_count(last.get('tokens_per_second'))}<td>{mfu}</td>"
                    f"{_count(max((r['peak_memory_mb'] for r in run.train if 'peak_memory_mb' in r), default=None))}</tr>")
    rows.append("</table>")
    return "".join(rows)


EVAL_ORDER = ("masked_lm_accuracy", "baseline_masked_lm_accuracy", "masked_lm_loss", "perplexity",
              "next_sentence_accuracy", "baseline_next_sentence_accuracy", "next_sentence_loss",
              "sentence_order_accuracy", "baseline_sentence_order_accuracy", "sentence_order_loss",
              "loss", "examples", "masked_tokens")


def _eval_table(run: Run) -> str:
    if not run.evals:
        return f"<h3>{escape(run.name)}</h3><p class=\"muted\">no evaluation logged yet (system.eval_interval; the " \
               "final one is logged when the run ends)</p>"
    keys = sorted({k.removeprefix("eval/") for r in run.evals for k in r if k.startswith("eval/")},
                  key=lambda k: (EVAL_ORDER.index(k) if k in EVAL_ORDER else len(EVAL_ORDER), k))
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    rows = "".join("<tr>" + _cell(r["step"]) + "".join(_cell(r.get(f"eval/{k}", "")) for k in keys) + "</tr>"
                   for r in run.evals)
    return f"<h3>{escape(run.name)}</h3><table><tr><th>step</th>{head}</tr>{rows}</table>"


DATA_ROWS = (("documents", ("documents",)), ("instances", ("instances",)), ("tokens", ("tokens",)),
             ("random-next share", ("stats", "random_next_fraction")), ("swapped share", ("stats", "swapped_fraction")),
             ("documents per sequence", ("stats", "documents_per_sequence")), ("mean length", ("stats", "mean_length")),
             ("padding share", ("stats", "padding_fraction")), ("masked per instance", ("stats", "masked_per_instance")),
             ("masked share of tokens", ("stats", "masked_fraction")), ("truncated long sentences", ("stats", "long_sentences")))


def _dig(obj, path):
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _data_table(run: Run) -> str:
    head = f"<h3>{escape(run.name)}</h3>"
    m = run.manifest
    if m is None:
        return head + '<p class="muted">no manifest found (see the note above)</p>'
    splits = m.get("splits") if isinstance(m.get("splits"), dict) else {}
    options = m.get("options") if isinstance(m.get("options"), dict) else {}
    out = [head, f'<p class="muted">{escape(str(run.manifest_path))} · objective {escape(str(options.get("objective", "nsp")))}'
                 f' · max_seq_length {escape(str(options.get("max_seq_length", "?")))} · dupe factor '
                 f'{escape(str(options.get("dupe_factor", "?")))}</p>',
           "<table><tr><th></th>" + "".join(f"<th>{escape(str(s))}</th>" for s in splits) + "</tr>"]
    for label, path in DATA_ROWS:
        values = [_dig(s, path) for s in splits.values()]
        if any(v is not None for v in values):
            out.append(f"<tr><td>{escape(label)}</td>" + "".join(_cell(v if v is not None else "") for v in values) + "</tr>")
    out.append("</table>")
    warnings = m.get("warnings")
    if isinstance(warnings, list) and warnings:
        out.append("<p>make-data warnings:</p><ul>" + "".join(f"<li>{escape(str(w))}</li>" for w in warnings) + "</ul>")
    elif isinstance(warnings, list):
        out.append('<p class="muted">make-data raised no warnings</p>')
    else:
        out.append('<p class="muted">this manifest does not record make-data\'s warnings (made by an older bertcli)</p>')
    return "".join(out)


def _config_section(runs: list[Run]) -> str:
    flats = [flatten(r.config) for r in runs]
    out = []
    if len(runs) > 1:
        keys = sorted({k for f in flats for k in f})
        differ = [k for k in keys if len({repr(f.get(k, "—")) for f in flats}) > 1]
        if differ:
            out.append("<h3>Keys that differ</h3><table><tr><th>key</th>" +
                       "".join(f"<th>{escape(r.name)}</th>" for r in runs) + "</tr>")
            out += ["<tr><td>" + escape(k) + "</td>" + "".join(_cell(f.get(k, "—")) for f in flats) + "</tr>" for k in differ]
            out.append("</table>")
        else:
            out.append('<p class="muted">the runs\' configs are the same</p>')
    for run, flat in zip(runs, flats):
        rows = "".join(f"<tr><td>{escape(k)}</td>{_cell(v)}</tr>" for k, v in flat.items())
        out.append(f"<details{' open' if len(runs) == 1 else ''}><summary>{escape(run.name)}: resolved config "
                   f"({len(flat)} keys)</summary><table>{rows}</table></details>")
    return "".join(out)


def _results(run: Run) -> str:
    out = []
    for res in run.results:
        d = res.data
        tasks = d.get("tasks", {})
        metrics = sorted({m for t in tasks.values() if isinstance(t, dict) for m in t})
        rows = "".join(f"<tr><td>{escape(str(task))}</td>" +
                       "".join(_cell(t.get(m, "")) if isinstance(t, dict) else "<td></td>" for m in metrics) + "</tr>"
                       for task, t in tasks.items())
        score = d.get("score")
        out.append(f"<h3>{escape(run.name)}: {escape(str(d.get('command')))}</h3>"
                   f'<p class="muted">{escape(str(res.path))} · model {escape(str(d.get("model", "?")))} · '
                   f'medians over {escape(str(d.get("seeds", "?")))} seed(s)'
                   + (f" · score {score:.4f}" if isinstance(score, (int, float)) and not isinstance(score, bool) else "")
                   + "</p><table><tr><th>task</th>" + "".join(f"<th>{escape(m)}</th>" for m in metrics) + f"</tr>{rows}</table>")
    return "".join(out)
