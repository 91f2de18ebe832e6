"""The shipped scenes tokenizers (spae/pretrained/scenes64) on freshly rendered test scenes.

The failure it guards against is the one every 64 px run without the usage-entropy term fell into: codes that draw only the
background. A flat fill with each image's median colour is that failure's best case, so the
decoded pyramid must beat it on the object pixels."""

import numpy as np
import pytest

from visiondata import scenes


# (shipped checkpoint, image size, share of scenes whose object pixels must beat 0.75x the fill's
# error, share whose top-layer word must name the main object's colour or shape). Measured by
# eval.spae_eval on 1,000 test scenes: scenes64 99.8%, 84.3%.
SHIPPED = [("scenes64", 64, 0.9, 0.6)]


@pytest.mark.parametrize("name,size,share,hits", SHIPPED)
def test_codes_draw_the_objects_not_just_the_background(name, size, share, hits):
    from eval.spae_eval import names_class, object_error_ratio
    from spae import load_tokenizer

    tok = load_tokenizer(f"spae/pretrained/{name}")
    s = scenes.generate(48, size=size, seed=1, split="test")
    x = s.images                                                             # (48, size, size, 3) uint8
    pyr = tok.encode(x)
    y = tok.decode(pyr, layers=4)
    assert y.shape == x.shape and y.dtype == np.uint8
    ratio = object_error_ratio(y, x)                                         # (48,) vs the flat fill
    assert np.isfinite(ratio).all()                                          # every scene has objects
    assert np.mean(ratio < 0.75) > share
    assert len(np.unique(pyr.codes[3])) > 60                                 # not a handful of words
    words = [w for img in tok.to_text(pyr) for w in img[0]]
    colours = set(scenes.COLORS) | {"white", "black", "brown", "grey", "gray"}
    assert np.mean([w in colours for w in words]) > 0.5                      # top layer: colour words
    assert names_class(pyr.codes[0].reshape(len(x), -1), s.labels, s.class_names, tok.vocab.words) >= hits


def test_flat_fill_reference_is_the_median_colour():
    from eval.spae_eval import flat_fill

    x = np.zeros((2, 6, 6, 3), np.uint8)
    x[:] = [10, 20, 30]
    x[0, :2, :2] = [200, 0, 0]                        # 4 of 36 pixels: not the median
    np.testing.assert_array_equal(flat_fill(x), np.broadcast_to(np.array([10, 20, 30], np.uint8), x.shape))
    grey = x[..., 0]                                   # (B, H, W) keeps its shape
    assert flat_fill(grey).shape == grey.shape and (flat_fill(grey) == 10).all()


def test_object_error_ratio_on_a_hand_made_scene():
    from eval.spae_eval import object_error_ratio

    x = np.full((3, 8, 8, 3), 50, np.uint8)
    x[:, 2:4, 2:4] = [250, 50, 50]                     # 4 object pixels, 200 off the ground in one channel
    y = x.copy()
    y[0, 2:4, 2:4] = [150, 50, 50]                     # half-way: error 100/3 per pixel vs the fill's 200/3
    y[1] = 50                                          # the flat fill itself: ratio 1
    y[2, 0, 0] = 0                                     # a background pixel off: not counted
    r = object_error_ratio(y, x)
    np.testing.assert_allclose(r, [0.5, 1.0, 0.0])
    assert np.isnan(object_error_ratio(x[:1, :, :, 0] * 0, x[:1, :, :, 0] * 0))[0]   # no object pixel
