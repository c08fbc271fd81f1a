"""WordPiece tokenizers, BERT's own: trained with `tokenizers`, or adopted from a published BERT.

A WordPiece directory holds `vocab.txt` (one piece per line, the line number is the id: the file
Google's and Hugging Face's BERT tokenizers read) and the metadata of base.py with the options
that change how text is split: `lowercase`, `strip_accents` (None: follows lowercase, as BERT's
uncased models do) and `tokenize_chinese_chars`. Text is split as BERT's BasicTokenizer does
(clean control characters, space around CJK characters, optionally lowercase and strip accents,
split on whitespace and punctuation), then each word greedily into the longest pieces, `##`
marking a piece that continues a word. The identity hash covers the vocabulary and these options.

`bertcli tokenize --model-type wordpiece` puts the five special tokens first ([PAD]=0 [UNK]=1
[CLS]=2 [SEP]=3 [MASK]=4); an adopted vocabulary keeps its own ids (Google's: [PAD]=0, [UNK]=100,
[CLS]=101, [SEP]=102, [MASK]=103, with [unused…] slots that `--add-words` fills).

`tokenizers` is an optional dependency (`pip install 'bertcli[wordpiece]'`, or the hf extra).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bertcli.bounds import MAX_VOCAB
from bertcli.console import shown
from bertcli.errors import UsageError
from bertcli.fsutil import read_json
from bertcli.tokenizer.base import SPECIAL_TOKENS, UNUSED, Tokenizer, find_special_ids, sha256_bytes
from bertcli.tokenizer.hf import added_tokens, bert_post_processor, json_bytes, tokenizer_config

VOCAB_FILE = "vocab.txt"
PREFIX = "##"  # a piece that continues a word
MAX_INPUT_CHARS_PER_WORD = 100  # BERT's: a longer word is [UNK]
MAX_VOCAB_FILE_BYTES = 32 << 20  # a vocab.txt of 2**20 pieces of 30 bytes; the largest published BERT's is 2 MB
MAX_WORDS_FILE_BYTES = 4 << 20  # --add-words: Google's vocabularies have 994 [unused] slots
SPECIAL_NAME_OF = {token: name for name, token in SPECIAL_TOKENS.items()}
SPECIAL_IN_TEXT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS.values()) + ")")
OPTION_TYPES = {"lowercase": (bool,), "strip_accents": (bool, type(None)), "tokenize_chinese_chars": (bool,)}


def require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UsageError("WordPiece tokenizers need the `tokenizers` package: pip install 'bertcli[wordpiece]'") from None
    return tokenizers


def wordpiece_options(lowercase: bool, strip_accents: bool | None = None, tokenize_chinese_chars: bool = True) -> dict:
    return {"lowercase": lowercase, "strip_accents": strip_accents, "tokenize_chinese_chars": tokenize_chinese_chars}


def check_vocab(vocab: list[str], where: str) -> None:
    """One piece per line, no blank and no repeated piece: otherwise ids are ambiguous."""
    if not vocab:
        raise UsageError(f"{where} is empty; give a BERT vocab.txt (one piece per line)")
    seen: dict[str, int] = {}
    for i, piece in enumerate(vocab):
        if not piece or piece != piece.strip() or any(c.isspace() for c in piece):
            raise UsageError(f"{where}: line {i + 1} ({shown(piece, 40)!r}) is blank or holds whitespace; a piece is one word")
        if piece in seen:
            raise UsageError(f"{where}: {shown(piece, 40)!r} is on lines {seen[piece] + 1} and {i + 1}; each piece must be listed once")
        seen[piece] = i


class WordPieceTokenizer(Tokenizer):
    kind = "wordpiece"

    def __init__(self, vocab: list[str], options: dict, meta: dict | None = None, path: Path | None = None):
        where = str(path / VOCAB_FILE) if path else (meta or {}).get("adopted_from", "the vocabulary")
        check_vocab(vocab, where)
        for key, types in OPTION_TYPES.items():
            if not isinstance(options.get(key), types):
                raise UsageError(f"{where}: option {key} is {options.get(key)!r}, not one of {[t.__name__ for t in types]}")
        self.options = {k: options[k] for k in OPTION_TYPES}
        self.vocab_bytes = "".join(p + "\n" for p in vocab).encode()
        identity = sha256_bytes(self.vocab_bytes + b"\0" + json.dumps(self.options, sort_keys=True).encode())
        super().__init__(vocab, find_special_ids(vocab, where), {**(meta or {}), "options": self.options}, path, identity)
        self._pipeline = None

    @classmethod
    def from_dir(cls, path: Path, meta: dict) -> "WordPieceTokenizer":
        vocab_path = path / VOCAB_FILE
        if not vocab_path.is_file():
            raise UsageError(f"{path} is not a WordPiece tokenizer directory (no {VOCAB_FILE}); remake it with `bertcli tokenize`")
        data = vocab_path.read_bytes()
        if sha256_bytes(data) != (meta.get("files") or {}).get(VOCAB_FILE):
            raise UsageError(f"{vocab_path} does not match its sha256 in the metadata; the tokenizer was modified, remake it")
        options = meta.get("options")
        if not isinstance(options, dict):
            raise UsageError(f"{path}: the metadata has no WordPiece options; it was edited, remake the tokenizer")
        tok = cls(data.decode("utf-8").split("\n")[:-1], options, meta, path)
        if tok.sha256 != meta.get("sha256") or tok.special_ids != meta.get("special_ids"):
            raise UsageError(f"{path}: the metadata's sha256 or special ids do not match {VOCAB_FILE}; remake the tokenizer")
        return tok

    # --- the pipeline: BERT's BasicTokenizer + WordpieceTokenizer, as `tokenizers` builds them ---------
    def tokenizer_json(self, for_export: bool = False) -> dict:
        """The `tokenizers` pipeline. Exported, the special tokens are added tokens (found in text)
        and pairs get [CLS]/[SEP]; for pretraining data, text that spells "[MASK]" is text."""
        o = self.options
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": added_tokens(self) if for_export else [],
            "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": o["tokenize_chinese_chars"],
                           "strip_accents": o["strip_accents"], "lowercase": o["lowercase"]},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": bert_post_processor(self) if for_export else None,
            "decoder": {"type": "WordPiece", "prefix": PREFIX, "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": SPECIAL_TOKENS["unk"], "continuing_subword_prefix": PREFIX,
                      "max_input_chars_per_word": MAX_INPUT_CHARS_PER_WORD,
                      "vocab": {piece: i for i, piece in enumerate(self.vocab)}},
        }

    @property
    def pipeline(self):
        if self._pipeline is None:
            self._pipeline = require_tokenizers().Tokenizer.from_str(json.dumps(self.tokenizer_json()))
        return self._pipeline

    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        if threads > 1:
            return [e.ids for e in self.pipeline.encode_batch(texts, add_special_tokens=False)]
        # one at a time: encode_batch starts a thread pool, which a forked make-data worker must not inherit
        return [self.pipeline.encode(t, add_special_tokens=False).ids for t in texts]

    def encode_query(self, text: str) -> list[int]:
        ids: list[int] = []
        for k, part in enumerate(SPECIAL_IN_TEXT.split(text)):
            if k % 2:  # re.split puts the matched separators at odd indices
                ids.append(self.special_ids[SPECIAL_NAME_OF[part]])
            elif part:
                ids += self.pipeline.encode(part, add_special_tokens=False).ids
        return ids

    def decode(self, ids) -> str:
        return self.pipeline.decode([int(i) for i in ids], skip_special_tokens=False)

    def normalize(self, text: str) -> str:
        return self.pipeline.normalizer.normalize_str(text)

    def starts_word(self, piece: str) -> bool:
        return not piece.startswith(PREFIX)

    def piece_text(self, piece: str) -> str:
        return piece.removeprefix(PREFIX)

    def files(self) -> dict[str, bytes]:
        return {VOCAB_FILE: self.vocab_bytes}

    def hf_files(self, max_length: int) -> dict[str, bytes]:
        """vocab.txt and a fast BERT tokenizer: AutoTokenizer gives this tokenizer's ids."""
        o = self.options
        config, special_map = tokenizer_config(self, max_length, "BertTokenizer", do_lower_case=o["lowercase"],
                                               strip_accents=o["strip_accents"],
                                               tokenize_chinese_chars=o["tokenize_chinese_chars"])
        return {VOCAB_FILE: self.vocab_bytes, "tokenizer.json": json_bytes(self.tokenizer_json(for_export=True)),
                "tokenizer_config.json": json_bytes(config), "special_tokens_map.json": json_bytes(special_map)}


