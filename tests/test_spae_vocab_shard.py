"""The codebook split over the vocabulary ("model" mesh axis) gives the unsharded results exactly.

Each check runs in a subprocess with 4 simulated CPU devices (XLA_FLAGS is read once, when jax is
imported), on the meshes model=4 and data=2,model=2, with vocabularies that 4 does not divide and
duplicate codebook rows on different shards (exact ties, which must go to the lowest id)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "train/configs/spae_tiny.py")

PRELUDE = """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from backbones.mesh import make_mesh
    assert len(jax.devices()) == 4
    MESHES = {"model=4": make_mesh(data=1, model=4), "data=2,model=2": make_mesh(data=2, model=2)}
    out = {}
"""

SEARCH_SCRIPT = textwrap.dedent(PRELUDE) + textwrap.dedent("""
    from spae.codebook import Vocabulary
    from spae.model import SPAE, ModelConfig
    from spae.quantizer import nearest_code, saq_quantize_aux, sharded_lookup, sharded_nearest_code
    from spae.tokenizer import Tokenizer

    rng = np.random.default_rng(0)
    V, d = 1001, 16                     # 4 does not divide V: shards of 251 rows, the last padded by 3
    cb = rng.normal(size=(V, d)).astype(np.float32)
    twins = [(3, 900), (250, 600), (10, 1000), (260, 510), (1, 2)]   # (kept, copy): shard 0/3, 0/2, 0/3, 1/2, 0/0
    for keep, copy in twins:
        cb[copy] = cb[keep]
    x = rng.normal(size=(256, d)).astype(np.float32)
    x[:10] = cb[[c for _, c in twins] * 2]                      # tokens sitting exactly on a duplicated row
    x[10:20] = cb[[k for k, _ in twins] * 2] + 1e-3 * rng.normal(size=(10, d)).astype(np.float32)
    want_twins = [k for k, _ in twins] * 2

    searches = (("auto", 8192), ("auto", 64), ("argmin", 100), ("min_index", None))
    plain = {(r, c): nearest_code(x, cb, c, reduction=r) for r, c in searches}
    small = cb[:103]                                             # the Pallas kernel, interpreted: keep it small
    plain_fused = nearest_code(x[:64], small, reduction="fused")
    ids = np.asarray(plain["auto", 8192]).reshape(8, 32)

    # SAQ, all layers, through a learned projection of the table (the codebook loss reaches it)
    z = rng.normal(size=(4, 8, 8, d)).astype(np.float32)
    w = (0.3 * rng.normal(size=(d, d))).astype(np.float32)

    def saq_grad(mesh, st):
        def loss(z, w):
            ids, zhat, aux = saq_quantize_aux(z, jnp.asarray(cb) @ w, [8, 4, 2, 1], chunk_size=512,
                                              straight_through=st, mesh=mesh)
            value = sum(jnp.sum(jnp.sin(q)) for q in zhat) + aux["commit"].sum() + aux["codebook"].sum()
            return value, (ids, zhat, aux)
        return jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(z, w)

    plain_saq = {st: saq_grad(None, st) for st in ("identity", "rotation")}

    for name, mesh in MESHES.items():
        for r, c in searches:
            b = jax.jit(lambda x, cb: nearest_code(x, cb, c, reduction=r, mesh=mesh))(x, cb)
            out[f"ids {name} {r} {c}"] = bool(np.array_equal(plain[r, c], b))
            out[f"ties {name} {r} {c}"] = np.asarray(b[:10]).tolist() == want_twins
        b = jax.jit(lambda x, cb: sharded_nearest_code(x, cb, mesh, reduction="fused"))(x[:64], small)
        out[f"ids {name} fused"] = bool(np.array_equal(plain_fused, b))

        rows = jax.jit(lambda cb, k: sharded_lookup(cb, k, mesh))(cb, ids)
        out[f"rows {name}"] = bool(np.array_equal(np.asarray(rows), cb[ids]))

        placed = jax.device_put(cb[:1000], NamedSharding(mesh, P("model", None)))
        hlo = jax.jit(lambda x, cb: sharded_nearest_code(x, cb, mesh)).lower(x, placed).compile().as_text()
        out[f"no all-gather {name}"] = "all-gather" not in hlo

        for st, ((l0, (i0, q0, a0)), g0) in plain_saq.items():
            if st == "rotation" and name == "model=4":
                continue                                         # the rotation trick once, on the 2-D mesh
            (l1, (i1, q1, a1)), g1 = saq_grad(mesh, st)
            out[f"saq ids {name} {st}"] = all(np.array_equal(p, q) for p, q in zip(i0, i1))
            same = all(np.array_equal(p, q) for p, q in zip(q0, q1))
            close = all(np.allclose(p, q, rtol=1e-6, atol=1e-6) for p, q in zip(q0, q1))
            out[f"saq zhat {name} {st}"] = same if st == "identity" else close   # rotation: value up to rounding
            out[f"saq usage {name} {st}"] = bool(np.array_equal(a0["usage"], a1["usage"]))
            out[f"saq losses {name} {st}"] = bool(np.allclose(a0["commit"], a1["commit"], rtol=1e-6)
                                                  and np.allclose(a0["codebook"], a1["codebook"], rtol=1e-6))
            out[f"grads {name} {st}"] = all(np.allclose(p, q, rtol=1e-5, atol=1e-5) for p, q in zip(g0, g1))

    # the tokenizer: encode on a mesh gives the single-device ids, decode the same images
    vocab = Vocabulary.random(509, 24, seed=1)
    cfg = ModelConfig(image_size=16, ch=8, ch_mult=(1, 2), strides=(8, 4, 2, 1), chunk_size=128, code_dim=12)
    model = SPAE(vocab.embeddings, cfg, rngs=nnx.Rngs(0))
    images = rng.integers(0, 256, size=(4, 16, 16), dtype=np.uint8)
    tok = Tokenizer(model, vocab)
    pyr = tok.encode(images)
    pics = tok.decode(pyr)
    tok = Tokenizer(model, vocab, mesh=MESHES["data=2,model=2"])
    table = tok._state["codebook"].get_value()               # 509 rows and one of zeros, split over "model"
    out["tokenizer placement"] = table.shape == (510, 24) and table.sharding.spec == P("model")
    got = tok.encode(images)
    out["encode"] = all(np.array_equal(p, q) for p, q in zip(pyr.llm_ids, got.llm_ids))
    out["decode"] = int(np.max(np.abs(tok.decode(got).astype(int) - pics.astype(int))))
    print("RESULT" + json.dumps(out))
