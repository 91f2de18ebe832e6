"""Training reliability (issue #33): a damaged latest checkpoint falls back to the intact one before it
(moved aside, one warning line, the same result as an uninterrupted run); a resume with another model
is refused and leaves config.json as it was; a typo in a config file is caught before anything is written.

The SPAE runs use train/configs/spae_tiny.py cut to 4 steps (checkpoints at 2 and 4) and to its
reconstruction losses on a 2-layer pyramid, so that a step compiles in seconds (the full tiny
config's exact resume is tested in test_spae_train.py). Each run builds a new model; the jitted step
is cached in-process by config, mesh and state structure (spae.training._cached_step), so runs of one
config compile it once (counted here through jax.monitoring's compile events)."""

import json
import os
import shutil
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from train import trainlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "train/configs/spae_tiny.py")
SHORT = ["train.steps=4", "train.ckpt_every=2", "train.log_every=2", "loss.gan=0", "loss.perceptual=0",
         "loss.semantic=0", "loss.lecam=0", "model.ch_mult=(1,)", "model.strides=(2,1)"]


def _tiny_cfg(*overrides):
    from spae.training import resolve_config

    return resolve_config(trainlib.load_config(TINY, [*SHORT, *overrides]))


def _state(workdir, cfg, step=None):
    """(step, state) of a workdir's checkpoint (the latest, or `step`), restored without fallback."""
    from spae.training import FROZEN, TrainState

    ts = TrainState(cfg, np.zeros((cfg.vocab.random_size, cfg.vocab.random_dim), np.float32), rngs=nnx.Rngs(1))
    _, _, abstract = nnx.split(ts, FROZEN, ...)
    ckpt = trainlib.Checkpointer(workdir)
    step = ckpt.latest_step() if step is None else step
    got, state, _ = ckpt.restore(abstract, step=step)
    ckpt.close()
    return got, state


