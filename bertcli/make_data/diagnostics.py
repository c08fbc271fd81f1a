"""What make-data refuses or warns about once the data is built: nothing to train on, a corpus the
objective cannot learn from, fallbacks, truncated sentences, an empty validation split."""

from __future__ import annotations

from pathlib import Path

from bertcli.console import shown
from bertcli.corpus import Corpus
from bertcli.errors import DataError
from bertcli.make_data.options import MakeDataOptions
from bertcli.objectives import get_objective
from bertcli.shards import SPLITS


def check_usable(manifest: dict, files: list[Path], opts: MakeDataOptions, counts=()) -> None:
    """`counts`: the InputCounts of the inputs read, to say why a corpus gave no text."""
    train = manifest["splits"]["train"]
    names = shown(", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else ""))
    get_objective(opts.objective).builder.check_data(train, names)
    if train["instances"] == 0:
        if train["documents"] == 0:
            raise DataError(f"no training instances: the corpus ({names}) {_why_no_text(counts)}")
        raise DataError(f"no training instances: the corpus ({names}) is too short (a single one-sentence document "
                        "cannot make a pair); give more text")


def _why_no_text(counts) -> str:
    """What happened to the text of a corpus that gave no document: skipped records, invalid bytes, or none."""
    skipped = [c for c in counts if c.records_skipped]
    if skipped:
        first = skipped[0]
        total = sum(c.records_skipped for c in skipped)
        return (f"gave no usable record: {total} of {sum(c.records for c in counts)} were skipped (first at "
                f"{shown(first.first_skipped)}: {first.first_skip_reason}); fix them, or pass the right "
                "--input-format, --text-field or --encoding")
    invalid = [c for c in counts if c.invalid_lines]
    if invalid:
        return (f"holds only lines with invalid bytes (first at {shown(invalid[0].first_invalid)}); give its "
                "--encoding or convert it to UTF-8")
    return "holds no text for the train split; give text, one sentence per line"


_SINGLE_SENTENCE_HINT = {
    "lines": "is there a blank line between every sentence? Blank lines separate documents",
    "text": "with --input-format text every paragraph is a document: pass --document-per-file if each file is one",
}
_SINGLE_SENTENCE_HINT.update(dict.fromkeys(("jsonl", "parquet", "dataset"), "each record is one document: are the "
                                           "records single sentences, or is --text-field a title?"))


def warnings_about(manifest: dict, corpus: Corpus, opts: MakeDataOptions) -> list[str]:
    """What make-data warns about this data; the manifest records them (`warnings`), the report shows them."""
    found = []
    if msg := corpus.stats.invalid_utf8_message():
        found.append(msg)
    for msg in corpus.stats.warnings(corpus.options):
        found.append(msg)
    train = manifest["splits"]["train"]
    stats = train["stats"]
    pairs = get_objective(opts.objective).random_next  # these warnings are about random-next pairs
    if pairs and train["documents"] == 1:
        found.append(f"the train split is a single document, so no random next sentence can come from another document: "
             f"all {stats['fallback_pairs']} pairs that wanted one fell back to the actual next sentence "
             f"({stats['dropped_pairs']} had none and were dropped); separate documents with blank lines")
    elif pairs and stats["fallback_pairs"] + stats["dropped_pairs"]:
        found.append(f"{stats['fallback_pairs']} pairs fell back to the actual next sentence and {stats['dropped_pairs']} were "
             "dropped because no other document was in reach (a window with a single document); "
             "give more documents or a larger --window-chars")
    if pairs and stats["single_sentence_documents"] > 0.5 * train["documents"] > 0:
        found.append(f"{stats['single_sentence_documents']} of {train['documents']} documents have a single sentence: "
             f"{_SINGLE_SENTENCE_HINT.get(corpus.describe_format(), _SINGLE_SENTENCE_HINT['lines'])}; pairs "
             "never span documents, so next-sentence prediction cannot learn from such a corpus")
    long_sentences = sum(manifest["splits"][s]["stats"].get("long_sentences", 0) for s in SPLITS)
    if long_sentences:
        found.append(f"{long_sentences} sentence(s) are longer than max_seq_length - 3 = {opts.max_seq_length - 3} tokens "
             "and were truncated; split long lines into sentences, or raise --max-seq-length")
    if opts.validation_fraction > 0 and manifest["splits"]["validation"]["instances"] == 0:
        found.append("the validation split is empty: raise --validation-fraction or give more documents")
    return found
