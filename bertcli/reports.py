"""Rich summaries printed at the end of each command (on stderr, via the shared console)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from bertcli.console import console, warn


def print_tokenize_report(report, out: Path) -> None:
    for message in report.warnings:
        warn(message)
    table = Table(title=f"tokenizer written to {out}", show_header=False, title_justify="left")
    table.add_row("vocab size", f"{report.vocab_size:,}")
    table.add_row("sentences seen / sampled", f"{report.sentences_seen:,} / {report.sentences_sampled:,}")
    table.add_row("training time", f"{report.seconds:.1f} s")
    table.add_row("pieces per word", f"{report.pieces_per_word:.2f}")
    for text, pieces in report.samples:
        table.add_row("sample", f"{text[:60]}\n[dim]{' '.join(pieces[:24])}[/dim]")
    console.print(table)


def print_adopt_report(summary: dict, out: Path) -> None:
    table = Table(title=f"tokenizer written to {out}", show_header=False, title_justify="left")
    table.add_row("adopted from", summary["source"])
    table.add_row("vocab size", f"{summary['vocab_size']:,}")
    if "lowercase" in summary:  # WordPiece; an adopted tokenizers pipeline normalises as its file says
        table.add_row("case", "uncased (lowercase)" if summary["lowercase"] else "cased")
    table.add_row("special ids", " ".join(f"{k}={v}" for k, v in summary["special_ids"].items()))
    if summary["added_words"] or summary["known_words"]:
        table.add_row("added words", f"{len(summary['added_words'])} into [unused] slots, "
                                     f"{len(summary['known_words'])} already in the vocabulary")
    console.print(table)


def print_make_data_report(manifest: dict, out: Path) -> None:
    objective = manifest["options"].get("objective", "nsp")
    table = Table(title=f"{objective} pretraining data written to {out}", title_justify="left")
    table.add_column("")
    for split in manifest["splits"]:
        table.add_column(split, justify="right")
    splits = list(manifest["splits"].values())
    rows = [
        ("documents", lambda s: f"{s['documents']:,}"),
        ("instances", lambda s: f"{s['instances']:,}"),
        ("tokens", lambda s: f"{s['tokens']:,}"),
        ("shards", lambda s: f"{len(s['shards'])}"),
        ("random-next share", lambda s: f"{s['stats']['random_next_fraction']:.3f}"),
        ("swapped share", lambda s: f"{s['stats']['swapped_fraction']:.3f}"),
        ("documents per sequence", lambda s: f"{s['stats']['documents_per_sequence']:.2f}"),
        ("mean length", lambda s: f"{s['stats']['mean_length']:.1f}"),
        ("padding share", lambda s: f"{s['stats']['padding_fraction']:.3f}"),
        ("masked per instance", lambda s: f"{s['stats']['masked_per_instance']:.2f}"),
        ("masked share of tokens", lambda s: f"{s['stats']['masked_fraction']:.3f}"),
        ("fallback / dropped pairs", lambda s: f"{s['stats']['fallback_pairs']} / {s['stats']['dropped_pairs']}"),
        ("dropped chunks", lambda s: f"{s['stats']['dropped_pairs']}" if "fallback_pairs" not in s["stats"] else None),
    ]
    for name, cell in rows:
        try:  # each objective reports the stats that apply to it (see the manifest's stats)
            cells = [cell(s) for s in splits]
        except KeyError:
            continue
        if None not in cells:
            table.add_row(name, *cells)
    console.print(table)
    mb = manifest["input_bytes"] / 1e6
    console.print(f"{mb:.1f} MB of text in {manifest['seconds']:.1f} s ({mb / max(manifest['seconds'], 1e-9):.2f} MB/s)")


EVAL_ROWS = ("masked_lm_accuracy", "baseline_masked_lm_accuracy", "masked_lm_loss", "perplexity",
             "next_sentence_accuracy", "baseline_next_sentence_accuracy", "next_sentence_loss",
             "sentence_order_accuracy", "baseline_sentence_order_accuracy", "sentence_order_loss", "loss",
             "examples", "masked_tokens", "global_step")


def print_eval_table(metrics: dict, split: str) -> None:
    table = Table(title=f"eval on {split}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in EVAL_ROWS:
        if key in metrics:
            value = metrics[key]
            table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
    console.print(table)


def print_pretrain_summary(summary: dict) -> None:
    console.print(f"[bold]done[/bold]: {summary['step']} steps, {summary['tokens_seen']:,} tokens in "
                  f"{summary['elapsed']:.0f} s; run in {summary['run_dir']}")
    if summary.get("eval"):
        print_eval_table({**summary["eval"], "global_step": summary["step"]}, "validation")
    if summary.get("report"):
        from rich.markup import escape

        console.print(f"report: {escape(summary['report'])} (open it in a browser)")


def print_export_summary(summary: dict) -> None:
    from rich.markup import escape

    console.print(f"[bold]exported[/bold] {escape(summary['checkpoint'])} (step {summary['step']:,}, "
                  f"{summary['parameters']:,} parameters, {summary['dtype']}, vocab {summary['vocab_size']:,}) to "
                  f"{escape(summary['out'])} ({summary['bytes'] / 1e6:.1f} MB); load it with transformers' "
                  f"AutoModelForPreTraining / AutoModelForMaskedLM and AutoTokenizer .from_pretrained")


def print_predictions(results: list[dict]) -> None:
    """One table per text: each [MASK]'s top tokens with probabilities, then P(is next)."""
    from rich.markup import escape

    for n, result in enumerate(results, 1):
        # user text and pieces such as "[SEP]" would read as rich markup: escape them
        title = escape(f"{n}. {result['text']}" + (f"  ‖  {result['next']}" if result["next"] is not None else ""))
        table = Table(title=title, title_justify="left", caption=escape(f"→ {result['filled']}"), caption_justify="left")
        table.add_column(escape("[MASK]"), justify="right")
        k = max((len(m["predictions"]) for m in result["masks"]), default=0)
        for rank in range(k):
            table.add_column(f"#{rank + 1}")
        for slot, mask in enumerate(result["masks"], 1):
            # the word each piece makes in its place ("##ing" after "walk": walking); --json keeps the raw pieces
            table.add_row(str(slot), *(f"{escape(p.get('word', p['token']))} [dim]{p['probability']:.3f}[/dim]"
                                       for p in mask["predictions"]))
        if result["masks"]:
            console.print(table)
        else:
            console.print(f"[bold]{title}[/bold]")
        if "is_next_probability" in result:
            console.print(f"P(is next) = {result['is_next_probability']:.3f}")
