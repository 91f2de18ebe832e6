"""The shipped scenes tokenizers (spae/pretrained/scenes32, scenes64) on freshly rendered test scenes.

The failure it guards against is the one every 64 px run without the usage-entropy term fell into: codes that draw only the
background. A flat fill with each image's median colour is that failure's best case, so the
decoded pyramid must beat it on the object pixels."""

import numpy as np
import pytest

from visiondata import scenes


# (shipped checkpoint, image size, share of scenes whose object pixels must beat 0.75x the fill's
# error). Measured on 200 test scenes: scenes32 over 90%, scenes64 70%.
SHIPPED = [("scenes32", 32, 0.9), ("scenes64", 64, 0.55)]


@pytest.mark.parametrize("name,size,share", SHIPPED)
def test_codes_draw_the_objects_not_just_the_background(name, size, share):
    from spae import load_tokenizer

    tok = load_tokenizer(f"spae/pretrained/{name}")
    x = scenes.generate(48, size=size, seed=1, split="test").images          # (48, size, size, 3) uint8
    pyr = tok.encode(x)
    y = tok.decode(pyr, layers=4)
    assert y.shape == x.shape and y.dtype == np.uint8
    bg = np.median(x.reshape(len(x), -1, 3), axis=1)[:, None, None, :]        # (48, 1, 1, 3)
    obj = np.any(np.abs(x - bg) > 12, axis=-1)                               # object pixels
    assert obj.any(axis=(1, 2)).all()
    err_model = np.array([np.abs(y[i][obj[i]].astype(float) - x[i][obj[i]]).mean() for i in range(len(x))])
    err_fill = np.array([np.abs(bg[i, 0, 0] - x[i][obj[i]].astype(float)).mean() for i in range(len(x))])
    assert np.mean(err_model < 0.75 * err_fill) > share
    assert len(np.unique(pyr.codes[3])) > 60                                 # not a handful of words
    words = [w for img in tok.to_text(pyr) for w in img[0]]
    colours = set(scenes.COLORS) | {"white", "black", "brown", "grey", "gray"}
    assert np.mean([w in colours for w in words]) > 0.5                      # top layer: colour words


def test_flat_fill_reference_is_the_median_colour():
    from eval.spae_eval import flat_fill

    x = np.zeros((2, 6, 6, 3), np.uint8)
    x[:] = [10, 20, 30]
    x[0, :2, :2] = [200, 0, 0]                        # 4 of 36 pixels: not the median
    np.testing.assert_array_equal(flat_fill(x), np.broadcast_to(np.array([10, 20, 30], np.uint8), x.shape))
    grey = x[..., 0]                                   # (B, H, W) keeps its shape
    assert flat_fill(grey).shape == grey.shape and (flat_fill(grey) == 10).all()
