"""The command line: one thin function per subcommand, argument handling only.

Each command builds an options object and calls into the package; expected failures come back
as `BertcliError` and are printed as one red line with the error's exit code (2 for usage and
config, 1 at run time, 130 on Ctrl-C).
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from bertcli import __version__
from bertcli.bounds import check_options, check_out_name
from bertcli.console import console, error_line
from bertcli.errors import BertcliError, UsageError
from bertcli.limits import MASKED_LM_PROB_RANGE
from bertcli.make_data.options import SHORT_SEQ_PROB, MakeDataOptions
from bertcli.make_data.options import default as _MD
from bertcli.stopping import terminate_like_ctrl_c

TOKENIZER_PANEL, DATA_PANEL, RUN_PANEL, SWITCHES_PANEL, INPUT_PANEL = "Tokenizer", "Data", "Run", "Switches", "Input"
FLAG = ""  # metavar of an on/off flag: no "<bool>" that reads as if it took a value
PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
TORCH_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16"}


def _as_flag(option):
    if option is not None:
        option.metavar = FLAG
    return option


class _Group(TyperGroup):
    """Typer's group, showing -h/--help as the flag it is (no "<bool>") on every command."""

    def get_help_option(self, ctx):
        return _as_flag(super().get_help_option(ctx))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _as_flag(command.get_help_option(ctx))
        return command


app = typer.Typer(
    name="bertcli",
    cls=_Group,
    help="Pretrain BERT from raw text: [bold]tokenize[/bold] → [bold]make-data[/bold] → [bold]pretrain[/bold] → [bold]eval[/bold]; then [bold]export[/bold] to Hugging Face or try it with [bold]predict[/bold].",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
)

USER_OS_ERRORS = {errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ELOOP}


def _precision(value: str) -> str:
    """One spelling for precisions (fp32|bf16|fp16); torch's names are accepted as aliases."""
    return PRECISION_ALIASES.get(value, value)


INPUT_HELP = ("Files, directories (their *.txt, *.jsonl, *.json, *.parquet, recursively) or globs; "
              ".gz/.bz2/.xz/.zst are read transparently.")


def _reader_options(input_format, text_field, document_per_file, sentence_splitter, language, encoding,
                    dataset, dataset_config, dataset_split):
    from bertcli.readers.base import ReaderOptions
    from bertcli.readers.streams import check_encoding

    check_encoding(encoding)
    return ReaderOptions(input_format=input_format, text_field=text_field, document_per_file=document_per_file,
                         sentence_splitter=sentence_splitter, language=language, encoding=encoding, dataset=dataset,
                         dataset_config=dataset_config, dataset_split=dataset_split)


# The input options of `tokenize` and `make-data`, declared once (typer reads them from the signature).
def _input_options():
    return dict(
        input_format=typer.Option(None, "--input-format", metavar="<lines|text|jsonl|parquet>", help="lines (one sentence per line), text (paragraphs, split into sentences), jsonl or parquet \\[default: by suffix; .txt is lines].", rich_help_panel=INPUT_PANEL, show_default=False),
        text_field=typer.Option("text", "--text-field", help="jsonl/parquet/dataset: the field with the text; dotted for nested keys (meta.body).", rich_help_panel=INPUT_PANEL),
        document_per_file=typer.Option(False, "--document-per-file", metavar=FLAG, show_default=False, help="text: each file is one document (blank lines separate paragraphs, not documents).", rich_help_panel=INPUT_PANEL),
        sentence_splitter=typer.Option("blingfire", "--sentence-splitter", metavar="<blingfire|sentencex|pysbd>", help="blingfire, sentencex or pysbd (see the README for their figures).", rich_help_panel=INPUT_PANEL),
        language=typer.Option("en", "--language", help="Language code for sentencex and pysbd (blingfire needs none).", rich_help_panel=INPUT_PANEL),
        encoding=typer.Option("utf-8", "--encoding", help="Text encoding of the files, e.g. latin-1 or cp1252 (a UTF-8 BOM is always dropped).", rich_help_panel=INPUT_PANEL),
        dataset=typer.Option(None, "--dataset", help="A Hugging Face dataset: a save_to_disk directory or a name in the local cache (needs bertcli\\[datasets]).", rich_help_panel=INPUT_PANEL, show_default=False),
        dataset_config=typer.Option(None, "--dataset-config", help="The dataset's configuration name, if it has several.", rich_help_panel=INPUT_PANEL, show_default=False),
        dataset_split=typer.Option("train", "--dataset-split", help="The dataset's split to read.", rich_help_panel=INPUT_PANEL),
    )


