"""Compare sentence segmenters: speed (MB/s on one core) and boundary precision / recall.

The reference is a corpus already in `lines` layout (one sentence per line, blank lines between
documents): each document's sentences are joined into one paragraph, every candidate splits
the paragraph back, and the boundaries it finds (character offsets in the paragraph) are
compared with the known ones. The splitting of the reference corpora was itself done by a rule,
so absolute figures are indicative; the comparison between candidates is what counts.

    python benchmarks/segmenters.py FILE... [--max-mb 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bertcli.segment import SPLITTERS, Segmenter


def paragraphs(path: Path, max_chars: int) -> list[list[str]]:
    docs, doc, total = [], [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        line = " ".join(line.split())
        if line:
            doc.append(line)
            total += len(line) + 1
        elif doc:
            docs.append(doc)
            doc = []
        if total >= max_chars:
            break
    if doc:
        docs.append(doc)
    return docs


def boundaries(sentences: list[str], paragraph: str) -> set[int]:
    """Offsets in `paragraph` where each sentence after the first starts."""
    found, pos = set(), 0
    for i, s in enumerate(sentences):
        at = paragraph.find(s, pos)
        if at < 0:  # a segmenter that rewrites text: locate by its first characters
            at = paragraph.find(s[:20], pos)
        if at < 0:
            continue
        if i:
            found.add(at)
        pos = at + len(s)
    return found


def measure(name: str, docs: list[list[str]]) -> dict:
    segmenter = Segmenter(name, "en")
    texts = [" ".join(doc) for doc in docs]
    size = sum(len(t.encode()) for t in texts)
    start = time.process_time()  # CPU time: the machine is shared, wall time would measure the load
    outputs = [segmenter.split(t) for t in texts]
    seconds = time.process_time() - start
    tp = fp = fn = 0
    for doc, text, out in zip(docs, texts, outputs):
        gold = boundaries(doc, text)
        got = boundaries(out, text)
        tp += len(gold & got)
        fp += len(got - gold)
        fn += len(gold - got)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"MB/s": size / 1e6 / seconds, "precision": precision, "recall": recall,
            "F1": 2 * precision * recall / max(precision + recall, 1e-9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--max-mb", type=float, default=2.0, help="Text per file to measure on.")
    parser.add_argument("--splitters", default=",".join(SPLITTERS))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(f"{'corpus':<14}{'splitter':<11}{'MB/s':>8}{'precision':>11}{'recall':>8}{'F1':>7}")
    for path in args.files:
        docs = paragraphs(path, int(args.max_mb * 1e6))
        for name in args.splitters.split(","):
            r = measure(name, docs)
            print(f"{path.name:<14}{name:<11}{r['MB/s']:>8.2f}{r['precision']:>11.3f}{r['recall']:>8.3f}{r['F1']:>7.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
