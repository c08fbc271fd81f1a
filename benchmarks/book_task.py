"""Build the "which book is this passage from?" task from sample_data/books, for `bertcli finetune`.

    .venv/bin/python benchmarks/book_task.py [--books sample_data/books] [--data out/data]
        [--out out/book_task] [--passage-words 32] [--train-per-book 200] [--validation-per-book 40]

sample_data/books holds five Project Gutenberg books cut into 195 parts (`NNNN-book_name.txt`).
The task: given a passage of --passage-words words, name its book (five labels).

Held-out passages only: the validation split comes from the parts that the pretraining data
--data (the quickstart's `out/data`, made with `--document-per-file`) held out as its own
validation documents. make-data chooses those with random.Random(f"{seed}/validation") per
document in file order; this script replays that choice from the data's manifest (seed,
validation_fraction) and checks that it finds the manifest's number of validation documents.
So no validation passage was seen by pretraining or by fine-tuning. Both splits are balanced,
so that chance is 1/5: the training split is --train-per-book passages of each book from the
other parts, the validation split --validation-per-book of each book's held-out passages
(fewer where a book has fewer), each chosen at random with a fixed seed.

Writes OUT/train.tsv and OUT/validation.tsv (`text` and `label` columns) and prints the label
counts of each split and the majority-class share of the validation split (the accuracy of
always guessing the most common book).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

PART = re.compile(r"^\d+-(?P<book>.+)\.txt$")


def passages(text: str, words: int) -> list[str]:
    tokens = text.split()
    return [" ".join(tokens[i:i + words]) for i in range(0, len(tokens) - words + 1, words)]


def held_out_parts(files: list[Path], data_dir: Path) -> set[str]:
    """The parts make-data put into the validation split of `data_dir` (replaying its choice)."""
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    options = manifest["options"]
    choose = random.Random(f"{options['seed']}/validation")
    held = {f.name for f in files if choose.random() < options["validation_fraction"]}
    expected = manifest["splits"]["validation"]["documents"]
    if len(held) != expected:
        raise SystemExit(f"replaying make-data's choice found {len(held)} held-out parts but {data_dir} has {expected} "
                         "validation documents; was it made from these books with --document-per-file?")
    return held


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--books", type=Path, default=Path("sample_data/books"))
    ap.add_argument("--data", type=Path, default=Path("out/data"), help="the pretraining data (make-data output)")
    ap.add_argument("--out", type=Path, default=Path("out/book_task"))
    ap.add_argument("--passage-words", type=int, default=32)
    ap.add_argument("--train-per-book", type=int, default=200)
    ap.add_argument("--validation-per-book", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    files = sorted(f for f in args.books.glob("*.txt") if PART.match(f.name))
    held = held_out_parts(files, args.data)
    train: dict[str, list[str]] = {}
    held_passages: dict[str, list[str]] = {}
    for f in files:
        book = PART.match(f.name)["book"]
        chunks = passages(f.read_text(encoding="utf-8"), args.passage_words)
        if f.name in held:
            held_passages.setdefault(book, []).extend(chunks)
        else:
            train.setdefault(book, []).extend(chunks)
    rng = random.Random(args.seed)
    train_rows = [(p, book) for book, chunks in sorted(train.items())
                  for p in rng.sample(chunks, min(args.train_per_book, len(chunks)))]
    rng.shuffle(train_rows)
    validation = [(p, book) for book, chunks in sorted(held_passages.items())
                  for p in rng.sample(chunks, min(args.validation_per_book, len(chunks)))]
    args.out.mkdir(parents=True, exist_ok=True)
    write_tsv(args.out / "train.tsv", train_rows)
    write_tsv(args.out / "validation.tsv", validation)
    for name, rows in (("train", train_rows), ("validation", validation)):
        counts = Counter(y for _, y in rows)
        print(f"{name}: {len(rows)} passages · " + ", ".join(f"{b} {n}" for b, n in sorted(counts.items())))
    majority = max(Counter(y for _, y in validation).values()) / len(validation)
    print(f"validation from {len(held)} held-out parts; always guessing the most common book: accuracy {majority:.4f}")


if __name__ == "__main__":
    main()
