"""`bertcli report`: what each chart draws equals metrics.jsonl, the page stands alone, and no
file bertcli did not write is replaced. Runs are read as they lie on disk: finished, in progress
(a torn last line), with gaps, of two objectives, copied without their data, and of 10^5 records."""

import json
import re
import shutil

import numpy as np
import pytest
import yaml

from bertcli.errors import UsageError
from bertcli.fsutil import read_owner
from bertcli.report import REPORT_FILE, is_bertcli_report, write_report, write_run_report
from bertcli.report.svg import thin

SVG = re.compile(r'<div class="by-(\w+)"><svg ([^>]*)>(.*?)</svg>')
PATH = re.compile(r'<path d="([^"]*)"[^>]*?data-run="([^"]*)" data-key="([^"]*)"')
POINTS = re.compile(r'<g fill="[^"]*" class="points" data-run="([^"]*)" data-key="([^"]*)">(.*?)</g>')
CIRCLE = re.compile(r'cx="([-\d.]+)" cy="([-\d.]+)"')


def drawn(html: str, axis: str = "step") -> dict:
    """{(run, key): [segments of (x, y)]} read back from every chart's pixels through its data-* mapping."""
    found: dict = {}
    for x_axis, attrs, body in SVG.findall(html):
        if x_axis != axis:
            continue
        a = dict(re.findall(r'data-([\w-]+)="([^"]*)"', attrs))
        x0, x1, y0, y1 = (float(a[k]) for k in ("x0", "x1", "y0", "y1"))
        left, top, w, h = map(float, a["box"].split())

        def back(px, py):
            return x0 + (float(px) - left) / w * (x1 - x0), y0 + (top + h - float(py)) / h * (y1 - y0)

        for d, run, key in PATH.findall(body):
            segs = [[back(*xy.split(",")) for xy in seg.replace("L", " ").split()] for seg in d.split("M") if seg.strip()]
            found[(run, key)] = segs
        for run, key, dots in POINTS.findall(body):
            found[(run, key)] = [[back(px, py)] for px, py in CIRCLE.findall(dots)]
    return found


def close(drawn_points, expected, x_span, y_span):
    """Equal up to the 0.1-pixel rounding of the drawing."""
    assert len(drawn_points) == len(expected)
    for (x, y), (ex, ey) in zip(drawn_points, expected):
        assert x == pytest.approx(ex, abs=x_span * 1e-3) and y == pytest.approx(ey, abs=y_span * 2e-3)


def spans(values):
    return (max(values) - min(values)) or 1.0


def write_run(path, records, config=None, manifest=None):
    path.mkdir(parents=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (path / "config.yaml").write_text(yaml.safe_dump(config or {"train": {"max_steps": 100}, "data": {"dir": "nowhere"}}))
    return path


def record(step, **kw):
    return {"step": step, "tokens_seen": 100 * step, **kw}


def test_finished_run_charts_equal_metrics_jsonl(trained_run, tmp_path):
    html = (trained_run / REPORT_FILE).read_text()  # pretrain wrote it at the end
    assert is_bertcli_report(trained_run / REPORT_FILE)
    assert REPORT_FILE in read_owner(trained_run)["files"]  # the run's own: --overwrite may replace it
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    assert train and evals
    charts = drawn(html)
    for key in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "lr", "grad_norm",
                "tokens_per_second", "mfu", "peak_memory_mb"):
        expected = [(r["step"], r[key]) for r in train]
        [segment] = charts[("run", key)]
        close(segment, expected, spans([r["step"] for r in train]), spans([v for _, v in expected]))
    for key in ("eval/loss", "eval/masked_lm_accuracy", "eval/next_sentence_accuracy"):
        got = [p for seg in charts[("run", key)] for p in seg]
        assert [round(x) for x, _ in got] == [r["step"] for r in evals]
    baseline = charts[("run", "eval/baseline_masked_lm_accuracy")][0]
    assert {round(y, 3) for _, y in baseline} == {round(evals[-1]["eval/baseline_masked_lm_accuracy"], 3)}
    by_tokens = drawn(html, "tokens_seen")
    [segment] = by_tokens[("run", "loss")]
    close(segment, [(r["tokens_seen"], r["loss"]) for r in train], spans([r["tokens_seen"] for r in train]),
          spans([r["loss"] for r in train]))
    assert "resolved config" in html and "masked share of tokens" in html  # config and data summary beside


def test_page_references_nothing_outside_itself(trained_run):
    html = (trained_run / REPORT_FILE).read_text()
    assert not re.search(r"https?:|//[\w.-]+\.\w|url\(|@import|<script|<link|<img|<iframe|\bsrc=", html, re.I)


def test_run_in_progress_with_a_torn_last_line(trained_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)  # a copied run: its data directory is not beside it
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "loss": 1.2')  # the trainer is writing this line right now
    out = write_report([run], tmp_path / "r.html")
    html = out.read_text()
    assert "last line is incomplete" in html
    train = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in train if "loss" in r]
    assert [round(x) for x, _ in drawn(html)[("copy", "loss")][0]] == steps


def test_records_with_gaps_break_the_line(tmp_path):
    records = [record(1, loss=3.0, nsp_accuracy=0.5), record(2, loss=2.5), record(3, loss=2.0, nsp_accuracy=0.6),
               record(4, loss=float("nan"), nsp_accuracy=0.7), record(5, loss=1.5, nsp_accuracy=0.8), "not json",
               {"step": 6, "eval/masked_lm_accuracy": 0.2}]
    run = write_run(tmp_path / "gappy", records)
    html = write_report([run], tmp_path / "r.html").read_text()
    charts = drawn(html)
    assert [[round(x) for x, _ in seg] for seg in charts[("gappy", "loss")]] == [[1, 2, 3], [5]]
    assert [[round(x) for x, _ in seg] for seg in charts[("gappy", "nsp_accuracy")]] == [[1], [3, 4, 5]]
    assert "1 line(s) are not metric records" in html
    assert "not in these runs' metrics.jsonl" in html  # mfu and the others: never logged here
    assert "data.dir) was not found" in html


