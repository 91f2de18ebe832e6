"""SPAE trainer: one jit over a 4-device 'data' mesh (simulated CPU devices, in a subprocess) gives
the single-device step. Its own file so that pytest-xdist (--dist loadfile) can run it beside the
rest of the trainer tests."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "train/configs/spae_tiny.py")

SHARD_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from flax import nnx
    from train import trainlib
    from train.spae import build_vocab, build_arrays
    from spae.training import TrainState, StepFn, resolve_config
    cfg = resolve_config(trainlib.load_config(sys.argv[1]))
    assert len(jax.devices()) == 4
    vocab = build_vocab(cfg)
    arrays = build_arrays(cfg, vocab, sys.argv[2])
    batch = {k: v[:8] for k, v in arrays.items()}
    out = {}
    for n in (1, 4):
        mesh = trainlib.make_mesh(n)
        fn = StepFn(TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(0)), cfg, mesh)
        sharded = trainlib.shard_batch(batch, mesh)
        assert len(sharded["image"].sharding.device_set) == n
        m1 = trainlib.to_host_scalars(fn(sharded))
        m2 = trainlib.to_host_scalars(fn(sharded))
        leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(fn.train))]
        out[n] = dict(m1=m1, m2=m2, maxdiff=None)
        out[n]["leaves"] = leaves
    diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0
               for a, b in zip(out[1]["leaves"], out[4]["leaves"]))
    print("RESULT" + json.dumps(dict(one=[out[1]["m1"], out[1]["m2"]], four=[out[4]["m1"], out[4]["m2"]], param_diff=diff)))
""")


@pytest.mark.fashion_mnist
@pytest.mark.slow   # one step on data=2 x model=2 against one device: tests/test_spae_vocab_shard.py; 1 x 4 against 2 x 2: tests/test_multihost.py
def test_sharded_step_equals_single_device(tmp_path):
    """One jit over a 4-device 'data' mesh gives the single-device losses (1e-5)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), TINY, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    for one, four in zip(res["one"], res["four"]):
        for key in ("loss", "recon", "commit", "semantic", "gan_g", "perceptual", "d_loss"):
            np.testing.assert_allclose(four[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert res["one"][1]["loss"] != res["one"][0]["loss"]       # the first step did update
    assert res["param_diff"] < 1e-5