_IN = _input_options()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bertcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar=FLAG, help="Print the version and exit."),
) -> None:
    """Pretrain BERT from raw text."""


@app.command(no_args_is_help=True)
def tokenize(
    inputs: Optional[List[str]] = typer.Argument(None, metavar="INPUT...", help=INPUT_HELP + " Not with --from or --dataset.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the tokenizer to."),
    vocab_size: int = typer.Option(30522, help="Vocabulary size, the 5 special tokens included.", rich_help_panel=TOKENIZER_PANEL),
    model_type: str = typer.Option("unigram", metavar="<bpe|unigram|wordpiece>", help="unigram (the default: as fast to encode as any, see docs/performance.md) or bpe (SentencePiece), or wordpiece (BERT's, with the `tokenizers` package).", rich_help_panel=TOKENIZER_PANEL),
    lowercase: Optional[bool] = typer.Option(None, "--lowercase/--no-lowercase", metavar=FLAG, help="Case-fold text (an uncased model) or not \\[default: no; with --from: what the tokenizer says].", rich_help_panel=SWITCHES_PANEL, show_default=False),
    from_: Optional[Path] = typer.Option(None, "--from", help="Adopt a published BERT tokenizer instead of training: a Google vocab.txt or a Hugging Face BERT tokenizer directory.", rich_help_panel=TOKENIZER_PANEL, show_default=False),
    add_words: Optional[Path] = typer.Option(None, "--add-words", help="With --from: put these words (one per line) into the vocabulary's \\[unused] slots.", rich_help_panel=TOKENIZER_PANEL, show_default=False),
    character_coverage: float = typer.Option(0.9999, help="Share of characters the vocabulary must cover; rarer ones become [UNK].", rich_help_panel=TOKENIZER_PANEL),
    byte_fallback: bool = typer.Option(False, "--byte-fallback/--no-byte-fallback", metavar=FLAG, show_default=False, help="Spell unknown characters as UTF-8 bytes instead of [UNK].", rich_help_panel=SWITCHES_PANEL),
    input_sentence_size: int = typer.Option(10_000_000, help="Train on a uniform random sample of at most this many sentences.", rich_help_panel=RUN_PANEL),
    threads: int = typer.Option(0, help="Training threads (0: all cores). The model depends on it: fix it to reproduce across machines.", rich_help_panel=RUN_PANEL),
    seed: int = typer.Option(12345, help="Seed for the sample and for SentencePiece.", rich_help_panel=RUN_PANEL),
    strict: bool = typer.Option(False, "--strict", metavar=FLAG, help="Fail on invalid bytes, bad records and missing fields instead of counting them.", rich_help_panel=RUN_PANEL),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace a non-empty --out directory.", rich_help_panel=RUN_PANEL),
    input_format: Optional[str] = _IN["input_format"], text_field: str = _IN["text_field"],
    document_per_file: bool = _IN["document_per_file"], sentence_splitter: str = _IN["sentence_splitter"],
    language: str = _IN["language"], encoding: str = _IN["encoding"], dataset: Optional[str] = _IN["dataset"],
    dataset_config: Optional[str] = _IN["dataset_config"], dataset_split: str = _IN["dataset_split"],
) -> None:
    """Train a tokenizer with BERT's special tokens ([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4), or adopt a published one with --from."""
    check_options("tokenize", locals())
    check_out_name("--out", out)
    from bertcli.errors import UsageError
    from bertcli.console import warn
    from bertcli.reports import print_adopt_report, print_tokenize_report
    from bertcli.tokenizer import TrainOptions, adopt, train

    if from_ is not None:
        if inputs or dataset is not None:
            raise UsageError("--from adopts a tokenizer: give no INPUT files and no --dataset with it")
        print_adopt_report(adopt(from_, out, lowercase, add_words, overwrite), out)
        return
    if add_words is not None:
        raise UsageError("--add-words fills a published vocabulary's [unused] slots: use it with --from")
    if not inputs and dataset is None:
        raise UsageError("no INPUT given; pass text files to train on, --dataset, or --from a published tokenizer")
    from bertcli.corpus import Corpus, expand_inputs

    options = TrainOptions(vocab_size=vocab_size, model_type=model_type, lowercase=bool(lowercase),
                           character_coverage=character_coverage, byte_fallback=byte_fallback,
                           input_sentence_size=input_sentence_size, threads=threads, seed=seed)
    options.validate()
    reader = _reader_options(input_format, text_field, document_per_file, sentence_splitter, language, encoding,
                             dataset, dataset_config, dataset_split)
    corpus = Corpus(expand_inputs(inputs, input_format, allow_empty=dataset is not None), strict=strict, options=reader)
    with terminate_like_ctrl_c(), console.status("training tokenizer"):
        report = train(corpus, out, options, overwrite=overwrite)
    print_tokenize_report(report, out)
    for message in corpus.stats.warnings(reader):
        warn(message)


