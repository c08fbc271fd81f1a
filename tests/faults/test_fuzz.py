"""Bad input fuzzing: random YAML configs, random command lines, random bytes as a corpus.

The promise: never a traceback — a one-line error with exit 1 or 2, or success.
"""

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertcli.config import SECTIONS, load_config
from bertcli.errors import UsageError
from conftest import SAMPLE

pytestmark = pytest.mark.slow  # fuzzing

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

KNOWN_KEYS = ["out_dir", "seed", *SECTIONS] + [f.name for cls in SECTIONS.values() for f in cls.__dataclass_fields__.values()]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(), max_size=3))
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(string.ascii_letters + "_.", min_size=1, max_size=10))
configs = st.recursive(scalars, lambda inner: st.dictionaries(keys, inner, max_size=5), max_leaves=12)


@FUZZ
@given(configs)
def test_random_yaml_configs_give_usage_errors_or_configs(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_config(path)
    except UsageError as e:
        assert "\n" not in str(e)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_yaml(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except UsageError as e:
        assert "\n" not in str(e)


COMMANDS = ["tokenize", "make-data", "show-data", "pretrain", "eval", "export", "predict"]
OPTIONS = ["--out", "--tokenizer", "--vocab-size", "--model-type", "--max-seq-length", "--max-predictions",
           "--masked-lm-prob", "--dupe-factor", "--workers", "--config", "--set", "--resume", "--checkpoint", "--data",
           "--split", "--batch-size", "--count", "--start", "--json", "--overwrite", "--strict", "--top-k", "--help"]
VALUES = st.one_of(st.sampled_from(["0", "-1", "1e9", "abc", "", "x=1", "train.nope=2", "auto", str(SAMPLE), "out",
                                    "tok", "[MASK]", "nan"]),
                   st.text(string.printable, max_size=8))


@FUZZ
@given(st.sampled_from(COMMANDS), st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), max_size=6))
def test_random_command_lines(cli, tmp_path_factory, monkeypatch, command, args):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    code, out, err = cli(command, *args)
    assert code in (0, 1, 2), (command, args, code, err)
    assert "Traceback" not in err, (command, args, err)


@FUZZ
@given(st.binary(min_size=0, max_size=4000))
def test_random_bytes_as_a_corpus(cli, tmp_path_factory, data):
    d = tmp_path_factory.mktemp("bytes")
    corpus = d / "corpus.txt"
    corpus.write_bytes(data)
    code, _, err = cli("tokenize", corpus, "--out", d / "tok", "--vocab-size", "60")
    assert code in (0, 1, 2) and "Traceback" not in err, err
    if code == 0:
        code, _, err = cli("make-data", corpus, "--tokenizer", d / "tok", "--out", d / "data", "--workers", "1")
        assert code in (0, 1, 2) and "Traceback" not in err, err


@pytest.mark.parametrize("args", [["pretrain"], ["tokenize", "--out", "x"], ["eval", "--checkpoint", "x"]])
def test_missing_required_arguments_exit_2(cli, args):
    code, _, err = cli(*args)
    assert code == 2 and "Traceback" not in err
