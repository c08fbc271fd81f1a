"""Writing: one split's stream of windows cut into shards, with a resumable cursor.

After every shard, `progress.json` records the finished shards and where the next one starts
(window, offset), so `--resume` keeps verified shards and recomputes only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bertcli.fsutil import own
from bertcli.make_data.options import MakeDataOptions
from bertcli.make_data.windows import WindowResult
from bertcli.objectives import get_objective
from bertcli.shards import Examples, token_dtype, write_shard
from bertcli.tokenizer import Tokenizer

PROGRESS = "progress.json"


@dataclass
class SplitState:
    """What is on disk for one split; saved in progress.json after every shard."""

    shards: list = field(default_factory=list)
    next_window: int = 0  # the first window not completely written
    next_offset: int = 0  # instances of that window already written
    counters: dict = field(default_factory=dict)  # window counters of completely written windows


class SplitWriter:
    """Cuts one split's stream of windows into shards of `shard_size`, saving progress after each."""

    def __init__(self, out_dir: Path, split: str, opts: MakeDataOptions, tok: Tokenizer, state: SplitState, save):
        self.dir = out_dir / split
        self.dir.mkdir(parents=True, exist_ok=True)
        own(out_dir, [f"{split}/"])  # the folder is bertcli's even while it holds no shard
        self.split, self.opts, self.state, self.save = split, opts, state, save
        self.dtype, self.tokenizer_sha256 = token_dtype(tok.vocab_size), tok.sha256
        self.pending: list[tuple[int, int, Examples]] = []  # (window, offset in window, examples)
        self.pending_counters: dict[int, dict] = {}
        self.windows_added = state.next_window

    def wants(self, window: int) -> bool:
        return window >= self.state.next_window

    def add(self, result: WindowResult) -> None:
        start = self.state.next_offset if result.index == self.state.next_window else 0
        examples = result.examples.slice(start, len(result.examples)) if start else result.examples
        if len(examples):
            self.pending.append((result.index, start, examples))
        self.pending_counters[result.index] = result.counters
        self.windows_added = result.index + 1
        while sum(len(e) for _, _, e in self.pending) >= self.opts.shard_size:
            self._write(self.opts.shard_size)

    def finish(self) -> None:
        while self.pending:
            self._write(self.opts.shard_size)
        self._advance_cursor()
        self.save()

    def _write(self, n: int) -> None:
        taken, rest, need = [], [], n
        for window, offset, ex in self.pending:
            if need >= len(ex):
                taken.append(ex)
                need -= len(ex)
            elif need > 0:
                taken.append(ex.slice(0, need))
                rest.append((window, offset + need, ex.slice(need, len(ex))))
                need = 0
            else:
                rest.append((window, offset, ex))
        name = f"{self.split}/shard-{len(self.state.shards):05d}.safetensors"
        own(self.dir.parent, [name], rewritten=True)  # before it exists: a kill mid-write leaves a name that is ours
        sha = write_shard(self.dir.parent / name, taken, self.dtype,
                          {"split": self.split, "shard": str(len(self.state.shards)),
                           "tokenizer_sha256": self.tokenizer_sha256})
        own(self.dir.parent, [name])  # and now its size
        self.state.shards.append({
            "file": name, "instances": sum(map(len, taken)), "tokens": sum(p.num_tokens for p in taken),
            "masked_tokens": sum(p.num_masked for p in taken),
            "random_next": sum(int(p.next_sentence_labels.sum()) for p in taken),
            "fallback_pairs": sum(int(p.fallback.sum()) for p in taken), "sha256": sha})
        self.pending = rest
        self._advance_cursor()
        self.save()

    def _advance_cursor(self) -> None:
        if self.pending:
            self.state.next_window, self.state.next_offset = self.pending[0][0], self.pending[0][1]
        else:
            self.state.next_window, self.state.next_offset = self.windows_added, 0
        for window in sorted(w for w in self.pending_counters if w < self.state.next_window):
            for key, value in self.pending_counters.pop(window).items():
                self.state.counters[key] = self.state.counters.get(key, 0) + value

    def summary(self) -> dict:
        shards = self.state.shards
        total = lambda key: sum(s[key] for s in shards)  # noqa: E731
        n, tokens = total("instances"), total("tokens")
        c = self.state.counters
        stats = {
            "random_next_fraction": total("random_next") / n if n else 0.0,
            "mean_length": tokens / n if n else 0.0,
            "padding_fraction": 1.0 - tokens / (n * self.opts.max_seq_length) if n else 0.0,
            "masked_per_instance": total("masked_tokens") / n if n else 0.0,
            "masked_fraction": total("masked_tokens") / tokens if tokens else 0.0,
            "fallback_pairs": total("fallback_pairs"),
            "dropped_pairs": c.get("dropped_pairs", 0),
            "long_sentences": c.get("long_sentences", 0),
            "single_sentence_documents": c.get("single_sentence_documents", 0),
            "windows": c.get("windows", 0),
        }
        stats = get_objective(self.opts.objective).builder.summarize(stats, c, n)
        return {
            "instances": n, "tokens": tokens, "masked_tokens": total("masked_tokens"),
            "documents": c.get("documents", 0), "sentences": c.get("sentences", 0),
            "shards": [{k: s[k] for k in ("file", "instances", "tokens", "sha256")} for s in shards],
            "stats": stats,
        }
