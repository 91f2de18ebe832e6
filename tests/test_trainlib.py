"""Tests of train/trainlib.py: config loading, mesh/sharding, Orbax checkpoints, guards."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from train import trainlib


def test_load_config_and_overrides(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(textwrap.dedent("""
        def get_config():
            return dict(seed=0, optim=dict(lr=1e-3, name="adam"), strides=[4, 2, 1])
    """))
    cfg = trainlib.load_config(str(path), ["optim.lr=0.5", "optim.name=sgd", "strides=[2,1]"])
    assert cfg.optim.lr == 0.5 and cfg.optim.name == "sgd" and cfg.strides == [2, 1]
    assert cfg.seed == 0
    with pytest.raises(trainlib.ConfigError, match="no config field 'optim.missing'"):
        trainlib.load_config(str(path), ["optim.missing=1"])
    with pytest.raises(trainlib.ConfigError, match="did you mean 'name'"):
        trainlib.load_config(str(path), ["optim.nmae=sgd"])
    with pytest.raises(trainlib.ConfigError, match="holds a float"):
        trainlib.load_config(str(path), ["optim.lr=fast"])
    with pytest.raises(trainlib.ConfigError, match="holds a int"):
        trainlib.load_config(str(path), ["seed=1.5"])
    assert trainlib.load_config(str(path), ["optim.lr=1"]).optim.lr == 1.0   # an int is a fine float
    with pytest.raises(FileNotFoundError):
        trainlib.load_config(str(tmp_path / "nope.py"))


def test_mesh_and_shard_batch():
    mesh = trainlib.make_mesh()
    assert mesh.axis_names == ("data", "model") and mesh.shape["model"] == 1
    n = mesh.shape["data"]
    batch = trainlib.shard_batch({"x": np.arange(4 * n * 3).reshape(4 * n, 3)}, mesh)
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(4 * n * 3).reshape(4 * n, 3))
    assert batch["x"].sharding.spec[0] == "data"
    with pytest.raises(ValueError, match="devices"):
        trainlib.make_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="divisor"):
        trainlib.make_mesh(1, model=2)
    if n > 1:
        with pytest.raises(ValueError, match="multiple"):
            trainlib.shard_batch({"x": np.zeros((n + 1, 2))}, mesh)


class _Tiny(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 2, rngs=rngs)


def test_checkpointer_roundtrip_nnx_state(tmp_path):
    model = _Tiny(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    def loss_fn(m):
        return jnp.sum(m.lin(jnp.ones((4, 3))) ** 2)

    grads = nnx.grad(loss_fn)(model)
    opt.update(model, grads)
    state = {"model": nnx.state(model), "opt": nnx.state(opt), "step": np.array(7, np.int32)}

    ckpt = trainlib.Checkpointer(str(tmp_path), max_to_keep=2)
    assert ckpt.restore(state) is None
    extra = {"loader": {"epoch": 3, "index": 12, "seed": 0}}
    ckpt.save(5, state, extra)
    ckpt.save(6, state, extra)
    ckpt.save(7, state, extra)

    fresh_model = _Tiny(nnx.Rngs(1))
    fresh_opt = nnx.Optimizer(fresh_model, optax.adam(1e-2), wrt=nnx.Param)
    abstract = {"model": nnx.state(fresh_model), "opt": nnx.state(fresh_opt),
                "step": np.array(0, np.int32)}
    step, restored, got_extra = trainlib.Checkpointer(str(tmp_path)).restore(abstract)
    assert step == 7 and got_extra == extra
    assert int(restored["step"]) == 7
    nnx.update(fresh_model, restored["model"])
    nnx.update(fresh_opt, restored["opt"])
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(fresh_model))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(nnx.state(opt)), jax.tree.leaves(nnx.state(fresh_opt))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # max_to_keep=2: the oldest step is gone
    assert sorted(ckpt.manager.all_steps()) == [6, 7]


def test_check_finite_and_metrics_writer(tmp_path):
    trainlib.check_finite(1, {"loss": jnp.float32(1.0)})
    with pytest.raises(FloatingPointError, match=r"step 3.*loss"):
        trainlib.check_finite(3, {"loss": jnp.float32(np.nan), "ok": 1.0})
    w = trainlib.MetricsWriter(str(tmp_path))
    w.write(1, {"loss": jnp.float32(0.5), "usage": jnp.int32(4)})
    w.write(2, {"loss": 0.25})
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert lines == [{"step": 1, "loss": 0.5, "usage": 4}, {"step": 2, "loss": 0.25}]
