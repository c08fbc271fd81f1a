"""Split free text into sentences: one interface over a few sentence-segmentation libraries.

`text` input, JSON Lines, Parquet and dataset records come as paragraphs; BERT's next-sentence
task needs sentences. `blingfire` (the default) was chosen by the figures in the README
(benchmarks/segmenters.py): it is the fastest by an order of magnitude with boundary quality
close to the best. `sentencex` and `pysbd` can be chosen with --sentence-splitter. Each is
imported only when chosen; a missing one is one line naming the package to install. This module
does not read files or decide what a document is.
"""

from __future__ import annotations

import re
from typing import Callable

from bertcli.errors import UsageError

SPLITTERS = ("blingfire", "sentencex", "pysbd")
# Characters handed to a splitter in one call. pysbd's time grows with the square of its input
# (520 KB of abbreviations: 322 s in one call; 1,000-character pieces: ~23 s on a 2-core
# machine); the others are linear and get a bound only. A longer paragraph is cut into pieces at
# the last sentence end (else white space) before the bound, so a cut falls where the splitter
# would most likely have split anyway.
MAX_SPLIT_CHARS = {"blingfire": 100_000, "sentencex": 100_000, "pysbd": 1_000}
_SENTENCE_END = re.compile(r"[.!?…。][\"')\]]*\s")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_WHITESPACE = re.compile(r"\s+")


def _load(name: str, language: str) -> Callable[[str], list[str]]:
    if name == "blingfire":
        import blingfire
        # blingfire's model is language-neutral (trained on many scripts), so --language is unused.
        return lambda text: blingfire.text_to_sentences(text).split("\n")
    if name == "sentencex":
        import sentencex
        return lambda text: list(sentencex.segment(language, text))
    if name == "pysbd":
        import pysbd
        segmenter = pysbd.Segmenter(language=language, clean=False)
        return segmenter.segment
    raise UsageError(f"--sentence-splitter {name} is not one of: {', '.join(SPLITTERS)}")


def pieces(text: str, limit: int) -> list[str]:
    """`text` cut into consecutive pieces of at most `limit` characters, each (but the last) ending
    at the last sentence end in its second half, else at the last white space, else at the bound."""
    out = []
    while len(text) > limit:
        window = text[limit // 2:limit]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = limit // 2 + ends[-1] if ends else (limit // 2 + window.rfind(" ") + 1 if " " in window else limit)
        out.append(text[:cut])
        text = text[cut:]
    out.append(text)
    return out


class Segmenter:
    """`split(paragraph)` → stripped, non-empty sentences."""

    def __init__(self, name: str = "blingfire", language: str = "en"):
        self.name, self.language = name, language
        try:
            self._split = _load(name, language)
        except ImportError:
            raise UsageError(f"--sentence-splitter {name} needs the {name} package: pip install {name} "
                             f"(or pip install 'bertcli[text]' for the default, blingfire)") from None
        except (ValueError, KeyError, NotImplementedError) as e:
            raise UsageError(f"--sentence-splitter {name} does not support --language {language} ({e}); "
                             "give an ISO 639-1 code it knows, e.g. en, de, fr") from None

    def split(self, paragraph: str) -> list[str]:
        paragraph = paragraph.strip()
        if not paragraph:
            return []
        limit = MAX_SPLIT_CHARS[self.name]
        if len(paragraph) <= limit:
            return [s for s in (part.strip() for part in self._split(paragraph)) if s]
        return [s for piece in pieces(paragraph, limit) for s in (part.strip() for part in self._split(piece)) if s]

    def split_text(self, text: str) -> list[str]:
        """Sentences of a multi-paragraph text (a JSON field): blank lines end paragraphs, other
        line breaks are wrapping."""
        sentences: list[str] = []
        for paragraph in _BLANK_LINE.split(text):
            sentences.extend(self.split(_WHITESPACE.sub(" ", paragraph)))
        return sentences
