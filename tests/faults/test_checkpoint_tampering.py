"""Crafted checkpoints: trainer_state.json and optimizer.pt altered with their checksums fixed up.

Every variant must end in exit 1 or 2 with one line and no traceback (or, for a change that
leaves the file genuinely valid, a normal run), never a signal death, and every file that
existed before must be byte-identical afterwards.
"""

import hashlib
import json
import shutil
import signal

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertcli.checkpoint import list_checkpoints, state_problems
from faultlib import bertcli_process
from conftest import tiny_overrides

pytestmark = pytest.mark.slow  # tampered checkpoints, each read by a bertcli subprocess

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


def snapshot(*dirs) -> dict:
    return {p: p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resume_args(data_dir, ckpt, out):
    sets = [a for s in tiny_overrides(data_dir, out, "train.max_steps=5", "system.eval_batches=1") for a in ("--set", s)]
    return ["pretrain", "--resume", ckpt, *sets]


def assert_refused_or_valid(code, err, before, state):
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 0:
        assert state is None or state_problems(state) == [], state  # only a genuinely valid file may pass
    else:
        assert len(err.strip().splitlines()) <= 4, err  # one logical line (rich may wrap it)
        assert snapshot(*before[0]) == before[1]


def copy_run(trained_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    run = root / "run"
    shutil.copytree(trained_run, run)
    return root, run, list_checkpoints(run)[-1]


STATE_KEYS = ["step", "tokens_seen", "elapsed", "epoch", "global_batch_size", "seed", "format_version", "files",
              "data_signature", "model_config"]
MODEL_KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
              "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps", "hidden_dropout_prob",
              "pad_token_id"]


@FUZZ
@given(where=st.sampled_from(["top", "model", "files"]), key=st.sampled_from(STATE_KEYS + MODEL_KEYS + ["extra"]),
       value=json_values, delete=st.booleans())
def test_tampered_trainer_state(cli, trained_run, data_dir, tmp_path_factory, where, key, value, delete):
    root, run, ckpt = copy_run(trained_run, tmp_path_factory)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    node = {"top": state, "model": state["model_config"], "files": state["files"]}[where]
    if where == "files":
        key = sorted(node)[hash(key) % len(node)]
    if delete:
        node.pop(key, None)
    else:
        node[key] = value
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    before = ((run, data_dir), snapshot(run, data_dir))
    code, _, err = cli(*resume_args(data_dir, ckpt, root / "out"))
    assert_refused_or_valid(code, err, before, state)


def tensor_like(draw, shape, dtype):
    kind = draw(st.sampled_from(["shape", "dtype", "scalar", "nan", "list", "none", "bigger"]))
    if kind == "shape":
        grown = list(shape)
        axis = draw(st.integers(0, max(len(shape) - 1, 0))) if shape else None
        if axis is None:
            return torch.zeros(2)
        grown[axis] += draw(st.sampled_from([-1, 1, 7])) if grown[axis] > 1 else 1
        return torch.zeros(*grown)
    if kind == "bigger":
        return torch.zeros(int(torch.tensor(shape).prod()) + 1000)
    if kind == "dtype":
        return torch.zeros(shape, dtype=draw(st.sampled_from([torch.float16, torch.float64, torch.int64, torch.bool])))
    if kind == "scalar":
        return torch.tensor(1.0)
    if kind == "nan":
        return torch.full(shape, float("nan"))
    return [1.0, 2.0] if kind == "list" else None


@st.composite
def optimizer_mutations(draw):
    return draw(st.sampled_from(["exp_avg", "exp_avg_sq", "step", "group", "params", "drop", "extra", "state_key"])), \
        draw(st.integers(0, 10**6)), draw(st.data())


@FUZZ
@given(optimizer_mutations())
def test_tampered_optimizer_state(cli, trained_run, data_dir, tmp_path_factory, mutation):
    what, pick, data = mutation
    root, run, ckpt = copy_run(trained_run, tmp_path_factory)
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    ids = sorted(opt["state"])
    k = ids[pick % len(ids)]
    entry = opt["state"][k]
    if what in ("exp_avg", "exp_avg_sq"):
        entry[what] = tensor_like(data.draw, tuple(entry[what].shape), entry[what].dtype)
    elif what == "step":
        entry["step"] = data.draw(st.sampled_from([torch.tensor(-1.0), torch.tensor(float("nan")), torch.tensor([1.0, 2.0]),
                                                   torch.tensor(3, dtype=torch.int64), torch.tensor(1e30), 5]))
    elif what == "group":
        group = opt["param_groups"][pick % 2]
        key = data.draw(st.sampled_from(sorted(k for k in group if k not in ("params", "betas"))))
        # a value of another type than AdamW keeps there (another number where AdamW has a number may be valid)
        number = (int, float)
        group[key] = data.draw(json_values.filter(
            lambda v, old=group[key]: type(v) is not type(old) and not (
                isinstance(old, number) and not isinstance(old, bool) and isinstance(v, number) and not isinstance(v, bool))))
    elif what == "params":
        opt["param_groups"][pick % 2]["params"] = data.draw(st.lists(st.integers(-5, 10**9), max_size=4))
    elif what == "drop":
        del entry[data.draw(st.sampled_from(sorted(entry)))]
    elif what == "extra":
        entry["surprise"] = torch.zeros(3)
    else:
        opt["state"][data.draw(st.sampled_from([-1, 10**6, "x"]))] = entry
    torch.save(opt, ckpt / "optimizer.pt")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["files"]["optimizer.pt"] = sha256(ckpt / "optimizer.pt")  # the integrity check passes
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    before = ((run, data_dir), snapshot(run, data_dir))
    code, _, err = cli(*resume_args(data_dir, ckpt, root / "out"))
    assert code in (1, 2), (what, code, err)  # every mutation above is invalid
    assert_refused_or_valid(code, err, before, None)


def test_wrong_shape_moments_do_not_crash_fused_adamw(trained_run, data_dir, tmp_path_factory):
    """The reported crash: exp_avg of another shape, sha256 updated → was SIGSEGV in fused AdamW."""
    root, run, ckpt = copy_run(trained_run, tmp_path_factory)
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    for entry in opt["state"].values():
        entry["exp_avg"] = torch.zeros(3)
        entry["exp_avg_sq"] = torch.zeros(3)
    torch.save(opt, ckpt / "optimizer.pt")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["files"]["optimizer.pt"] = sha256(ckpt / "optimizer.pt")
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    proc = bertcli_process(resume_args(data_dir, ckpt, root / "out"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and proc.returncode != -signal.SIGSEGV, err
    assert "optimizer.pt: state[" in err and "Traceback" not in err


def test_checksums_cannot_be_switched_off(cli, trained_run, data_dir, tmp_path_factory):
    root, run, ckpt = copy_run(trained_run, tmp_path_factory)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    for files, extra, fragment in [({}, None, "files lacks the checksum of model.safetensors"),
                                   (state["files"], "scaler.pt", "scaler.pt is not listed")]:
        crafted = dict(state, files=files)
        (ckpt / "trainer_state.json").write_text(json.dumps(crafted))
        if extra:
            torch.save({"scale": 1.0}, ckpt / extra)
        before = snapshot(run)
        code, _, err = cli(*resume_args(data_dir, ckpt, root / "out"))
        assert code == 1 and fragment in err, err
        assert snapshot(run) == before


def test_absurd_model_config_is_refused_before_allocating(cli, trained_run, data_dir, tmp_path_factory):
    root, run, ckpt = copy_run(trained_run, tmp_path_factory)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    for key, value, fragment in [("hidden_size", 10**6, "hidden_size must be an integer in [1, 8192]"),
                                 ("num_hidden_layers", 128, "weights do not match the model_config")]:
        (ckpt / "trainer_state.json").write_text(json.dumps(dict(state, model_config={**state["model_config"], key: value})))
        code, _, err = cli("eval", "--checkpoint", ckpt, "--data", data_dir)
        assert code == 1 and fragment in err, err