def test_one_logged_step(tmp_path):
    run = write_run(tmp_path / "one", [record(1, loss=9.0, mlm_accuracy=0.01, lr=1e-4)])
    html = write_report([run], tmp_path / "r.html").read_text()
    [[(x, y)]] = drawn(html)[("one", "loss")]
    assert round(x) == 1 and y == pytest.approx(9.0, rel=1e-3)


def test_two_objectives_overlaid_with_the_keys_that_differ(tmp_path):
    nsp = write_run(tmp_path / "nsp", [record(s, loss=5.0 - s / 10, nsp_accuracy=0.5 + s / 100) for s in range(1, 21)],
                    {"train": {"max_steps": 20, "learning_rate": 1e-3}, "data": {"dir": "a"}})
    sop = write_run(tmp_path / "sop", [record(s, loss=5.5 - s / 10, sop_accuracy=0.5 + s / 50) for s in range(1, 31)]
                    + [{"step": 30, "eval/sentence_order_accuracy": 0.9, "eval/baseline_sentence_order_accuracy": 0.5}],
                    {"train": {"max_steps": 30, "learning_rate": 1e-3}, "data": {"dir": "b"}})
    html = write_report([nsp, sop], tmp_path / "both.html").read_text()
    charts = drawn(html)
    assert len(charts[("nsp", "nsp_accuracy")][0]) == 20 and len(charts[("sop", "sop_accuracy")][0]) == 30
    assert ("sop", "eval/sentence_order_accuracy") in charts and ("sop", "eval/baseline_sentence_order_accuracy") in charts
    differ = html[html.index("Keys that differ"):html.index("resolved config")]
    assert "train.max_steps" in differ and "data.dir" in differ and "learning_rate" not in differ


def test_thinning_keeps_every_extreme_and_the_last_point():
    x = np.arange(100_000, dtype=float)
    y = (x * 7919) % 1000
    y[54_321] = 5000.0  # a spike
    kept = thin(x, y, 0.0, 99_999.0)
    assert len(kept) <= 4 * 400 and np.all(np.diff(kept) > 0)  # indices of logged points, in order
    assert {0, 99_999, 54_321} <= set(kept.tolist())
    for bucket in range(400):  # every slice keeps its own lowest and highest
        inside = np.flatnonzero((x * 400 / 99_999).astype(int).clip(0, 399) == bucket)
        assert y[inside].min() == y[kept[np.isin(kept, inside)]].min()
        assert y[inside].max() == y[kept[np.isin(kept, inside)]].max()
    assert len(thin(x[:100], y[:100], 0.0, 99.0)) == 100  # a short series is drawn whole


def test_hundred_thousand_records(tmp_path):
    records = [record(s, loss=10.0 / (1 + s / 1000) + (3.0 if s == 77_777 else 0.0), lr=1e-4) for s in range(1, 100_001)]
    run = write_run(tmp_path / "long", records)
    out = write_report([run], tmp_path / "r.html")
    assert out.stat().st_size < 3_000_000
    [segment] = drawn(out.read_text())[("long", "loss")]
    assert len(segment) <= 1600
    losses = {r["step"]: r["loss"] for r in records}
    for x, y in segment:  # every drawn vertex is a logged record (x read back to ±25 steps: 0.1 px)
        near = [losses[s] for s in range(max(1, round(x) - 25), min(100_000, round(x) + 25) + 1)]
        assert min(abs(v - y) for v in near) < 0.02
    assert max(y for _, y in segment) == pytest.approx(max(losses.values()), abs=0.02)
    spike = losses[77_777]
    assert any(abs(x - 77_777) <= 25 and y == pytest.approx(spike, abs=0.02) for x, y in segment)  # kept by thinning
    assert round(segment[-1][0]) == 100_000


def test_finetune_results_are_shown(tmp_path):
    run = write_run(tmp_path / "run", [record(1, loss=3.0)])
    (run / "glue").mkdir()
    (run / "glue" / "results.json").write_text(json.dumps({"command": "glue", "model": "run", "seeds": 3, "score": 0.71,
                                                           "tasks": {"sst2": {"accuracy": 0.81}, "cola": {"mcc": 0.2}}}))
    html = write_report([run], tmp_path / "r.html").read_text()
    assert "Fine-tuning and GLUE results" in html and "sst2" in html and "0.8100" in html and "score 0.7100" in html


def test_never_replaces_a_file_it_did_not_write(trained_run, tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(UsageError, match="not a report bertcli wrote"):
        write_report([trained_run], mine)
    assert mine.read_text() == "<p>my notes</p>"
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / REPORT_FILE).write_text("the user's own file")
    assert write_run_report(run) is None  # pretrain's hook leaves it alone
    assert (run / REPORT_FILE).read_text() == "the user's own file"
    ours = write_report([trained_run], tmp_path / "again.html")
    assert write_report([trained_run], ours) == ours  # a report of ours is rewritten


def test_cli_errors(cli, trained_run, tmp_path):
    code, _, err = cli("report", tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    code, _, err = cli("report", trained_run, trained_run)
    assert code == 2 and "--out" in err
    code, _, err = cli("report", trained_run, "--out", tmp_path / "r.html")
    assert code == 0 and "report written to" in err and (tmp_path / "r.html").is_file()
