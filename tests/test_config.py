import pytest
import yaml

from bertcli.config import Config, load_config, parse_duration
from bertcli.errors import UsageError
from conftest import REPO, run_cli


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load_and_validate():
    for name in ("tiny.yaml", "bert-base.yaml", "bert-base-512.yaml"):
        cfg = load_config(REPO / "configs" / name)
        assert isinstance(cfg, Config)
    base = load_config(REPO / "configs" / "bert-base.yaml")
    assert (base.model.hidden_size, base.model.num_hidden_layers, base.train.global_batch_size) == (768, 12, 256)
    assert (base.train.learning_rate, base.train.warmup_steps, base.train.max_steps) == (1e-4, 10_000, 1_000_000)
    phase2 = load_config(REPO / "configs" / "bert-base-512.yaml")
    assert phase2.train.init_from


def test_overrides_parse_values_as_yaml(tmp_path):
    cfg = load_config(write(tmp_path, "data: {dir: d}\n"), ["train.learning_rate=2e-4", "system.compile=true",
                                                               "data.dir=[a, b]", "train.max_time=15m"])
    assert cfg.train.learning_rate == 2e-4 and cfg.system.compile is True
    assert [str(p) for p in cfg.data_dirs] == ["a", "b"]
    assert cfg.train.max_time == "15m"


def test_all_problems_reported_at_once_with_did_you_mean(tmp_path):
    path = write(tmp_path, "data: {dir: d}\ntrain:\n  learning_rat: 1e-3\n  micro_batch_size: 3\n"
                           "model:\n  hidden_size: abc\nsystem: {precison: bf16}\n")
    with pytest.raises(UsageError) as e:
        load_config(path)
    msg = str(e.value)
    assert "train.learning_rat" in msg and "did you mean train.learning_rate" in msg
    assert "model.hidden_size must be a int" in msg
    assert "system.precison" in msg and "system.precision" in msg
    assert str(path) in msg and "\n" not in msg


def test_contradictions_name_their_keys(tmp_path):
    with pytest.raises(UsageError) as e:
        load_config(write(tmp_path, "data: {dir: d}\ntrain: {global_batch_size: 10, micro_batch_size: 4, "
                                    "warmup_steps: 50, max_steps: 10, schedule: wavy}\n"
                                    "model: {hidden_size: 30, num_attention_heads: 4}\n"))
    msg = str(e.value)
    for key in ("train.global_batch_size", "train.warmup_steps", "train.schedule", "model.num_attention_heads"):
        assert key in msg


@pytest.mark.parametrize("text, fragment", [("a: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "must be a mapping")])
def test_bad_yaml(tmp_path, text, fragment):
    with pytest.raises(UsageError, match=fragment):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_with_python_tags_is_refused(tmp_path):
    # safe_load only: a config cannot construct Python objects
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(write(tmp_path, "out_dir: !!python/object/apply:os.system ['true']\n"))


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("45", 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_print_config_and_exit_codes(tmp_path):
    path = write(tmp_path, "data: {dir: d}\n")
    proc = run_cli("pretrain", "--config", path, "--print-config", "--set", "seed=7")
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["seed"] == 7 and printed["model"]["hidden_size"] == 768 and printed["data"]["dir"] == "d"

    bad = run_cli("pretrain", "--config", path, "--set", "train.lerning_rate=1")
    assert bad.returncode == 2
    assert "did you mean train.learning_rate" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 3  # one logical line (the terminal may wrap it)
