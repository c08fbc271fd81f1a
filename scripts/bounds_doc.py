"""Write docs/bounds.md from bertcli/bounds.py and model.LIMITS (tests/test_bounds.py checks it is current)."""

from pathlib import Path

from bertcli.bounds import CONFIG, OPTIONS
from bertcli.model import LIMITS, MAX_PARAMETERS

INTRO = """# Bounds: the range of every numeric option and config key

Every numeric option of every command and every numeric key of the pretraining config has a
range, checked before any file is read or anything is allocated. A value outside it (NaN and
infinity are outside every range) stops the command with one line naming the option and its
range, exit 2. The ranges lie far beyond any real run and inside what the libraries behind the
options accept: SentencePiece and `tokenizers` abort the process on a vocabulary of 2³¹, torch
crashes on 100,000 intra-op threads, numpy seeds are 32-bit, and a process count must stay below
what a machine can start.

The tables below are `bertcli/bounds.py` (`OPTIONS`, `CONFIG`), the one place they are defined
(this page is written from it by `scripts/bounds_doc.py`); `tests/test_bounds.py` checks that the
page is current and walks every entry with values just outside it. Relations between values
(`--max-predictions` within `--max-seq-length` - 3, `train.warmup_steps` within
`train.max_steps`, the global batch a multiple of the micro batch) are checked by the options
they belong to. The fine-tuning recipe's keys are checked by `bertcli/finetune/config.py`.
"""

OTHERS = """## Other values that reach a library as they are

- `--encoding` must be a text encoding Python can decode with and ASCII-compatible: transforms
  such as `rot13`, `base64`, `uu_codec`, `zlib` and the `undefined` codec are refused, and so are
  UTF-16 and UTF-32 (convert the files first, e.g. `iconv -f utf-16le -t utf-8`).
- An output directory's name (`--out`, `out_dir`) may have at most 200 bytes, the other parts of
  its path 255: bertcli adds up to ~50 bytes for its temporary and lock names, and the filesystem
  allows 255.
- Processes: `make-data --workers` at most 256 (0: one per core), `data.num_workers` at most 64;
  threads: `tokenize --threads` and `system.cpu_threads` at most 256.
"""


def markdown() -> str:
    out = [INTRO]
    for command, table in OPTIONS.items():
        out += [f"## `bertcli {command}`", "", "| option | range |", "|---|---|"]
        out += [f"| `--{n.replace('_', '-')}` | {r.text()} |" for n, r in table.items()]
        out.append("")
    out += ["## `bertcli pretrain`: the config", "", "| key | range |", "|---|---|"]
    out += [f"| `{k}` | {r.text()} |" for k, r in CONFIG.items()]
    out += ["", "The `model:` section has the ranges of `bertcli/model.py` (`LIMITS`), the same that guard a",
            "checkpoint's `trainer_state.json` and the `config.json` of a `train.init_from` directory, through",
            "the same function (`config_problems`), before anything is allocated:", "",
            "| key | range |", "|---|---|"]
    out += [f"| `model.{k}` | an integer from {lo:,} to {hi:,} |" for k, (lo, hi) in LIMITS.items()
            if k not in ("vocab_size", "pad_token_id")]
    out += ["| `model.hidden_dropout_prob`, `model.attention_probs_dropout_prob` | a number from 0 to below 1 |",
            "| `model.initializer_range` | a number from 0 to 1 |", "| `model.layer_norm_eps` | a number from 1e-30 to 1 |",
            "", f"and a model of at most {MAX_PARAMETERS:,} parameters in all (about six BERT-larges). In a",
            "`config.json` also `vocab_size` (1 to 1,048,576) and `pad_token_id` (below it) are checked.", "", OTHERS]
    return "\n".join(out)


if __name__ == "__main__":
    (Path(__file__).resolve().parents[1] / "docs" / "bounds.md").write_text(markdown(), encoding="utf-8")