@app.command("make-data", no_args_is_help=True)
def make_data_command(
    inputs: Optional[List[str]] = typer.Argument(None, metavar="INPUT...", help=INPUT_HELP, show_default=False),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="Tokenizer directory made by `bertcli tokenize`."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write manifest.json and the shards to."),
    objective: str = typer.Option(_MD("objective"), metavar="<nsp|sop|mlm>", help="nsp: BERT's next-sentence pairs; sop: ALBERT's sentence-order pairs; mlm: no pairs, sentences packed to max_seq_length (RoBERTa).", rich_help_panel=DATA_PANEL),
    cross_document: bool = typer.Option(_MD("cross_document"), "--cross-document/--no-cross-document", metavar=FLAG, show_default=False, help="mlm: let a sequence run on into the next document, a [SEP] between them (RoBERTa's FULL-SENTENCES); --no-cross-document packs each document alone (DOC-SENTENCES). On by default.", rich_help_panel=SWITCHES_PANEL),
    max_seq_length: int = typer.Option(_MD("max_seq_length"), help="Tokens per instance, [CLS] and [SEP]s included.", rich_help_panel=DATA_PANEL),
    max_predictions: Optional[int] = typer.Option(_MD("max_predictions"), help="Masked positions per instance at most (default: ceil(max_seq_length × masked_lm_prob), 20 at 128 as Google).", rich_help_panel=DATA_PANEL, show_default=False),
    masked_lm_prob: float = typer.Option(_MD("masked_lm_prob"), help=f"Share of tokens to mask, {MASKED_LM_PROB_RANGE[0]} to {MASKED_LM_PROB_RANGE[1]}.", rich_help_panel=DATA_PANEL),
    mask_replace_prob: float = typer.Option(_MD("mask_replace_prob"), help="Share of the chosen positions that become [MASK].", rich_help_panel=DATA_PANEL),
    random_replace_prob: float = typer.Option(_MD("random_replace_prob"), help="Share of the chosen positions that become a random token (the rest stay as they are).", rich_help_panel=DATA_PANEL),
    short_seq_prob: Optional[float] = typer.Option(_MD("short_seq_prob"), help=f"nsp and sop: probability of a shorter target length for a document pass (default {SHORT_SEQ_PROB}). mlm refuses it.", rich_help_panel=DATA_PANEL, show_default=False),
    dupe_factor: int = typer.Option(_MD("dupe_factor"), help="Passes over the corpus, each with different pairs and masks.", rich_help_panel=DATA_PANEL),
    whole_word_mask: bool = typer.Option(_MD("whole_word_mask"), "--whole-word-mask/--no-whole-word-mask", metavar=FLAG, show_default=False, help="Mask all pieces of a word together.", rich_help_panel=SWITCHES_PANEL),
    seed: int = typer.Option(_MD("seed"), help="Seed for pairs, masks and the validation choice.", rich_help_panel=DATA_PANEL),
    validation_fraction: float = typer.Option(_MD("validation_fraction"), help="Share of documents held out for validation (0 allowed).", rich_help_panel=DATA_PANEL),
    window_chars: int = typer.Option(_MD("window_chars"), help="Characters of text per unit of work; random-next documents are drawn from the same window.", rich_help_panel=DATA_PANEL),
    shard_size: int = typer.Option(_MD("shard_size"), help="Instances per shard.", rich_help_panel=RUN_PANEL),
    workers: int = typer.Option(_MD("workers"), help="Processes (0: all cores). The output does not depend on it.", rich_help_panel=RUN_PANEL),
    strict: bool = typer.Option(_MD("strict"), "--strict", metavar=FLAG, help="Fail on invalid bytes, bad records and missing fields instead of counting them.", rich_help_panel=RUN_PANEL),
    resume: bool = typer.Option(False, "--resume", metavar=FLAG, help="Continue an interrupted run in --out, keeping its finished shards.", rich_help_panel=RUN_PANEL),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace a non-empty --out directory.", rich_help_panel=RUN_PANEL),
    input_format: Optional[str] = _IN["input_format"], text_field: str = _IN["text_field"],
    document_per_file: bool = _IN["document_per_file"], sentence_splitter: str = _IN["sentence_splitter"],
    language: str = _IN["language"], encoding: str = _IN["encoding"], dataset: Optional[str] = _IN["dataset"],
    dataset_config: Optional[str] = _IN["dataset_config"], dataset_split: str = _IN["dataset_split"],
) -> None:
    """Build sharded pretraining examples: next-sentence or sentence-order pairs, or packed sequences, with masked-LM masking."""
    check_options("make-data", locals())
    check_out_name("--out", out)
    from bertcli.corpus import expand_inputs
    from bertcli.make_data import make_data
    from bertcli.reports import print_make_data_report

    options = MakeDataOptions(objective=objective, cross_document=cross_document, max_seq_length=max_seq_length,
                              max_predictions=max_predictions, masked_lm_prob=masked_lm_prob,
                              mask_replace_prob=mask_replace_prob, random_replace_prob=random_replace_prob,
                              short_seq_prob=short_seq_prob, dupe_factor=dupe_factor,
                              whole_word_mask=whole_word_mask, seed=seed, validation_fraction=validation_fraction,
                              shard_size=shard_size, window_chars=window_chars, workers=workers, strict=strict).resolve()
    reader = _reader_options(input_format, text_field, document_per_file, sentence_splitter, language, encoding,
                             dataset, dataset_config, dataset_split)
    with terminate_like_ctrl_c():
        manifest = make_data(expand_inputs(inputs, input_format, allow_empty=dataset is not None), tokenizer, out,
                             options, resume=resume, overwrite=overwrite, reader=reader)
    print_make_data_report(manifest, out)


