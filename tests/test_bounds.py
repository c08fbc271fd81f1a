"""Every numeric option and config key has a documented range, checked before any work: each is
walked with values just outside it (and NaN, and 2**70), and each gives one line, exit 2.

Also the non-numeric values that reach a library as they are: --encoding, an output name.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bertcli.bounds import CONFIG, OPTIONS, Range

REPO = Path(__file__).resolve().parents[1]
# What each command needs besides the option under test; nothing here exists, since a range is
# checked before any file is looked at.
REQUIRED = {
    "tokenize": ["in.txt", "--out", "{tmp}/tok"],
    "make-data": ["in.txt", "--tokenizer", "{tmp}/tok", "--out", "{tmp}/data"],
    "show-data": ["{tmp}/data"],
    "eval": ["--checkpoint", "{tmp}/run", "--data", "{tmp}/data"],
    "predict": ["x [MASK] y", "--checkpoint", "{tmp}/run"],
    "finetune": ["--model", "{tmp}/m", "--train", "{tmp}/t.csv", "--validation", "{tmp}/v.csv", "--out", "{tmp}/ft"],
    "glue": ["--model", "{tmp}/m", "--data", "{tmp}/glue", "--out", "{tmp}/g"],
}


def outside(r: Range) -> list:
    """Values just outside a range, and ones no range holds."""
    if r.integer:
        return [int(r.low) - 1, int(r.high) + 1, 2**70]
    step = max(abs(r.high), 1.0) * 1e-6
    return [r.low if r.low_open else r.low - step, r.high + step, math.nan, math.inf]


CASES = [(command, name, value) for command, table in OPTIONS.items() for name, r in table.items()
         for value in outside(r)]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command, name, value", CASES, ids=[f"{c}-{n}-{v}" for c, n, v in CASES])
def test_every_option_out_of_range_is_one_line_exit_2(cli, tmp_path, command, name, value):
    args = [a.format(tmp=tmp_path) for a in REQUIRED[command]]
    code, _, err = cli(command, *args, "--" + name.replace("_", "-"), value)
    assert code == 2, err
    line = one_error_line(err)
    assert f"--{name.replace('_', '-')}" in line and "out of range" in line
    assert not list(tmp_path.iterdir())  # nothing was made


CONFIG_CASES = [(key, value) for key, r in CONFIG.items() for value in outside(r)]


@pytest.mark.parametrize("key, value", CONFIG_CASES, ids=[f"{k}-{v}" for k, v in CONFIG_CASES])
def test_every_config_key_out_of_range_is_one_line_exit_2(cli, tmp_path, key, value):
    sets = [f"data.dir={tmp_path}/data", f"out_dir={tmp_path}/run", f"{key}={value}"]
    if key.startswith("data.") and "prob" in key:
        sets.append("data.masking=dynamic")
    code, _, err = cli("pretrain", *(a for s in sets for a in ("--set", s)))
    assert code == 2, err
    line = one_error_line(err)
    assert key in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_the_table_names_real_options(command):
    """A table entry that is no parameter of its command would check nothing."""
    import inspect

    from bertcli import cli

    function = {"make-data": cli.make_data_command, "show-data": cli.show_data_command, "eval": cli.eval_command}.get(
        command) or getattr(cli, command)
    assert set(OPTIONS[command]) <= set(inspect.signature(function).parameters)


def test_every_numeric_option_of_every_command_is_in_the_table():
    import inspect

    from bertcli import cli

    functions = {"tokenize": cli.tokenize, "make-data": cli.make_data_command, "show-data": cli.show_data_command,
                 "eval": cli.eval_command, "predict": cli.predict, "finetune": cli.finetune,
                 "glue": cli.glue}
    for command, function in functions.items():
        hints = inspect.get_annotations(function, eval_str=True)
        numeric = {n for n, h in hints.items() if h in (int, float) or str(h) in ("typing.Optional[int]",
                                                                                    "typing.Optional[float]")}
        assert numeric <= set(OPTIONS[command]), (command, numeric - set(OPTIONS[command]))


def test_every_numeric_config_key_is_in_the_table():
    import typing
    from dataclasses import fields

    from bertcli.config import SECTIONS, Config

    keys = {f.name for f in fields(Config) if typing.get_type_hints(Config)[f.name] is int}
    for section, cls in SECTIONS.items():
        if section == "model":
            continue  # model.LIMITS and config_problems, shared with checkpoints and config.json
        hints = typing.get_type_hints(cls)
        keys |= {f"{section}.{f.name}" for f in fields(cls)
                 if hints[f.name] in (int, float, typing.Optional[int], typing.Optional[float])}
    assert keys == set(CONFIG), keys ^ set(CONFIG)


def test_the_docs_list_every_range():
    """docs/bounds.md is written from the table (scripts/bounds_doc.py) and lists each entry."""
    import runpy

    doc = (REPO / "docs" / "bounds.md").read_text(encoding="utf-8")
    assert doc == runpy.run_path(str(REPO / "scripts" / "bounds_doc.py"))["markdown"](), \
        "docs/bounds.md is stale: run scripts/bounds_doc.py"
    for command, table in OPTIONS.items():
        for name, r in table.items():
            assert f"`--{name.replace('_', '-')}` | {r.text()}" in doc, (command, name)
    for key, r in CONFIG.items():
        assert f"`{key}` | {r.text()}" in doc, key


@pytest.mark.parametrize("encoding", ["rot13", "base64", "uu_codec", "zlib", "undefined", "hex", "bz2", "utf-16",
                                      "no-such-codec", "x" * 300])
def test_only_ascii_compatible_text_encodings(cli, tmp_path, encoding):
    (tmp_path / "in.txt").write_text("Some text.\n")
    code, _, err = cli("tokenize", tmp_path / "in.txt", "--out", tmp_path / "tok", "--encoding", encoding)
    assert code == 2 and "--encoding" in one_error_line(err)
    assert len(err) < 400


@pytest.mark.parametrize("command", ["tokenize", "make-data", "pretrain", "export"])
def test_an_output_name_too_long_is_one_line(cli, tmp_path, command):
    long = tmp_path / ("n" * 300)
    args = {"tokenize": ["tokenize", "in.txt", "--out", long],
            "make-data": ["make-data", "in.txt", "--tokenizer", tmp_path, "--out", long],
            "pretrain": ["pretrain", "--set", f"data.dir={tmp_path}", "--set", f"out_dir={long}"],
            "export": ["export", "--checkpoint", tmp_path, "--out", long]}[command]
    code, _, err = cli(*args)
    assert code == 2 and "300 bytes" in one_error_line(err)


def test_torch_is_one_where_weights_only_holds():
    """CVE-2025-32434: torch.load(weights_only=True) can run code below torch 2.6."""
    import torch

    from bertcli.checkpoint import MIN_SAFE_TORCH, torch_version

    assert torch_version() >= MIN_SAFE_TORCH == (2, 6), torch.__version__
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"torch>=2\.(\d+)', pyproject) and int(re.search(r'"torch>=2\.(\d+)', pyproject)[1]) >= 6
    assert '"torch>=2.6"' in (REPO / "scripts" / "setup.sh").read_text()
