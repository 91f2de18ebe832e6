"""Bad and unusual image inputs: grayscale, RGBA, 16-bit, corrupt, huge, wrong shapes."""
import numpy as np
import pytest
from PIL import Image

from lens.images import ImageError, load_image, prepare_images, resize, to_rgb


def test_grayscale_and_rgba_arrays():
    g = np.arange(64, dtype=np.uint8).reshape(8, 8)
    rgb = to_rgb(g)
    assert rgb.shape == (8, 8, 3) and (rgb[..., 0] == g).all() and (rgb[..., 2] == g).all()
    assert (to_rgb(g[..., None]) == rgb).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, ..., 3] = 255  # top half opaque red, bottom transparent -> white
    out = to_rgb(rgba)
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()
    assert (to_rgb(np.ones((2, 2, 3), np.float32)) == 255).all()


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4, 2), np.uint8), "expected"),
    (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
    (np.full((4, 4, 3), 300, np.int32), "0..255"),
    (np.full((4, 4, 3), np.nan), "NaN"),
])
def test_bad_arrays_have_clear_messages(bad, match):
    with pytest.raises(ImageError, match=match):
        to_rgb(bad)


def test_files(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 1] = 100
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == [0, 100, 0]).all()
    Image.fromarray(np.full((5, 6), 77, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (5, 6, 3)
    Image.fromarray((np.arange(30).reshape(5, 6) * 2000).astype(np.uint16)).save(tmp_path / "d.png")
    d = load_image(tmp_path / "d.png")
    assert d.dtype == np.uint8 and d.max() == 255 and d.min() == 0
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="corrupt"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(ImageError, match="no such"):
        load_image(tmp_path / "missing.png")
    Image.new("RGB", (3000, 2000)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="downscale"):
        load_image(tmp_path / "big.png", max_pixels=1_000_000)
    batch = prepare_images([tmp_path / "a.png", str(tmp_path / "g.png"), np.zeros((40, 30), np.uint8)], 16)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.uint8


def test_resize_center_crops_and_shrinks_big_photos():
    im = np.zeros((200, 100, 3), np.uint8)
    im[50:150] = 255  # the centre square is white
    assert (resize(im, 10) > 250).all()
    big = np.random.RandomState(0).randint(0, 256, (2000, 3000, 3)).astype(np.uint8)
    assert resize(big, 64).shape == (64, 64, 3)
    assert prepare_images(np.zeros((2, 64, 64, 3), np.uint8), 64).shape == (2, 64, 64, 3)
    with pytest.raises(ImageError, match="no images"):
        prepare_images([], 8)