# --- training ----------------------------------------------------------------------------------------

def train_wordpiece(sample: list[str], options, meta: dict) -> WordPieceTokenizer:
    """A WordPiece vocabulary of at most options.vocab_size pieces, the special tokens first."""
    tk = require_tokenizers()
    opts = wordpiece_options(options.lowercase)
    base = WordPieceTokenizer(list(SPECIAL_TOKENS.values()), opts)  # the pipeline, with an empty vocabulary
    pipeline = tk.Tokenizer.from_str(json.dumps(base.tokenizer_json()))
    trainer = tk.trainers.WordPieceTrainer(vocab_size=options.vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                           continuing_subword_prefix=PREFIX, show_progress=False)
    pipeline.train_from_iterator(sample, trainer)
    vocab = [piece for piece, _ in sorted(pipeline.get_vocab().items(), key=lambda item: item[1])]
    return WordPieceTokenizer(vocab, opts, meta)


# --- adopting a published tokenizer ------------------------------------------------------------------

def read_bounded_text(path: Path, limit: int, what: str) -> str:
    """A UTF-8 text file of at most `limit` bytes, read without trusting its size (/dev/zero, a FIFO)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read it ({e.strerror})") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit >> 20} MiB; it is not a word list or vocabulary")
    if b"\0" in data:
        raise UsageError(f"{what} {path} holds NUL bytes; it is not UTF-8 text (UTF-16? binary?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None


def _read_vocab_file(path: Path) -> list[str]:
    text = read_bounded_text(path, MAX_VOCAB_FILE_BYTES, "vocabulary")
    if (pieces := text.count("\n") + (not text.endswith("\n"))) > MAX_VOCAB:  # counted before a list is made
        raise UsageError(f"{path} has {pieces:,} pieces, more than {MAX_VOCAB:,}; it is not a BERT vocab.txt")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    return lines


def _from_hf_dir(path: Path, lowercase: bool | None) -> tuple[list[str], dict]:
    """Vocabulary and options of a Hugging Face BERT tokenizer directory."""
    config = read_json(path / "tokenizer_config.json", "tokenizer config") if (path / "tokenizer_config.json").is_file() else {}
    options = wordpiece_options(bool(config.get("do_lower_case", True)), config.get("strip_accents"),
                                bool(config.get("tokenize_chinese_chars", True)))
    vocab = _read_vocab_file(path / VOCAB_FILE) if (path / VOCAB_FILE).is_file() else None
    if (path / "tokenizer.json").is_file():
        fast = read_json(path / "tokenizer.json", "Hugging Face tokenizer", max_bytes=MAX_VOCAB_FILE_BYTES)
        model, normalizer = fast.get("model") or {}, fast.get("normalizer") or {}
        for key, value in (("model", model), ("normalizer", normalizer)):
            if not isinstance(value, dict):
                raise UsageError(f"{path / 'tokenizer.json'}: {key} is a {type(value).__name__}, not an object; "
                                 "it is not a Hugging Face tokenizer file")
        if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", PREFIX) != PREFIX:
            raise UsageError(f"{path / 'tokenizer.json'} is a {shown(model.get('type'), 40)} tokenizer, not a BERT "
                             "WordPiece one; bertcli adopts WordPiece tokenizers (or train a SentencePiece one with "
                             "`bertcli tokenize`)")
        if normalizer.get("type") == "BertNormalizer":
            options = wordpiece_options(bool(normalizer.get("lowercase")), normalizer.get("strip_accents"),
                                        bool(normalizer.get("handle_chinese_chars", True)))
        elif normalizer:
            raise UsageError(f"{path / 'tokenizer.json'} normalises with {shown(normalizer.get('type'), 40)}, not BERT's; "
                             "bertcli adopts BERT tokenizers only")
        ids = model.get("vocab")
        if (not isinstance(ids, dict) or len(ids) > MAX_VOCAB
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids.values())
                or sorted(ids.values()) != list(range(len(ids)))):
            raise UsageError(f"{path / 'tokenizer.json'}: model.vocab is not a piece → id map with ids 0..n-1; it is damaged")
        fast_vocab = sorted(ids, key=ids.get)
        if vocab is not None and vocab != fast_vocab:
            raise UsageError(f"{path}: vocab.txt and tokenizer.json list different vocabularies; keep the pair that belongs together")
        vocab = fast_vocab
    elif config.get("tokenizer_class") and "Bert" not in str(config["tokenizer_class"]):
        raise UsageError(f"{path / 'tokenizer_config.json'}: tokenizer_class {shown(config['tokenizer_class'], 40)} "
                         "is not a BERT tokenizer")
    if vocab is None:
        raise UsageError(f"{path} has neither vocab.txt nor tokenizer.json; give a Hugging Face BERT tokenizer directory")
    if lowercase is not None and lowercase != options["lowercase"]:
        raise UsageError(f"--{'' if lowercase else 'no-'}lowercase contradicts {path}, which is "
                         f"{'uncased' if options['lowercase'] else 'cased'}; leave the flag out")
    return vocab, options


def read_published(source: Path, lowercase: bool | None) -> tuple[list[str], dict]:
    """Vocabulary and options of a Google vocab.txt or a Hugging Face BERT tokenizer directory."""
    source = Path(source)
    if source.is_dir() and any((source / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return _from_hf_dir(source, lowercase)
    vocab_path = source / VOCAB_FILE if source.is_dir() else source
    if not vocab_path.is_file():
        raise UsageError(f"--from {source}: no vocab.txt, tokenizer.json or tokenizer_config.json there; give a Google "
                         "vocab.txt or a Hugging Face BERT tokenizer directory")
    if lowercase is None:
        raise UsageError(f"--from {vocab_path}: a bare vocab.txt does not say whether the model is uncased; "
                         "pass --lowercase (uncased models) or --no-lowercase (cased)")
    return _read_vocab_file(vocab_path), wordpiece_options(lowercase)


def add_words(tok: WordPieceTokenizer, words_file: Path) -> tuple[list[str], list[str], list[str]]:
    """Put the file's words (one per line) into [unused…] slots, in id order: (new vocabulary, added, already known)."""
    lines = read_bounded_text(Path(words_file), MAX_WORDS_FILE_BYTES, "--add-words").splitlines()
    pre_tokenize = tok.pipeline.pre_tokenizer.pre_tokenize_str
    known = set(tok.vocab)
    added, already = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        word = tok.normalize(line.strip())
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            raise UsageError(f"--add-words {words_file}: line {n} ({shown(word, 40)!r}) has {len(word)} characters; "
                             f"WordPiece reads a word of more than {MAX_INPUT_CHARS_PER_WORD} as [UNK], so it could "
                             "never be produced: drop it")
        if [w for w, _ in pre_tokenize(word)] != [word]:
            raise UsageError(f"--add-words {words_file}: line {n} ({shown(line.strip(), 60)!r}) is not one word once "
                             "split as BERT splits text (spaces and punctuation separate words); list its words instead")
        if word in known:
            already.append(word)
            continue
        known.add(word)
        added.append(word)
    slots = [i for i, piece in enumerate(tok.vocab) if UNUSED.fullmatch(piece)]
    if len(added) > len(slots):
        raise UsageError(f"--add-words {words_file}: {len(added)} new words but the vocabulary has only {len(slots)} "
                         "[unused…] slots; list fewer words")
    vocab = list(tok.vocab)
    for slot, word in zip(slots, added):
        vocab[slot] = word
    return vocab, added, already


def adopt(source: Path, lowercase: bool | None, words_file: Path | None = None) -> tuple[WordPieceTokenizer, dict]:
    """A bertcli tokenizer for a published BERT vocabulary; the summary says what was done."""
    vocab, options = read_published(source, lowercase)
    tok = WordPieceTokenizer(vocab, options, {"adopted_from": str(Path(source).resolve())})
    summary = {"source": str(source), "added_words": [], "known_words": []}
    if words_file is not None:
        vocab, summary["added_words"], summary["known_words"] = add_words(tok, words_file)
        tok = WordPieceTokenizer(vocab, options, {**tok.meta, "added_words": summary["added_words"]})
    summary["special_ids"] = tok.special_ids
    return tok, summary

