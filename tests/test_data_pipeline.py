"""ArrayLoader: deterministic order per (seed, epoch), exact resume, host sharding."""

import json

import numpy as np
import pytest

from visiondata.pipeline import ArrayLoader

N = 103


def _arrays():
    return {"x": np.arange(N) * 10, "img": np.arange(N * 4, dtype=np.uint8).reshape(N, 2, 2)}


def _take(loader, k):
    return [next(loader) for _ in range(k)]


def test_batches_are_aligned_and_shaped():
    b = next(ArrayLoader(_arrays(), batch_size=8, seed=0))
    assert b["x"].shape == (8,) and b["img"].shape == (8, 2, 2) and b["img"].dtype == np.uint8
    np.testing.assert_array_equal(b["img"], _arrays()["img"][b["x"] // 10])


def test_epoch_is_a_permutation_and_deterministic_per_seed_and_epoch():
    loader = ArrayLoader(_arrays(), batch_size=10, seed=3, drop_remainder=False, num_epochs=2)
    assert loader.steps_per_epoch == 11
    batches = list(loader)
    assert len(batches) == 22 and len(batches[10]["x"]) == 3
    e0 = np.concatenate([b["x"] for b in batches[:11]]) // 10
    e1 = np.concatenate([b["x"] for b in batches[11:]]) // 10
    assert sorted(e0) == list(range(N)) and sorted(e1) == list(range(N))
    assert not np.array_equal(e0, e1)  # reshuffled per epoch
    again = list(ArrayLoader(_arrays(), batch_size=10, seed=3, drop_remainder=False, num_epochs=2))
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches, again))
    other = next(ArrayLoader(_arrays(), batch_size=10, seed=4))
    assert not np.array_equal(other["x"], batches[0]["x"])
    # The order of epoch e is a function of (seed, e) only.
    np.testing.assert_array_equal(ArrayLoader(_arrays(), 10, seed=3).epoch_order(1), e1)


def test_no_shuffle_keeps_order_and_drop_remainder():
    loader = ArrayLoader(_arrays(), batch_size=10, seed=0, shuffle=False, num_epochs=1)
    xs = [b["x"] // 10 for b in loader]
    assert len(xs) == 10 and all(len(x) == 10 for x in xs)  # 3 leftover examples dropped
    np.testing.assert_array_equal(np.concatenate(xs), np.arange(100))


@pytest.mark.parametrize("stop", [0, 4, 10, 11, 25])
def test_exact_resume_through_json(stop):
    ref = ArrayLoader(_arrays(), batch_size=10, seed=7)
    expected = _take(ref, 40)
    first = ArrayLoader(_arrays(), batch_size=10, seed=7)
    _take(first, stop)
    state = json.loads(json.dumps(first.get_state()))
    resumed = ArrayLoader(_arrays(), batch_size=10, seed=7)
    resumed.set_state(state)
    for a, b in zip(_take(resumed, 40 - stop), expected[stop:]):
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["img"], b["img"])


def test_state_mismatch_is_refused():
    state = ArrayLoader(_arrays(), batch_size=10, seed=7).get_state()
    with pytest.raises(ValueError, match="batch_size"):
        ArrayLoader(_arrays(), batch_size=8, seed=7).set_state(state)
    with pytest.raises(ValueError, match="seed"):
        ArrayLoader(_arrays(), batch_size=10, seed=8).set_state(state)
    with pytest.raises(ValueError, match="not an ArrayLoader state"):
        ArrayLoader(_arrays(), batch_size=10, seed=7).set_state({"foo": 1})


def test_host_shards_are_disjoint_and_cover_the_epoch():
    K = 4
    loaders = [ArrayLoader(_arrays(), batch_size=5, seed=1, shard_index=k, shard_count=K) for k in range(K)]
    assert {l.steps_per_epoch for l in loaders} == {N // K // 5}
    per_host = [np.concatenate([b["x"] // 10 for b in _take(l, l.steps_per_epoch)]) for l in loaders]
    union = np.concatenate(per_host)
    assert len(set(union.tolist())) == len(union)  # disjoint
    # Together the hosts walk the single-host order of that epoch, interleaved.
    order = ArrayLoader(_arrays(), batch_size=5, seed=1).epoch_order(0)[: N // K * K]
    for k in range(K):
        np.testing.assert_array_equal(per_host[k], order[k::K][: len(per_host[k])])


def test_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        ArrayLoader({"a": np.zeros(3), "b": np.zeros(4)}, batch_size=1)
    with pytest.raises(ValueError, match="shard_index"):
        ArrayLoader(_arrays(), batch_size=1, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="no batch can be made"):
        ArrayLoader(_arrays(), batch_size=200)


_MESH_SCRIPT = r"""
import json, os, sys, tempfile
import numpy as np
import jax
from train import trainlib
from visiondata.pipeline import ArrayLoader

x = np.arange(64 * 2 * 2 * 3, dtype=np.uint8).reshape(64, 2, 2, 3)
loader = ArrayLoader({"image": x, "label": np.arange(64)}, batch_size=8, seed=0)
mesh = trainlib.make_mesh(4)
batch = trainlib.shard_batch(next(loader), mesh)
shards = batch["image"].addressable_shards
assert len(shards) == 4 and all(s.data.shape == (2, 2, 2, 3) for s in shards), [s.data.shape for s in shards]
np.testing.assert_array_equal(np.asarray(batch["image"]), x[np.asarray(batch["label"])])
# The loader state travels in the checkpoint's JSON extra and resumes exactly.
with tempfile.TemporaryDirectory() as d:
    ck = trainlib.Checkpointer(d)
    ck.save(1, {"w": np.zeros(2, np.float32)}, extra={"loader": loader.get_state()})
    want = next(loader)["label"]
    step, _, extra = ck.restore({"w": np.zeros(2, np.float32)})
    ck.close()
fresh = ArrayLoader({"image": x, "label": np.arange(64)}, batch_size=8, seed=0)
fresh.set_state(extra["loader"])
np.testing.assert_array_equal(next(fresh)["label"], want)
print("ok")
"""


def test_batches_shard_over_a_mesh_and_resume_from_a_checkpoint():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
