"""The command line itself: -h, flags, choices, precision spellings, and docs/commands.md ↔ --help agreement."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

COMMANDS = ["tokenize", "make-data", "show-data", "pretrain", "eval", "export", "predict", "finetune", "glue",
            "report"]


def help_text(cli, *command: str) -> str:
    code, out, err = cli(*command, "-h")
    assert code == 0, err
    return out + err


OTHER_TOOLS = {"--nproc_per_node"}  # torchrun's, in the README's several-GPU recipe


def options_in(text: str, command: str | None = None) -> set[str]:
    """The --options in `text`; with `command`, leaving out those written after another command's name."""
    if command is not None:
        others = "|".join(re.escape(c) for c in COMMANDS if c != command)
        text = re.sub(rf"(?<![\w-])(?:{others}) --[a-z][a-z0-9_-]*", "", text)
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text)) - OTHER_TOOLS


@pytest.mark.parametrize("command", COMMANDS)
def test_dash_h_is_help_everywhere(cli, command):
    text = help_text(cli, command)
    assert f"Usage: bertcli {command}" in text and "--help" in text
    assert help_text(cli) and "Usage: bertcli" in help_text(cli)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_flags_show_no_value_placeholder(cli, command, monkeypatch):
    """No flag reads as if it took a value: not bertcli's, nor --help and --version."""
    monkeypatch.setenv("COLUMNS", "200")
    text = help_text(cli, *([command] if command else []))
    assert "--help" in text and "<bool>" not in text
    if command is None:
        assert "--version" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_every_objective_where_it_names_a_sentence_task(cli, command, monkeypatch):
    """Three objectives (nsp, sop, mlm): a help text never speaks as if next-sentence were the only one."""
    monkeypatch.setenv("COLUMNS", "250")
    text = " ".join(help_text(cli, command).split())
    assert "masked LM + next sentence" not in text and "the NSP label" not in text
    if re.search(r"next.sentence", text, re.I):
        assert "sop" in text or "sentence-order" in text, f"{command} --help speaks of next-sentence only"


def test_on_off_flags_have_a_negative_form(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert {"--lowercase", "--no-lowercase", "--byte-fallback", "--no-byte-fallback"} <= options_in(help_text(cli, "tokenize"))
    assert {"--whole-word-mask", "--no-whole-word-mask"} <= options_in(help_text(cli, "make-data"))


@pytest.mark.parametrize("command, choices", [
    ("tokenize", ["<bpe|unigram|wordpiece>"]),
    ("show-data", ["<train|validation>"]),
    ("eval", ["<validation|train>", "<auto|cpu|cuda>", "<auto|fp32|bf16|fp16>"]),
    ("export", ["<fp32|bf16>"]),
    ("predict", ["<auto|cpu|cuda>"]),
])
def test_choices_are_listed_in_help(cli, command, choices, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = help_text(cli, command)
    for choice in choices:
        assert choice in text, (command, choice)


@pytest.mark.parametrize("args, message", [
    (["tokenize", "x.txt", "--out", "o", "--model-type", "wordpeace"], "--model-type 'wordpeace' is not one of"),
    (["eval", "--checkpoint", "{run}", "--data", "{data}", "--split", "test"], "split 'test' is not one of train, validation"),
    (["eval", "--checkpoint", "{run}", "--data", "{data}", "--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda"),
    (["eval", "--checkpoint", "{run}", "--data", "{data}", "--precision", "fp8"], "precision 'fp8' is not one of auto, fp32"),
    (["export", "--checkpoint", "{run}", "--out", "o", "--dtype", "float16"], "--dtype 'fp16' is not one of fp32, bf16"),
    (["show-data", "{data}", "--split", "dev"], "split 'dev' is not one of train, validation"),
])
def test_a_value_outside_the_choices_is_one_line_and_exit_2(cli, args, message, trained_run, data_dir, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("some text.\n")
    code, _, err = cli(*[a.format(run=trained_run, data=data_dir) for a in args])
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_precisions_have_one_spelling_and_accept_torchs_names(cli):
    from bertcli.cli import _precision

    assert [_precision(v) for v in ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16")] == \
        ["fp32", "fp32", "bf16", "bf16", "fp16", "fp16"]
    for command in ("eval", "export"):
        text = help_text(cli, command)
        assert "float32" not in text and "bfloat16" not in text


def test_set_is_repeated_once_per_key(cli, tmp_path):
    code, out, err = cli("pretrain", "--print-config", "--set", f"data.dir={tmp_path}", "--set", "train.max_steps=700",
                         "--set", "seed=3")
    assert code == 0, err
    assert "max_steps: 700" in out and "seed: 3" in out
    readme = (REPO / "README.md").read_text()
    assert "[--set key=value ...]" not in readme and "[--set key=value]..." in readme


def command_sections() -> dict[str, str]:
    """Each command's reference: its `### \\`bertcli CMD ...\\`` section in docs/commands.md or, for a
    command with a page of its own (finetune), in that page."""
    sections = {}
    for page in [REPO / "docs" / "commands.md", *sorted((REPO / "docs").glob("*.md"))]:
        for match in re.finditer(r"^### `bertcli ([a-z-]+)[^\n]*\n(.*?)(?=^#{2,3} |\Z)", page.read_text(), re.S | re.M):
            sections.setdefault(match.group(1), match.group(0))
    return sections


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_options_match_help(cli, command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    section = command_sections()[command]
    in_help = options_in(help_text(cli, command)) - {"--help"}
    in_docs = options_in(section, command)
    assert in_docs - in_help == set(), f"docs/commands.md mentions options that {command} --help lacks"
    assert in_help - in_docs == set(), f"docs/commands.md's {command} section does not mention these options"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_option_name_is_cut_short_on_an_80_column_terminal(cli, command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = help_text(cli, command)
    assert not re.search(r"--[a-z-]*…", text), text
