"""Train and load a SentencePiece tokenizer with BERT's special tokens.

A SentencePiece tokenizer directory holds `spm.model` (the SentencePiece model), `vocab.txt`
(one piece and its score per line, for people) and the metadata of base.py (training options
beside it). Its identity hash is the model's sha256. `bertcli tokenize` puts the special tokens
at ids 0-4 ([PAD] [UNK] [CLS] [SEP] [MASK]); loading finds them by name, so the rest of the code
never assumes those ids. This module does not split text into documents (corpus.py) or build examples.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import re
import tempfile
from pathlib import Path

import sentencepiece as spm

from bertcli.errors import DataError, UsageError
from bertcli.tokenizer.base import SPECIAL_TOKENS, Tokenizer, find_special_ids, sha256_bytes
from bertcli.tokenizer.hf import json_bytes, tokenizer_config
from bertcli.tokenizer.sampling import MAX_SENTENCE_BYTES
from bertcli.tokenizer.sentencepiece_hf import WORD_START, fast_tokenizer_json, spm_with_normalizer

MODEL_FILE, VOCAB_FILE = "spm.model", "vocab.txt"

# Where `bertcli tokenize` puts the special tokens (the trainer needs ids; everything after loading
# reads them from the model). [CLS]/[SEP]/[MASK] are SentencePiece *control* symbols: they have ids
# but text that spells "[MASK]" never encodes to them.
TRAINED_SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
SPECIAL_NAME_OF = {token: name for name, token in SPECIAL_TOKENS.items()}
SPECIAL_IN_TEXT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS.values()) + ")")


def trainer_kwargs(options) -> dict:
    """SentencePiece trainer settings for a BERT vocabulary (shared with the overhead benchmark)."""
    return dict(
        vocab_size=options.vocab_size,
        model_type=options.model_type,
        character_coverage=options.character_coverage,
        byte_fallback=options.byte_fallback,
        normalization_rule_name="nmt_nfkc_cf" if options.lowercase else "nmt_nfkc",
        pad_id=TRAINED_SPECIAL_IDS["pad"], pad_piece=SPECIAL_TOKENS["pad"],
        unk_id=TRAINED_SPECIAL_IDS["unk"], unk_piece=SPECIAL_TOKENS["unk"],
        bos_id=-1, eos_id=-1,
        control_symbols=[SPECIAL_TOKENS[k] for k in ("cls", "sep", "mask")],
        max_sentence_length=MAX_SENTENCE_BYTES,
        num_threads=options.resolved_threads,
        minloglevel=2,
    )


def _explain_trainer_error(err: RuntimeError, vocab_size: int) -> UsageError:
    """Turn SentencePiece's raw check failures into a sentence that says what to do."""
    text = str(err)
    if m := re.search(r"Vocabulary size too high.*?<= (\d+)", text):
        return UsageError(f"--vocab-size {vocab_size} is more than this corpus supports; "
                          f"the largest that works is {m.group(1)} (or add more text)")
    if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", text):
        return UsageError(f"--vocab-size {vocab_size} is below the {m.group(1)} characters and special "
                          f"tokens this corpus needs; use at least {m.group(1)} or lower --character-coverage")
    if "all_chars_count" in text or "sentences_.empty()" in text:
        return UsageError("the corpus has no characters to learn from once normalised (only control or "
                          "whitespace characters); give a text corpus")
    return UsageError(f"SentencePiece could not train: {' '.join(text.split()) or repr(err)}")


def _train_from_file(conn, sample_path: str, options) -> None:
    """In a fresh child process: train on the sample file, send back the model or the error."""
    try:
        with open(sample_path, encoding="utf-8") as f:
            sentences = f.read().split("\n")[:-1]
        # An iterator, not input=path: the model records its input path, and must not differ by it.
        spm.set_random_generator_seed(options.seed)
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                       input_sentence_size=0, **trainer_kwargs(options))
        conn.send(("ok", model.getvalue()))
    except RuntimeError as e:
        conn.send(("error", str(e)))
    finally:
        conn.close()


def train_model(sentences: list[str], options) -> bytes:
    """Train on an in-memory sample and return the serialized model.

    SentencePiece's trainer is C++ that does not return to Python until it is done, so Ctrl-C
    would wait for the end of training. It therefore runs in a child process, fed the sample
    through a temporary file, while this process waits, ready to stop it. The child is spawned,
    not forked: forking a process whose SentencePiece or OpenMP threads already ran can deadlock.
    """
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bertcli-spm-") as tmp:
        sample_path = os.path.join(tmp, "sample.txt")
        with open(sample_path, "w", encoding="utf-8") as f:
            for sentence in sentences:
                f.write(sentence)
                f.write("\n")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_train_from_file, args=(send, sample_path, options), daemon=True)
        child.start()
        send.close()
        try:
            while not receive.poll(0.1):
                if not child.is_alive() and not receive.poll(0):
                    raise DataError(f"SentencePiece training died (exit code {child.exitcode}); "
                                    "it may have run out of memory: lower --input-sentence-size")
            status, payload = receive.recv()
        except BaseException:
            child.kill()
            raise
        finally:
            child.join(timeout=10)
            receive.close()
    if status == "error":
        raise _explain_trainer_error(RuntimeError(payload), options.vocab_size)
    return payload


