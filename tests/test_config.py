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
    assert "model.hidden_size must be an integer" in msg
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


@pytest.mark.slow  # bertcli subprocesses
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


def test_types_come_from_the_type_hints():
    import typing

    from bertcli.config import SECTIONS, _type_ok
    for cls in SECTIONS.values():  # every hint is one the checker knows (it raises on others)
        for name, hint in typing.get_type_hints(cls).items():
            _type_ok(getattr(cls(), name), hint)
    with pytest.raises(UsageError, match=r"system.precision must be one of auto, fp32, bf16, fp16, got 'float32'"):
        load_config(None, ["data.dir=d", "system.precision=float32"])
    with pytest.raises(UsageError, match=r"data.dir must be a string or a list of strings"):
        load_config(None, ["data.dir=[a, 3]"])


def test_model_section_is_bert_config():
    from dataclasses import fields

    from bertcli.config import ModelConfig
    from bertcli.model import DATA_FIELDS, BertConfig
    assert [f.name for f in fields(ModelConfig)] == ["architecture"] + [f.name for f in fields(BertConfig)
                                                                        if f.name not in DATA_FIELDS]
    assert all(f.metadata["help"] for f in fields(ModelConfig))
    with pytest.raises(UsageError, match=r"model.hidden_size must be an integer in \[1, 8192\]"):
        load_config(None, ["data.dir=d", "model.hidden_size=100000"])
    with pytest.raises(UsageError, match="model.hidden_act must be one of gelu, gelu_new, relu"):
        load_config(None, ["data.dir=d", "model.hidden_act=swish"])


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(UsageError, match="must be a finite number"):
        load_config(None, ["data.dir=d", f"train.adam_epsilon={value}"])


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\nout_dir: *a{levels - 1}\n"


@pytest.mark.parametrize("text, fragment", [
    (alias_bomb(), "uses more than 64 aliases"),
    ("out_dir: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 32 levels"),
    ("out_dir: " + "{a: " * 200 + "1" + "}" * 200 + "\n", "nests deeper than 32 levels"),
])
def test_yaml_bombs_are_refused_in_one_short_line(tmp_path, text, fragment):
    with pytest.raises(UsageError, match=fragment) as e:
        load_config(write(tmp_path, text))
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)


def test_a_few_aliases_work_and_bad_values_are_never_echoed_in_full(tmp_path):
    cfg = load_config(write(tmp_path, "data: {dir: &d some/dir}\nout_dir: *d\n"))
    assert cfg.out_dir == "some/dir"
    text = "data: {dir: d}\nlist: &l [" + ", ".join(["y" * 50] * 20) + "]\nseed: [*l, *l, *l, *l, *l, *l]\n"
    with pytest.raises(UsageError) as e:
        load_config(write(tmp_path, text))
    assert "seed must be an integer" in str(e.value) and len(str(e.value)) < 1000  # 6 × 20 × 50 characters expanded


def test_oversized_config_is_refused(tmp_path):
    path = write(tmp_path, "# " + "x" * (1 << 20) + "\ndata: {dir: d}\n")
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        load_config(path)


def test_model_section_follows_the_architecture():
    from dataclasses import fields

    from bertcli.modernbert import ModernBertConfig
    c = load_config(None, ["data.dir=d", "model.architecture=modernbert", "model.num_hidden_layers=2",
                           "model.layer_types=[sliding_attention, full_attention]"])
    assert [f.name for f in fields(c.model)] == [f.name for f in fields(ModernBertConfig)
                                                 if f.name not in ("vocab_size", "pad_token_id")]
    assert (c.model.intermediate_size, c.model.local_attention, c.model.global_rope_theta) == (1152, 128, 160000.0)
    assert load_config(None, ["data.dir=d"]).model.architecture == "bert"
    with pytest.raises(UsageError, match="unknown key model.hidden_act; did you mean model.hidden_activation"):
        load_config(None, ["data.dir=d", "model.architecture=modernbert", "model.hidden_act=gelu"])
    with pytest.raises(UsageError, match="model.layer_types must be a list of full_attention or sliding_attention, got 'x'"):
        load_config(None, ["data.dir=d", "model.architecture=modernbert", "model.num_hidden_layers=1", "model.layer_types=[x]"])
    with pytest.raises(UsageError, match="model.architecture must be one of bert, modernbert"):
        load_config(None, ["data.dir=d", "model.architecture=gpt2"])
