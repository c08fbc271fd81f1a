"""segment.py: every splitter finds known boundaries; bad choices are one-line usage errors."""

from __future__ import annotations

import sys

import pytest

from bertcli.errors import UsageError
from bertcli.segment import SPLITTERS, Segmenter

PARAGRAPH = "The rain had stopped. Was it over? Nobody could say, not even the old man.  Then they walked home!"
SENTENCES = ["The rain had stopped.", "Was it over?", "Nobody could say, not even the old man.", "Then they walked home!"]


@pytest.mark.parametrize("name", SPLITTERS)
def test_each_splitter_finds_the_known_sentences(name):
    pytest.importorskip(name, reason="the segmenters extra is part of the test environment")
    assert Segmenter(name).split(PARAGRAPH) == SENTENCES


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_nothing_gives_no_sentences(text):
    assert Segmenter().split(text) == [] and Segmenter().split_text(text) == []


def test_split_text_treats_blank_lines_as_paragraph_ends_and_other_breaks_as_wrapping():
    text = "First line\nwraps here. Second.\r\n\r\nNew paragraph without stop\n\n\nLast."
    assert Segmenter().split_text(text) == ["First line wraps here.", "Second.", "New paragraph without stop", "Last."]


def test_unknown_splitter_is_a_usage_error():
    with pytest.raises(UsageError, match="--sentence-splitter nltk is not one of: blingfire, sentencex, pysbd"):
        Segmenter("nltk")


def test_a_missing_splitter_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "blingfire", None)
    with pytest.raises(UsageError, match=r"needs the blingfire package: pip install blingfire .*bertcli\[text\]"):
        Segmenter("blingfire")