@app.command("show-data", no_args_is_help=True)
def show_data_command(
    data: Path = typer.Argument(..., metavar="DIR", help="A make-data output directory."),
    split: str = typer.Option("train", metavar="<train|validation>", help="Which split to show."),
    start: int = typer.Option(0, help="Index of the first instance to show."),
    count: int = typer.Option(5, help="How many instances to show."),
    json_lines: bool = typer.Option(False, "--json", metavar=FLAG, help="One JSON object per instance on stdout."),
    tokenizer: Optional[Path] = typer.Option(None, help="Tokenizer to decode with (default: the one the data directory carries)."),
) -> None:
    """Show pretraining instances: segments A and B (one sequence for mlm), masked positions with their originals, the sentence label (nsp or sop)."""
    check_options("show-data", locals())
    from bertcli.show_data import show_data

    show_data(data, split, start, count, json_lines, tokenizer)


@app.command(no_args_is_help=True)
def pretrain(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (see configs/)."),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a key, e.g. --set train.learning_rate=2e-4; repeat --set for each key."),
    resume: Optional[str] = typer.Option(None, "--resume", help="auto (latest checkpoint in out_dir, if any) or a checkpoint path."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace a run already in out_dir."),
    print_config: bool = typer.Option(False, "--print-config", metavar=FLAG, help="Print the resolved config as YAML on stdout and exit."),
) -> None:
    """Pretrain BERT on make-data shards (masked LM, plus the data's sentence task: nsp or sop; mlm has none); torchrun -m bertcli pretrain for several GPUs."""
    from bertcli.config import load_config

    cfg = load_config(config, set_)
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    from bertcli.reports import print_pretrain_summary
    from bertcli.train import pretrain as run_pretrain

    summary = run_pretrain(cfg, resume=resume, overwrite=overwrite)
    print_pretrain_summary(summary)


