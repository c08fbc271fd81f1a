"""An adopted Hugging Face `tokenizers` tokenizer of any model type (BPE, byte-level BPE, Unigram, ...).

`bertcli tokenize --from DIR`, where DIR's `tokenizer.json` is not a BERT WordPiece one (for
example ModernBERT's byte-level BPE), keeps that file as it is: its pipeline decides the ids, so
data made with it gives the published model's ids. The directory holds `tokenizer.json` and the
metadata of base.py. The five roles BERT's code needs (pad, unk, cls, sep, mask) are read from
the source's `tokenizer_config.json` / `special_tokens_map.json` (`cls_token: "[CLS]"`, ...; a
RoBERTa-style `bos_token`/`eos_token` stands in for cls/sep), and their ids from the tokenizer
itself; a role the files do not name or the vocabulary lacks is a one-line error. The identity
hash covers tokenizer.json and the role → token map.

Pretraining data is encoded with the specials *as text* (`encode_special_tokens`), so a corpus
that spells "[MASK]" cannot inject the token; `encode_query` (predict) reads them as tokens.
Word starts (whole-word masking) follow the pipeline's decoder: byte-level "Ġ", Metaspace "▁",
WordPiece's "##" continuation; any other decoder: every piece starts a word.
Not done here: training such a tokenizer, or adding words to it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.fsutil import read_json
from bertcli.tokenizer.base import SPECIAL_NAMES, SPECIAL_TOKENS, Tokenizer, sha256_bytes

TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENIZER_BYTES = 64 << 20  # published tokenizer.json files are a few MB; past this it is not one
FALLBACK_ROLES = {"cls": "bos_token", "sep": "eos_token"}  # RoBERTa-style files name these instead


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UsageError("adopted tokenizers need the `tokenizers` package: pip install 'bertcli[wordpiece]'") from None
    return tokenizers


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _pipeline(data: bytes, where: Path):
    try:
        return _tokenizers().Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception for any malformed file
        raise UsageError(f"{where}: not a Hugging Face tokenizers file ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None


class AdoptedTokenizer(Tokenizer):
    kind = "hf"

    def __init__(self, data: bytes, special_tokens: dict[str, str], meta: dict | None = None, path: Path | None = None,
                 where: Path | None = None):
        where = where or (path / TOKENIZER_FILE if path else Path(TOKENIZER_FILE))
        self.data = data
        self._pipe = _pipeline(data, where)
        self._pipe.encode_special_tokens = True
        vocab_map = self._pipe.get_vocab(with_added_tokens=True)
        if sorted(vocab_map.values()) != list(range(len(vocab_map))):
            raise UsageError(f"{where}: the ids of its vocabulary are not 0..n-1 without gaps; bertcli needs one piece per id")
        vocab = sorted(vocab_map, key=vocab_map.get)
        missing = [f"{name} ({special_tokens.get(name)!r})" for name in SPECIAL_NAMES if special_tokens.get(name) not in vocab_map]
        if missing:
            raise UsageError(f"{where}: the vocabulary lacks the {', '.join(missing)} token(s) BERT-style pretraining needs; "
                             "name them in tokenizer_config.json (cls_token, sep_token, pad_token, mask_token, unk_token)")
        self.special_tokens = {name: special_tokens[name] for name in SPECIAL_NAMES}
        special_ids = {name: vocab_map[token] for name, token in self.special_tokens.items()}
        decoder = json.loads(data).get("decoder") or {}
        self.word_marker = self._word_marker(decoder)
        identity = sha256_bytes(data + b"\0" + json.dumps(self.special_tokens, sort_keys=True).encode())
        super().__init__(vocab, special_ids, {**(meta or {}), "special_token_strings": self.special_tokens}, path, identity)

    @staticmethod
    def _word_marker(decoder: dict) -> tuple[str, str]:
        """("start", prefix) or ("continue", prefix): how a piece says where a word begins."""
        kinds = [decoder] + [d for d in decoder.get("decoders", []) if isinstance(d, dict)]
        for d in kinds:
            if d.get("type") == "ByteLevel":
                return "start", "Ġ"
            if d.get("type") == "Metaspace":
                return "start", d.get("replacement", "▁")
            if d.get("type") == "WordPiece":
                return "continue", d.get("prefix", "##")
        return "none", ""

    # --- reading ---------------------------------------------------------------------------------
    @classmethod
    def from_published(cls, source: Path) -> "AdoptedTokenizer":
        """The tokenizer of a Hugging Face directory: its tokenizer.json and the roles its config files name."""
        source = Path(source)
        path = source / TOKENIZER_FILE
        if not path.is_file():
            raise UsageError(f"--from {source}: no {TOKENIZER_FILE}; give a Hugging Face tokenizer directory")
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise UsageError(f"{path} is larger than {MAX_TOKENIZER_BYTES >> 20} MiB; it is not a tokenizer file")
        roles: dict[str, str] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins where both say
            if (source / name).is_file():
                found = read_json(source / name, "tokenizer config")
                if not isinstance(found, dict):
                    raise UsageError(f"{source / name} is not a JSON object; it is damaged")
                for role in SPECIAL_NAMES:
                    text = _token_text(found.get(f"{role}_token")) or _token_text(found.get(FALLBACK_ROLES.get(role, "")))
                    if text:
                        roles[role] = text
        for role in SPECIAL_NAMES:
            roles.setdefault(role, SPECIAL_TOKENS[role])  # no config file: BERT's spellings, if the vocabulary has them
        return cls(path.read_bytes(), roles, {"adopted_from": str(source.resolve())}, where=path)

    @classmethod
    def from_dir(cls, path: Path, meta: dict) -> "AdoptedTokenizer":
        file = path / TOKENIZER_FILE
        if not file.is_file() or file.stat().st_size > MAX_TOKENIZER_BYTES:
            raise UsageError(f"{path} is not an adopted tokenizer directory (no usable {TOKENIZER_FILE}); remake it with "
                             "`bertcli tokenize --from`")
        data = file.read_bytes()
        if sha256_bytes(data) != (meta.get("files") or {}).get(TOKENIZER_FILE):
            raise UsageError(f"{file} does not match its sha256 in the metadata; the tokenizer was modified, remake it")
        roles = meta.get("special_token_strings")
        if not isinstance(roles, dict) or not all(isinstance(roles.get(k), str) for k in SPECIAL_NAMES):
            raise UsageError(f"{path}: the metadata lacks the special tokens; it was edited, remake the tokenizer")
        tok = cls(data, roles, meta, path)
        if tok.sha256 != meta.get("sha256") or tok.special_ids != meta.get("special_ids"):
            raise UsageError(f"{path}: the metadata's sha256 or special ids do not match {TOKENIZER_FILE}; remake the tokenizer")
        return tok

    # --- text ------------------------------------------------------------------------------------
    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        if threads > 1:
            return [e.ids for e in self._pipe.encode_batch(texts, add_special_tokens=False)]
        return [self._pipe.encode(t, add_special_tokens=False).ids for t in texts]

    def encode_query(self, text: str) -> list[int]:
        self._pipe.encode_special_tokens = False
        try:
            return self._pipe.encode(text, add_special_tokens=False).ids
        finally:
            self._pipe.encode_special_tokens = True

    def decode(self, ids) -> str:
        return self._pipe.decode([int(i) for i in ids], skip_special_tokens=False)

    def starts_word(self, piece: str) -> bool:
        how, marker = self.word_marker
        if how == "start":
            return piece.startswith(marker)
        return not piece.startswith(marker) if how == "continue" else True

    # --- files -----------------------------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        return {TOKENIZER_FILE: self.data}

    def hf_files(self, max_length: int, model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")) -> dict[str, bytes]:
        """tokenizer.json as adopted, and a tokenizer_config.json naming its special tokens."""
        tokens = {f"{role}_token": self.special_tokens[role] for role in ("unk", "sep", "pad", "cls", "mask")}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length, "padding_side": "right",
                  "truncation_side": "right", "model_input_names": list(model_input_names),
                  "clean_up_tokenization_spaces": False, **tokens}
        dump = lambda obj: (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()  # noqa: E731
        return {TOKENIZER_FILE: self.data, "tokenizer_config.json": dump(config), "special_tokens_map.json": dump(tokens)}