def _damage(step_dir):
    """Truncate the array data of a checkpoint step to half (a copy cut short by a full disk or a kill)."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
             if os.path.basename(r) == "d"]                              # OCDBT data files (arrays, tree nodes)
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


@pytest.fixture(scope="module")
def step_compiles():
    """{"n": how many times XLA compiled spae.training's train step} while this module runs."""
    count = {"n": 0}

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and kwargs.get("fun_name") == "jit(spae_train_step)":
            count["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield count
    jax.monitoring.unregister_event_duration_listener(listen)


@pytest.fixture(scope="module")
def straight(step_compiles, tmp_path_factory):
    """An uninterrupted 4-step tiny SPAE run: (workdir, its step-4 state, config, step compilations)."""
    from train import spae as spae_train

    wd = str(tmp_path_factory.mktemp("straight") / "run")
    cfg = _tiny_cfg()
    before = step_compiles["n"]
    spae_train.train(cfg, wd, quiet=True)
    step, state = _state(wd, cfg)
    assert step == 4
    return wd, jax.device_get(state), cfg, step_compiles["n"] - before


def _copy(wd, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(wd, dst)
    return dst


@pytest.mark.fashion_mnist
def test_damaged_latest_checkpoint_falls_back_and_resumes_exactly(straight, tmp_path, capfd):
    from train import spae as spae_train

    wd = _copy(straight[0], tmp_path)
    ckdir = os.path.join(wd, "checkpoints")
    _damage(os.path.join(ckdir, "4"))
    damaged_files = sorted(os.path.relpath(os.path.join(r, f), os.path.join(ckdir, "4"))
                           for r, _, fs in os.walk(os.path.join(ckdir, "4")) for f in fs)
    capfd.readouterr()
    cfg = _tiny_cfg()
    spae_train.train(cfg, wd, quiet=True)
    err = capfd.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    warnings = [l for l in lines if l.startswith("warning:")]
    assert len(warnings) == 1, err
    assert (f"checkpoint step 4 in {ckdir} is damaged (" in warnings[0]
            and f"moved it to {ckdir}/damaged/step_4; resuming from step 2" in warnings[0]), warnings[0]
    # nothing else of Orbax's: only the trainer's own "resumed" line besides the warning
    assert lines == [warnings[0], f"resumed from step 2 in {wd}"], err
    # the damaged step is moved aside whole, not deleted
    moved = os.path.join(ckdir, "damaged", "step_4")
    assert sorted(os.path.relpath(os.path.join(r, f), moved) for r, _, fs in os.walk(moved) for f in fs) == damaged_files
    # steps 3-4 re-run from step 2: the same parameters, optimizer and EMA state as the uninterrupted run
    step, state = _state(wd, cfg)
    assert step == 4
    want, got = jax.tree.leaves(straight[1]), jax.tree.leaves(jax.device_get(state))
    assert len(want) == len(got) > 10
    for a, b in zip(want, got):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    log = [json.loads(l)["step"] for l in open(os.path.join(wd, "metrics.jsonl"))]
    assert log == [2, 4, 4]                                     # step 4 logged again after the fallback


@pytest.mark.fashion_mnist
def test_second_in_process_run_reuses_the_compiled_step(straight, step_compiles, tmp_path):
    """Two TrainStates of one config have unequal graphdefs (the optimizer's closures differ), so a
    cache keyed by the graphdef compiled the step again in every train() (about 6 s here); keyed by
    config, mesh and state structure, a second run of the straight run's config compiles nothing."""
    from train import spae as spae_train

    assert straight[3] == 1                                  # the first run in this process compiled it
    before = step_compiles["n"]
    last = spae_train.train(_tiny_cfg(), str(tmp_path / "again"), quiet=True)
    assert last["step"] == 4 and step_compiles["n"] == before
    # the same steps from the same seed: the cached step gives the uninterrupted run's parameters
    _, state = _state(str(tmp_path / "again"), straight[2])
    for a, b in zip(jax.tree.leaves(straight[1]), jax.tree.leaves(jax.device_get(state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.fashion_mnist
def test_resume_with_another_model_is_refused(straight, tmp_path, capsys):
    from train import spae as spae_train

    wd = _copy(straight[0], tmp_path)
    path = os.path.join(wd, "config.json")
    before = open(path, "rb").read()
    with pytest.raises(trainlib.ConfigError) as e:
        spae_train.train(_tiny_cfg("model.ch=16", "vocab.random_dim=16", "train.steps=5"), wd, quiet=True)
    msg = str(e.value)
    assert "model.ch: 8 -> 16" in msg and "vocab.random_dim: 32 -> 16" in msg and "new --workdir" in msg
    assert "train.steps:" not in msg                                         # training fields may change
    assert open(path, "rb").read() == before
    # the command line: one `error:` line, exit status 2, config.json untouched
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        spae_train.main(["--config", TINY, "--workdir", wd, *[f"--set={o}" for o in SHORT], "--set", "data.image_size=32"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "data.image_size: 16 -> 32" in err[0], err
    assert open(path, "rb").read() == before


@pytest.mark.fashion_mnist
def test_resume_with_more_steps_is_accepted(straight, tmp_path):
    from train import spae as spae_train

    wd = _copy(straight[0], tmp_path)
    last = spae_train.train(_tiny_cfg("train.steps=6", "optim.lr=5e-4"), wd, quiet=True)
    assert last["step"] == 6 and os.path.isdir(os.path.join(wd, "checkpoints", "6"))
    saved = json.load(open(os.path.join(wd, "config.json")))
    assert saved["train"]["steps"] == 6 and saved["optim"]["lr"] == 5e-4     # written once the state was restored
    log = [json.loads(l)["step"] for l in open(os.path.join(wd, "metrics.jsonl"))]
    assert log == [2, 4, 6]                                                    # resumed at 4, not restarted


def test_config_diff_names_model_fields_only():
    old = {"model": {"ch": 8, "strides": (4, 2)}, "data": {"image_size": 16, "batch_size": 8}, "train": {"steps": 4}}
    new = {"model": {"ch": 8, "strides": [4, 2, 1]}, "data": {"image_size": 16, "batch_size": 4}, "train": {"steps": 9}}
    fields = ("model", "data.image_size")
    assert trainlib.config_diff(old, new, fields) == ["model.strides: [4, 2] -> [4, 2, 1]"]
    assert trainlib.config_diff(old, {**old, "model": {"ch": 8, "strides": [4, 2], "new": 1}}, fields) == [
        "model.new: '<absent>' -> 1"]


CONFIG_TYPOS = [
    ("from train.configs.spae_tiny import get_config as tiny\n"
     "def get_config():\n    c = tiny()\n    c.train.stpes = 2\n    return c\n", "'train.stpes'", "did you mean 'steps'"),
    ("from train.configs.spae_base import base_config\n"
     "def get_config():\n    c = base_config()\n    c.loss.update(semantik=0.0)\n    return c\n",
     "'loss.semantik'", "did you mean 'semantic'"),
    ("from train.configs.spae_photos128 import get_config as parent\n"   # a chain of three config files
     "def get_config():\n    c = parent()\n    c.modle = dict(ch=8)\n    return c\n", "'modle'", "did you mean 'model'"),
]


@pytest.mark.parametrize("text,field,hint", CONFIG_TYPOS)
def test_config_file_with_unknown_field_is_refused(tmp_path, capsys, text, field, hint):
    from train import spae as spae_train

    path = tmp_path / "typo.py"
    path.write_text(text)
    wd = tmp_path / "run"
    with pytest.raises(trainlib.ConfigError, match=hint):
        trainlib.load_config(str(path))
    with pytest.raises(SystemExit) as e:
        spae_train.main(["--config", str(path), "--workdir", str(wd)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and field in err[0] and hint in err[0], err
    assert not wd.exists()                                              # nothing written


# (trainer module, its shipped config, (text, misspelt text) in that file, what the error names then,
#  a --set with a typo, what the error names then)
TRAINER_TYPOS = [
    ("train.contrastive", "contrastive_offline.py", ("steps=1200", "stpes=1200"), ("'train.stpes'", "did you mean 'steps'"),
     "optim.wieght_decay=0.1", ("'optim.wieght_decay'", "did you mean 'weight_decay'")),
    ("train.lit", "contrastive_lit.py", ("text_layers=3", "text_layer=3"), ("'model.text_layer'", "did you mean 'text_layers'"),
     "data.batch.emojis=64", ("'data.batch.emojis'", "did you mean 'emoji'")),
]


@pytest.mark.parametrize("trainer,config,edit,file_says,override,set_says", TRAINER_TYPOS,
                         ids=[t[0] for t in TRAINER_TYPOS])
def test_contrastive_and_lit_typos_are_one_line_errors(tmp_path, capsys, trainer, config, edit, file_says,
                                                       override, set_says):
    """A copy of a shipped contrastive/LiT config with one field misspelt builds on no base config, so only
    the trainer's declared base (the shipped config) catches it; a typo in --set is caught too."""
    import importlib

    main = importlib.import_module(trainer).main
    shipped = os.path.join(ROOT, "train/configs", config)
    text = open(shipped).read()
    assert text.count(edit[0]) == 1
    path = tmp_path / "variant.py"
    path.write_text(text.replace(edit[0], edit[1]))
    trainlib.load_config(str(path))                     # without the trainer's base the typo would pass unseen
    wd = tmp_path / "run"
    for argv, says in ((["--config", str(path), "--workdir", str(wd)], file_says),
                       (["--config", shipped, "--workdir", str(wd), "--set", override], set_says)):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and all(f in err[0] for f in says), err
        assert not wd.exists()                                               # nothing written


def test_captioner_config_file_typo_is_refused(tmp_path):
    path = tmp_path / "cap.py"
    path.write_text("from train.configs.captioner_tiny import get_config as tiny\n"
                    "def get_config():\n    c = tiny()\n    c.optim.update(lr=1e-3, wieght_decay=0.1)\n    return c\n")
    with pytest.raises(trainlib.ConfigError, match="'optim.wieght_decay'.*did you mean 'weight_decay'"):
        trainlib.load_config(str(path))


def test_every_shipped_config_has_only_base_fields():
    import glob

    for path in sorted(glob.glob(os.path.join(ROOT, "train/configs/*.py"))):
        if not path.endswith("spae_base.py"):
            trainlib.load_config(path)


# ------------------------------------------------------------------ Checkpointer alone (no training)


def _small_state(n=6):
    return {"w": jnp.arange(n, dtype=jnp.float32), "b": {"c": jnp.ones((3, 3))}, "step": np.array(0, np.int32)}


def _saved(tmp_path, steps=(1, 2)):
    ckpt = trainlib.Checkpointer(str(tmp_path))
    for s in steps:
        ckpt.save(s, {**_small_state(), "step": np.array(s, np.int32)}, extra={"at": s})
    ckpt.close()
    return os.path.join(str(tmp_path), "checkpoints")


def test_no_intact_checkpoint_left_starts_fresh(tmp_path, capfd):
    ckdir = _saved(tmp_path)
    _damage(os.path.join(ckdir, "2"))
    with open(os.path.join(ckdir, "1", "extra", "metadata"), "w") as f:
        f.write('{"at": ')                                                # truncated JSON
    capfd.readouterr()
    assert trainlib.Checkpointer(str(tmp_path)).restore(_small_state()) is None
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: checkpoint steps 2, 1 ") and "extra/metadata" in err[0]
    assert err[0].endswith("no intact checkpoint is left; starting from step 0"), err
    assert sorted(os.listdir(os.path.join(ckdir, "damaged"))) == ["step_1", "step_2"]


def test_checkpoint_of_another_model_is_not_moved(tmp_path):
    ckdir = _saved(tmp_path)
    with pytest.raises(trainlib.CheckpointError, match="other arrays than this model.*new --workdir"):
        trainlib.Checkpointer(str(tmp_path)).restore(_small_state(7))
    assert sorted(os.listdir(ckdir)) == ["1", "2"]                     # intact: left where it was
    step, state, extra = trainlib.Checkpointer(str(tmp_path)).restore(_small_state())
    assert step == 2 and extra == {"at": 2} and int(state["step"]) == 2


def test_debug_shows_the_traceback(tmp_path, capfd, monkeypatch):
    ckdir = _saved(tmp_path)
    _damage(os.path.join(ckdir, "2"))
    monkeypatch.setenv("LLMSIGHT_DEBUG", "1")
    capfd.readouterr()
    step, _, _ = trainlib.Checkpointer(str(tmp_path)).restore(_small_state())
    err = capfd.readouterr().err
    assert step == 1 and "Traceback" in err and "warning: checkpoint step 2" in err
