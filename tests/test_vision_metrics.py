"""The backbone's perceptual distance and FD-EffNet on closed cases and on real photos under growing damage."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageFilter

from backbones import load_vision
from backbones.vision.perceptual import perceptual_distance
from eval.frechet import frechet_distance, frechet_from_stats
from visiondata import photos


@pytest.fixture(scope="module")
def backbone():
    return load_vision("efficientnet-lite0")


@pytest.fixture(scope="module")
def photos64():
    return photos.load(64)[[0, 4, 6, 13, 19, 20]]   # astronaut, chelsea, coffee, motorcycle, china, flower


def blur(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images])


def noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(images / 255.0 + rng.normal(0, sigma, images.shape), 0, 1)


def as01(images: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(images, jnp.float32) / (255.0 if images.dtype == np.uint8 else 1.0)


def test_frechet_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    var_a, var_b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(want, rel=1e-10)
    # rotating both Gaussians by one orthogonal matrix leaves the distance unchanged
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    got = frechet_from_stats(q @ mu_a, q @ np.diag(var_a) @ q.T, q @ mu_b, q @ np.diag(var_b) @ q.T)
    assert got == pytest.approx(want, rel=1e-8)
    x = rng.normal(size=(400, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(x, x + 3.0) == pytest.approx(8 * 9.0, rel=1e-9)   # a pure shift: |mu_a - mu_b|^2
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(x, x[:, :4])


def test_fd_effnet_is_zero_on_itself_and_grows_with_damage(backbone):
    ims = photos.load(96)
    clean = backbone.embed(list(ims))
    fds = [frechet_distance(clean, backbone.embed(list(blur(ims, r)))) for r in (1, 2, 4)]
    assert frechet_distance(clean, clean) < 1e-6 * fds[0]
    assert fds[0] < fds[1] < fds[2]


def test_perceptual_distance_is_zero_symmetric_and_monotone(backbone, photos64):
    model = backbone.model
    x = as01(photos64)
    np.testing.assert_allclose(perceptual_distance(model, x, x), 0, atol=1e-6)
    b2 = as01(blur(photos64, 2))
    np.testing.assert_allclose(perceptual_distance(model, x, b2), perceptual_distance(model, b2, x), rtol=1e-5)
    by_blur = np.stack([perceptual_distance(model, x, as01(blur(photos64, r))) for r in (0.5, 1, 2, 4)])
    by_noise = np.stack([perceptual_distance(model, x, as01(noise(photos64, s))) for s in (0.02, 0.05, 0.1, 0.2)])
    assert np.all(np.diff(by_blur, axis=0) > 0), by_blur    # per image, every step up
    assert np.all(np.diff(by_noise, axis=0) > 0), by_noise


@pytest.mark.slow   # the properties of the distance: test_perceptual_distance_is_zero_symmetric_and_monotone
def test_perceptual_distance_ranks_like_pixels_where_pixels_agree_and_has_gradients(backbone, photos64):
    """A photo is nearer its own slight blur than another photo; the loss has finite gradients."""
    model = backbone.model
    x = as01(photos64)
    near = perceptual_distance(model, x, as01(blur(photos64, 0.5)))
    other = perceptual_distance(model, x, jnp.roll(x, 1, axis=0))
    assert np.all(near < other)
    g = jax.grad(lambda y: perceptual_distance(model, x, y).sum())(as01(blur(photos64, 1)))
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).sum()) > 0
    with pytest.raises(ValueError, match="one shape"):
        perceptual_distance(model, x, x[:, :32])


def test_bench_flops_are_the_jaxpr_count_plus_the_depthwise_taps():
    """The analytic count of eval.bench_vision against eval.flops' jaxpr count, which sees every conv and
    matmul but not the depthwise convs (run as elementwise taps): their 2 k^2 C h w FLOPs are added back."""
    from flax import nnx

    from backbones.vision import EfficientNetLite, get_config
    from eval.bench_vision import model_flops
    from eval.flops import count_flops

    cfg = get_config("efficientnet-lite1")
    model = EfficientNetLite(cfg, rngs=nnx.Rngs(0))
    S = 96
    counted = count_flops(lambda x: model(x), jnp.zeros((1, S, S, 3)))
    h, taps = -(-S // 2), 0
    for b in cfg.blocks:
        h = -(-h // b.stride)
        taps += 2 * b.kernel ** 2 * b.hidden * h * h
    assert model_flops(cfg, S) == counted + taps


class _PixelStages:
    """A stand-in trunk whose every stage is the model input itself, scaled by a per-stage factor:
    the documented formula can then be worked out by hand."""

    def features(self, u):   # (B, H, W, 3) model-scale input -> {stage: (B, H, W, 3)}
        from backbones.vision.perceptual import DEFAULT_STAGES

        return {name: u * (k + 1) for k, name in enumerate(DEFAULT_STAGES)}


def test_perceptual_distance_is_its_documented_formula_on_a_closed_case():
    """Per position: unit-length feature vectors, squared difference summed over channels; then the mean over
    positions and over stages. x's pixels map to the model input u = (1, 1, 0) and y's to v = (1, 0, 0)
    ((255 p - 127) / 128); unit length gives |u/|u| - v|^2 = (1 - 1/sqrt2)^2 + 1/2 = 2 - sqrt2 at every
    position and every stage, whatever the stage's scale. On the half of the picture where x = y it is 0."""
    hi, mid = 1.0, 127.0 / 255.0
    x = jnp.tile(jnp.array([hi, hi, mid]), (1, 4, 4, 1))
    y = jnp.tile(jnp.array([hi, mid, mid]), (1, 4, 4, 1))
    half = x.at[:, :, 2:].set(y[:, :, 2:])                   # equal to y on the right half
    d = perceptual_distance(_PixelStages(), jnp.concatenate([x, half]), jnp.concatenate([y, y]))
    np.testing.assert_allclose(d, [2 - np.sqrt(2), (2 - np.sqrt(2)) / 2], rtol=1e-5)
    # (Without the unit scaling the same inputs would give (k+1)^2 per stage: (1 + 4 + 9 + 16 + 25) / 5 = 11.)