@app.command("eval", no_args_is_help=True)
def eval_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint directory, or a run directory (its latest checkpoint)."),
    data: Path = typer.Option(..., "--data", help="A make-data output directory."),
    split: str = typer.Option("validation", metavar="<validation|train>", help="Which split to evaluate on."),
    batch_size: int = typer.Option(64, help="Sequences per batch."),
    max_batches: int = typer.Option(0, help="Evaluate at most this many batches (0: all)."),
    device: str = typer.Option("auto", metavar="<auto|cpu|cuda>", help="Where to run (auto: cuda if available)."),
    precision: str = typer.Option("fp32", metavar="<auto|fp32|bf16|fp16>", callback=_precision, help="Precision (auto: bf16 on a GPU that has it, else fp32)."),
    json_out: bool = typer.Option(False, "--json", metavar=FLAG, help="Print the metrics as one JSON object on stdout."),
) -> None:
    """Masked-LM accuracy of a checkpoint and, for nsp or sop, its sentence-task accuracy, with Google's metric names."""
    check_options("eval", locals())
    import json

    from bertcli.evaluate import run_eval
    from bertcli.reports import print_eval_table
    from bertcli.runtime import resolve_device, resolve_precision, Runtime

    dev = resolve_device(device)
    runtime = Runtime(dev, resolve_precision(precision, dev))
    metrics = run_eval(checkpoint, data, split, batch_size, max_batches, dev, runtime.autocast)
    print_eval_table(metrics, split)
    if json_out:
        typer.echo(json.dumps(metrics))


@app.command(no_args_is_help=True)
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint directory, or a run directory (its latest checkpoint)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the Hugging Face model to."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", "-t", help="Tokenizer directory \\[default: the one the checkpoint carries]."),
    dtype: str = typer.Option("fp32", metavar="<fp32|bf16>", callback=_precision, help="Precision of the exported weights."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace a non-empty --out directory."),
) -> None:
    """Write a Hugging Face model directory (config.json, model.safetensors, tokenizer.json) for transformers.

    It loads offline with AutoModelForPreTraining, AutoModelForMaskedLM, AutoModelForSequenceClassification
    and AutoTokenizer .from_pretrained(DIR); `train.init_from` reads it back.
    """
    from bertcli.export import export as run_export
    from bertcli.reports import print_export_summary

    check_out_name("--out", out)
    if dtype not in TORCH_DTYPE_NAMES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(TORCH_DTYPE_NAMES)}")
    print_export_summary(run_export(checkpoint, out, tokenizer, TORCH_DTYPE_NAMES[dtype], overwrite))