class SentencePieceTokenizer(Tokenizer):
    """A loaded SentencePiece model plus bertcli's metadata."""

    kind = "sentencepiece"

    def __init__(self, model: bytes, meta: dict, path: Path | None = None):
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.model = model
        vocab = self.sp.id_to_piece(list(range(self.sp.get_piece_size())))
        where = path / MODEL_FILE if path else "the SentencePiece model"
        super().__init__(vocab, find_special_ids(vocab, str(where)), meta, path, sha256_bytes(model))
        self._query_encoders = None

    @classmethod
    def from_dir(cls, path: Path, meta: dict, meta_file: str) -> "SentencePieceTokenizer":
        """Load from a directory whose metadata (format checked by the caller) is `meta`."""
        model_path = path / MODEL_FILE
        if not model_path.is_file():
            raise UsageError(f"{path} is not a bertcli tokenizer (no {MODEL_FILE}); make one with `bertcli tokenize`")
        model = model_path.read_bytes()
        if sha256_bytes(model) != meta.get("sha256"):
            raise UsageError(f"{model_path} does not match the sha256 in {meta_file}; the tokenizer was modified, retrain it")
        try:
            tok = cls(model, meta, path)
        except RuntimeError:
            raise UsageError(f"{model_path} is not a SentencePiece model; retrain the tokenizer") from None
        recorded = meta.get("special_ids", TRAINED_SPECIAL_IDS)
        for name, i in tok.special_ids.items():
            if recorded.get(name) != i or tok.sp.is_unknown(i) != (name == "unk"):
                raise UsageError(f"{model_path}: {SPECIAL_TOKENS[name]} is not at id {recorded.get(name)} as {meta_file} "
                                 f"says, or is not a special piece; it was not made by `bertcli tokenize`")
            if name != "unk" and not tok.sp.is_control(i):
                raise UsageError(f"{model_path}: {SPECIAL_TOKENS[name]} is text, not a special piece; it was not made by `bertcli tokenize`")
        return tok

    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        """Token ids of each text (no [CLS]/[SEP]); `threads` encodes in parallel."""
        return self.sp.encode(texts, num_threads=threads)

    def encode_query(self, text: str) -> list[int]:
        """Encode text as the exported tokenizer does: special tokens in the text are those tokens,
        and only the start of the text gets the `▁` word prefix (after a [MASK], "." stays a
        continuation piece and " is" starts a new word, as in the training data)."""
        if self._query_encoders is None:
            # after a special token, text that does not start with a space continues a word: no `▁`;
            # the second model gives the normalised text as is, to see whether it starts with a space
            self._query_encoders = tuple(spm.SentencePieceProcessor(model_proto=spm_with_normalizer(
                self.model, add_dummy_prefix=False, remove_extra_whitespaces=collapse)) for collapse in (True, False))
        continuation, raw = self._query_encoders
        ids: list[int] = []
        for k, part in enumerate(SPECIAL_IN_TEXT.split(text)):
            if k % 2:  # re.split puts the matched separators at odd indices
                ids.append(self.special_ids[SPECIAL_NAME_OF[part]])
            elif k == 0 or raw.normalize(part).startswith(WORD_START):
                ids += self.sp.encode(part)
            else:
                ids += continuation.encode(part)
        return ids

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it (NFKC, runs of spaces collapsed, case-folded if trained
        --lowercase): what decode(encode(text)) gives back when no piece is [UNK]."""
        return self.sp.normalize(text).replace(WORD_START, " ").removeprefix(" ")

    def starts_word(self, piece: str) -> bool:
        return piece.startswith(WORD_START)

    def piece_text(self, piece: str) -> str:
        return piece.replace(WORD_START, " ").strip()

    def files(self) -> dict[str, bytes]:
        ids = list(range(self.vocab_size))
        # `+ 0.0` turns BPE's first score, -0.0, into 0 so that vocab.txt does not say "-0"
        vocab_lines = "".join(f"{piece}\t{score + 0.0:g}\n" for piece, score in zip(self.vocab, self.sp.get_score(ids)))
        return {MODEL_FILE: self.model, VOCAB_FILE: vocab_lines.encode()}

    def hf_files(self, max_length: int) -> dict[str, bytes]:
        """A Hugging Face tokenizer directory giving this model's ids (see sentencepiece_hf.py)."""
        # the generic class: BertTokenizer(Fast) would rebuild a WordPiece pipeline from a vocab file
        config, special_map = tokenizer_config(self, max_length, "PreTrainedTokenizerFast")
        return {"tokenizer.json": json_bytes(fast_tokenizer_json(self)), "tokenizer_config.json": json_bytes(config),
                "special_tokens_map.json": json_bytes(special_map), MODEL_FILE: self.model}

