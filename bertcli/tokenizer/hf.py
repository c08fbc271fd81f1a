"""The parts of a Hugging Face tokenizer directory that every bertcli tokenizer writes alike.

Special tokens are added tokens (text that spells "[MASK]" is that token, as in every HF
tokenizer), and pairs are `[CLS] A [SEP] B [SEP]` with token types 0 for A and 1 for B, as in
pretraining. The ids come from the tokenizer, never from constants.
"""

from __future__ import annotations

import json

from bertcli.tokenizer.base import SPECIAL_NAMES, SPECIAL_TOKENS


def added_tokens(tok) -> list[dict]:
    return [{"id": tok.special_ids[k], "content": SPECIAL_TOKENS[k], "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
            for k in sorted(SPECIAL_NAMES, key=tok.special_ids.get)]


def bert_post_processor(tok) -> dict:
    cls, sep = SPECIAL_TOKENS["cls"], SPECIAL_TOKENS["sep"]

    def special(name: str, type_id: int) -> dict:
        return {"SpecialToken": {"id": name, "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    return {
        "type": "TemplateProcessing",
        "single": [special(cls, 0), sequence("A", 0), special(sep, 0)],
        "pair": [special(cls, 0), sequence("A", 0), special(sep, 0), sequence("B", 1), special(sep, 1)],
        "special_tokens": {t: {"id": t, "ids": [tok.special_ids[k]], "tokens": [t]} for k, t in (("cls", cls), ("sep", sep))},
    }


def tokenizer_config(tok, max_length: int, tokenizer_class: str, **extra) -> tuple[dict, dict]:
    """tokenizer_config.json and special_tokens_map.json."""
    special_map = {f"{k}_token": SPECIAL_TOKENS[k] for k in ("unk", "sep", "pad", "cls", "mask")}
    added = {str(tok.special_ids[k]): {"content": SPECIAL_TOKENS[k], "lstrip": False, "normalized": False,
                                       "rstrip": False, "single_word": False, "special": True} for k in SPECIAL_NAMES}
    config = {
        "tokenizer_class": tokenizer_class,
        "model_max_length": max_length,
        "padding_side": "right",
        "truncation_side": "right",
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added,
        **extra,
        **special_map,
    }
    return config, special_map


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()