@app.command(no_args_is_help=True)
def predict(
    texts: Optional[List[str]] = typer.Argument(None, metavar="TEXT...", show_default=False,
                                                help='Text with [MASK] where a token should be predicted, e.g. "The cat sat on the [MASK]."'),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint directory, or a run directory (its latest checkpoint)."),
    next_: List[str] = typer.Option([], "--next", help="A second sentence: also give P(it follows the text) from the sentence head (nsp: next, sop: in order; mlm has none). Once for all texts, or once per text."),
    file: Optional[Path] = typer.Option(None, "--file", help="Also read texts from this file, one per line; a tab separates an optional second sentence."),
    top_k: int = typer.Option(5, "--top-k", help="Tokens to show per [MASK]."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", "-t", help="Tokenizer directory \\[default: the one the checkpoint carries]."),
    device: str = typer.Option("auto", metavar="<auto|cpu|cuda>", help="Where to run (auto: cuda if available)."),
    json_out: bool = typer.Option(False, "--json", metavar=FLAG, help="One JSON object per text on stdout instead of tables."),
) -> None:
    """Fill in each [MASK] (top-k tokens with probabilities) and, with --next, ask the sentence head (nsp or sop).

    As in Hugging Face tokenizers, [MASK] (and [SEP], [CLS]) written in the text are those tokens.
    """
    check_options("predict", locals())
    import json

    from bertcli.predict import predict as run_predict, read_queries
    from bertcli.reports import print_predictions
    from bertcli.runtime import resolve_device

    queries = read_queries(texts or [], next_, file)
    results = run_predict(checkpoint, queries, top_k, tokenizer, resolve_device(device))
    if json_out:
        for result in results:
            typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        print_predictions(results)


@app.command(no_args_is_help=True)
def finetune(
    model: Path = typer.Option(..., "--model", "-m", help="A bertcli checkpoint or run directory, a bertcli export, or a Hugging Face BERT directory.", show_default=False),
    train: Path = typer.Option(..., "--train", help="Training split: .csv, .tsv, .jsonl, .parquet or a Hugging Face save_to_disk directory.", rich_help_panel=DATA_PANEL, show_default=False),
    validation: Path = typer.Option(..., "--validation", help="Validation split (evaluated after every epoch), in any of the same formats.", rich_help_panel=DATA_PANEL, show_default=False),
    test: Optional[Path] = typer.Option(None, "--test", help="Test split to predict (labels not needed); written to test_predictions.tsv.", rich_help_panel=DATA_PANEL, show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write results.json, metrics.jsonl, predictions and model/ to.", show_default=False),
    text_field: str = typer.Option("text", "--text-field", help="Column with the text (a column index for headerless CSV/TSV).", rich_help_panel=DATA_PANEL),
    text_pair_field: Optional[str] = typer.Option(None, "--text-pair-field", help="Column with the second text of a pair, if any.", rich_help_panel=DATA_PANEL, show_default=False),
    label_field: str = typer.Option("label", "--label-field", help="Column with the label.", rich_help_panel=DATA_PANEL),
    task_type: str = typer.Option("classification", "--task-type", metavar="<classification|regression>", help="classification (labels: strings or integers) or regression (a number).", rich_help_panel=DATA_PANEL),
    task_name: Optional[str] = typer.Option(None, "--task-name", help="Name of the task in results.json \\[default: the --train file's name, or its directory's for train.*].", rich_help_panel=DATA_PANEL, show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (see configs/finetune.yaml) \\[default: its values].", rich_help_panel=RUN_PANEL, show_default=False),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a key, e.g. --set train.learning_rate=3e-5; repeat --set for each key.", rich_help_panel=RUN_PANEL),
    seeds: int = typer.Option(1, "--seeds", help="Runs with seeds seed, seed+1, …; the median over them is reported.", rich_help_panel=RUN_PANEL),
    init: str = typer.Option("pretrained", "--init", metavar="<pretrained|random>", help="random: the same shape from a random initialisation, the baseline that shows what pretraining gained.", rich_help_panel=RUN_PANEL),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace a non-empty --out directory (only one bertcli finetune wrote).", rich_help_panel=RUN_PANEL),
    json_out: bool = typer.Option(False, "--json", metavar=FLAG, help="Print results.json as one JSON object on stdout."),
) -> None:
    """Fine-tune a classifier (or regressor) on labelled text and report validation metrics: the median over --seeds."""
    check_options("finetune", locals())
    check_out_name("--out", out)
    import json

    from bertcli.finetune.config import load_finetune_config
    from bertcli.finetune.data import Fields
    from bertcli.finetune.run import FinetuneOptions, finetune as run_finetune, print_results
    from bertcli.runtime import resolve_device

    cfg = load_finetune_config(config, set_)
    options = FinetuneOptions(model=model, train=train, validation=validation, test=test, out=out,
                              fields=Fields(text_field, text_pair_field, label_field), task_type=task_type,
                              task_name=task_name, seeds=seeds, init=init, overwrite=overwrite)
    options.check()
    if cfg.system.cpu_threads:
        import torch
        torch.set_num_threads(cfg.system.cpu_threads)
    with terminate_like_ctrl_c():
        results = run_finetune(options, cfg, resolve_device(cfg.system.device))
    print_results(results)
    if json_out:
        typer.echo(json.dumps(results))


@app.command(no_args_is_help=True)
def glue(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The model to fine-tune (required): a bertcli run or checkpoint directory, an export, or a Hugging Face BERT directory.", show_default=False),
    data: Optional[Path] = typer.Option(None, "--data", help="GLUE as its download script writes it (CoLA/ SST-2/ … MNLI/ diagnostic/), or Hugging Face's glue (cola/ sst2/ … ax/: save_to_disk or Parquet) (required).", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for results.json, submission/ and each run's output (required).", show_default=False),
    tasks: Optional[str] = typer.Option(None, "--tasks", metavar="TASK,...", help="Some of cola sst2 mrpc stsb qqp mnli qnli rte wnli, comma-separated \\[default: all; with --quick: sst2,rte].", show_default=False),
    seeds: int = typer.Option(1, "--seeds", help="Fine-tuning runs per task (seeds: the finetune config's seed, 42, then 43, …); the table and results.json give the median."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="A per-task recipe YAML (start from --print-recipe) \\[default: the built-in one, MosaicBERT's].", show_default=False),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a finetune config key for every task, e.g. --set train.epochs=2; repeat --set for each key."),
    from_mnli: bool = typer.Option(False, "--from-mnli", metavar=FLAG, help="Start RTE, MRPC and STS-B from the MNLI fine-tuned model, as MosaicBERT and ModernBERT do (needs mnli in --tasks)."),
    quick: bool = typer.Option(False, "--quick", metavar=FLAG, help="A probe of a small model in a few minutes on a CPU: sst2 and rte, at most 2,000 training and 500 validation examples each, 1 epoch at learning rate 1e-3, no submission."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace a glue output already in --out."),
    json_out: bool = typer.Option(False, "--json", metavar=FLAG, help="Print {tasks: {task: {metric: median}}, score} as one JSON object on stdout."),
    print_recipe: bool = typer.Option(False, "--print-recipe", metavar=FLAG, help="Print the recipe as YAML on stdout and exit."),
) -> None:
    """Fine-tune on GLUE's nine tasks: the table of median scores and the GLUE average, results.json, and the leaderboard's submission files."""
    check_options("glue", locals())
    if out is not None:
        check_out_name("--out", out)
    import json

    from bertcli.finetune.glue import CoreFineTuner, GlueOptions, glue_table, run_glue
    from bertcli.finetune.glue_recipes import load_recipe, recipe_yaml

    if print_recipe:
        typer.echo(recipe_yaml(load_recipe(recipe)), nl=False)
        return
    for value, option in ((model, "--model"), (data, "--data"), (out, "--out")):
        if value is None:
            raise UsageError(f"missing option {option}; see bertcli glue --help")
    options = GlueOptions(model=model, data=data, out=out, tasks=[tasks] if tasks else None, seeds=seeds,
                          recipe=recipe, sets=list(set_), quick=quick, from_mnli=from_mnli, overwrite=overwrite)

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    with terminate_like_ctrl_c():
        results = run_glue(options, CoreFineTuner(log), log)
    console.print(glue_table(results))
    if json_out:
        typer.echo(json.dumps({"tasks": results["tasks"], "score": results["score"]}))


@app.command(no_args_is_help=True)
def report(
    runs: List[Path] = typer.Argument(..., metavar="RUN...", show_default=False,
                                      help="Pretrain run directories (finished, running or copied), finetune/glue outputs, or results.json files."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write \\[default: RUN/report.html for one run]."),
) -> None:
    """One self-contained HTML file: loss, accuracy (with baselines), lr, grad norm, tokens/s, MFU and memory charts, evaluations, data, config; several runs overlaid."""
    from bertcli.console import console
    from bertcli.report import default_out, write_report

    path = write_report(runs, out if out is not None else default_out(runs))
    console.print(f"report written to {path}")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the app and turn expected failures into one line and an exit code.

    typer itself prints usage errors (exit 2) and turns Ctrl-C into exit 130.
    """
    try:
        app(args=argv, prog_name="bertcli")
    except BertcliError as e:
        error_line(str(e))
        sys.exit(e.exit_code)
    except OSError as e:
        # What the system refuses for a path the user chose (too long a name, no space, no
        # permission, a read-only disk, a symlink loop) is that path's problem, not a bug.
        if e.errno not in USER_OS_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        error_line(f"{where}{e.strerror or e}; check the path, its permissions and the free space")
        sys.exit(1)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
