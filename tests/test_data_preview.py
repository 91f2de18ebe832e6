"""Contact sheets: the contract command writes a PNG of the expected layout."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from visiondata import preview

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    subprocess.run([sys.executable, "-m", "visiondata.preview", *args], check=True, cwd=ROOT, capture_output=True)


def test_scenes_sheet_command(tmp_path):
    out = tmp_path / "sheet.png"
    _run("--dataset", "scenes", "--out", str(out), "--seed", "1", "--n", "8")
    im = np.asarray(Image.open(out))
    assert im.ndim == 3 and im.shape[1] == 4 * (preview.CELL + 6) + 6
    assert len(np.unique(im.reshape(-1, 3), axis=0)) > 50  # images and text, not a blank page


def test_photos_sheet_command(tmp_path):
    out = tmp_path / "photos.png"
    _run("--dataset", "photos", "--out", str(out), "--n", "4")
    assert Image.open(out).size[0] == 4 * (preview.CELL + 6) + 6


@pytest.mark.fashion_mnist
def test_fashion_mnist_sheet_command(tmp_path):
    out = tmp_path / "fm.png"
    _run("--dataset", "fashion_mnist", "--out", str(out), "--n", "4", "--seed", "2")
    assert out.stat().st_size > 1000


def test_contact_sheet_places_images():
    ims = np.zeros((3, 8, 8, 3), np.uint8)
    ims[1] = 255
    sheet = preview.contact_sheet(ims, ["a", "b", "c"], cols=3, cell=32, text_lines=1)
    # the second cell is white, the first black
    assert sheet[6 + 16, 6 + 16].tolist() == [0, 0, 0]
    assert sheet[6 + 16, 6 + 38 + 16].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        preview.contact_sheet(ims, ["a", "b"])