""")

STEP_SCRIPT = textwrap.dedent(PRELUDE) + textwrap.dedent("""
    from train import trainlib
    from train.spae import build_vocab, build_arrays
    from spae.training import TrainState, StepFn, resolve_config
    # 509 words (odd: the 'model' axis of 2 pads the table by one row), a learned projection of the
    # table (its gradient crosses the shards); GAN and perceptual losses off, they never see the codebook.
    over = ["vocab.random_size=509", "model.code_dim=16", "loss.gan=0", "loss.perceptual=0"]
    cfg = resolve_config(trainlib.load_config(sys.argv[1], over))
    vocab = build_vocab(cfg)
    arrays = build_arrays(cfg, vocab, sys.argv[2])
    batch = {k: v[:8] for k, v in arrays.items()}
    res = {}
    for n, model in ((1, 1), (4, 2)):
        mesh = trainlib.make_mesh(n, model=model)
        fn = StepFn(TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(0)), cfg, mesh)
        table = fn.frozen["model"]["codebook"].get_value()
        out[f"frozen {model}"] = [list(table.shape), table.sharding.spec == P("model" if model > 1 else None)]
        out[f"state rows {model}"] = int(fn.state.model.codebook.shape[0])
        m = trainlib.to_host_scalars(fn(trainlib.shard_batch(batch, mesh)))
        res[model] = (m, [np.asarray(x) for x in jax.tree.leaves(jax.device_get(fn.train))])
    out["metrics"] = [res[1][0], res[2][0]]
    out["param_diff"] = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(res[1][1], res[2][1]))
    print("RESULT" + json.dumps(out))
""")


def _run(script: str, tmp_path, *args) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    path = tmp_path / "script.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_sharded_search_saq_and_tokenizer_equal_unsharded(tmp_path):
    """Ids and rows identical (ties to the lowest id across shards, a padded last shard), SAQ outputs
    of every layer identical, gradients allclose, no all-gather of the table; the tokenizer's encode on
    a mesh gives the same LLM ids and its decode the same images."""
    out = _run(SEARCH_SCRIPT, tmp_path)
    flags = {k: v for k, v in out.items() if isinstance(v, bool)}
    assert len(flags) == 2 * 21 - 5 + 2, sorted(flags)
    assert all(flags.values()), sorted(k for k, v in flags.items() if not v)
    assert out["decode"] <= 1


@pytest.mark.fashion_mnist
def test_train_step_on_data_model_mesh_equals_single_device(tmp_path):
    """One SPAE train step on data=2,model=2 (codebook rows split over 'model') gives the
    single-device losses and parameters."""
    out = _run(STEP_SCRIPT, tmp_path, TINY, str(tmp_path))
    assert out["frozen 1"] == [[509, 32], True]            # model=1: nothing padded, copied
    assert out["frozen 2"] == [[510, 32], True]            # rows split over "model", one zero row appended
    assert out["state rows 1"] == out["state rows 2"] == 509
    one, sharded = out["metrics"]
    for key in ("loss", "recon", "commit", "codebook", "semantic"):
        np.testing.assert_allclose(sharded[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # Not 1e-5: the batch split over "data" alone (model=1) moves Adam's first update (lr 5e-4, about
    # lr * sign(g)) by up to 4e-5 where a gradient is near zero; model=2 on top of it changes < 1e-6.
    assert out["param_diff"] < 1e-4

