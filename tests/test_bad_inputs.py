"""Bad input gets one clear error: the SPAE tokenizer API, episode CSVs and GGUF weights.

Each table row is one bad input, the exception type it must raise and a fragment of its
message (which names what is wrong and where: the word, layer and position; the file and line;
the file and tensor). The round-trip tests check that the new text inverse loses nothing.
"""

import os
import shutil

import numpy as np
import pytest

from backbones.llm.api import load_llm, named_model_path
from backbones.llm.gguf_file import GGUFFormatError, read_gguf_fast
from backbones.llm.weights import CheckpointError
from visiondata import episodes
from visiondata.errors import DataError, MissingDataError
from visiondata.images import write_image


# ----------------------------------------------------------------------------- SPAE tokenizer


@pytest.fixture(scope="module")
def tok(smollm2):
    from spae import load_tokenizer

    return load_tokenizer("fmnist32", llm=smollm2)


@pytest.fixture(scope="module")
def photos64():
    from visiondata import photos

    return photos.load(size=64)[:4]            # uint8 (4, 64, 64, 3), real photographs


@pytest.fixture(scope="module")
def words(tok, photos64):
    """to_text of two real photos: per image, per layer, the words."""
    return tok.to_text(tok.encode(photos64[:2]))


def _replace(words, image, layer, pos, new):
    out = [[list(l) for l in im] for im in words]
    out[image][layer][pos] = new
    return out


def _ids(tok, batch=2, wrong=None):
    """Valid LLM-id layers of `batch` images; `wrong` = (layer, shape) replaces one layer's shape."""
    some_id = int(tok.vocab.llm_ids[0])
    layers = [np.full((batch, h, w), some_id, np.int64) for h, w in tok.layer_shapes()]
    if wrong is not None:
        layers[wrong[0]] = np.full(wrong[1], some_id, np.int64)
    return layers


def _corrupt_png(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return [str(p)]


# (id, call(tok, words, tmp_path), exception, message fragment)
TOKENIZER_CASES = [
    ("empty-list", lambda t, w, d: t.encode([]), ValueError, "no images"),
    ("empty-array", lambda t, w, d: t.encode(np.zeros((0, 28, 28), np.uint8)), ValueError, "no images"),
    ("float-pixels", lambda t, w, d: t.encode(np.zeros((2, 28, 28), np.float32)), TypeError, "must be uint8"),
    ("int64-pixels", lambda t, w, d: t.encode(np.zeros((2, 28, 28), np.int64)), TypeError, "must be uint8"),
    ("one-path-not-a-list", lambda t, w, d: t.encode("photo.png"), TypeError, "pass a list: ['photo.png']"),
    ("missing-file", lambda t, w, d: t.encode([str(d / "nope.png")]), MissingDataError, "image file not found"),
    ("corrupt-file", lambda t, w, d: t.encode(_corrupt_png(d)), DataError, "broken.png: the file is corrupt"),
    ("mixed-sizes", lambda t, w, d: t.encode([np.zeros((28, 28), np.uint8), np.zeros((30, 28), np.uint8)]),
     ValueError, "image 1 is (30, 28)"),
    ("unknown-word", lambda t, w, d: t.from_text(_replace(w, 1, 2, 5, "qzxvk")), ValueError,
     "image 1: unknown word 'qzxvk' in layer 2 (4x4) at position 5 (row 1, column 1)"),
    ("wrong-word-count", lambda t, w, d: t.from_text(w[0][:1] + [w[0][1][:3]]), ValueError,
     "layer 1 (2x2) has 3 words, expected 4"),
    ("too-many-layers", lambda t, w, d: t.from_text(w[0] + [w[0][-1]]), ValueError, "got 5 layers; this tokenizer has 4"),
    ("no-text", lambda t, w, d: t.from_text([]), ValueError, "no images"),
    ("layer-as-one-string", lambda t, w, d: t.from_text([" ".join(layer) for layer in w[0]]), ValueError,
     "expected a list of layers, each a list of words"),
    ("layers-differ", lambda t, w, d: t.from_text([w[0], w[1][:2]]), ValueError,
     "image 1: has 2 layers but image 0 has 4"),
    ("ids-wrong-shape", lambda t, w, d: t.from_llm_ids(_ids(t, wrong=(1, (2, 3, 3)))), ValueError,
     "layer 1 has shape (2, 3, 3), expected (B, 2, 2)"),
    ("ids-2d-layer", lambda t, w, d: t.decode(_ids(t, wrong=(0, (1, 1)))), ValueError,
     "layer 0 has shape (1, 1), expected (B, 1, 1)"),
    ("ids-batch-mismatch", lambda t, w, d: t.from_llm_ids(_ids(t, wrong=(2, (3, 4, 4)))), ValueError,
     "layer 2 holds 3 images but layer 0 holds 2"),
    ("ids-not-in-codebook", lambda t, w, d: t.from_llm_ids(_ids(t)[:3] + [np.zeros((2, 8, 8), int)]), ValueError, "layer 3: LLM id 0 is not in this tokenizer's codebook"),
    ("ids-shape-batch", lambda t, w, d: t.from_llm_ids(_ids(t), shape=(3, 28, 28)), ValueError,
     "with B = 2, the layers' batch size"),
]


def test_layer_shapes_the_table_assumes(tok):
    assert tok.layer_shapes() == [(1, 1), (2, 2), (4, 4), (8, 8)]


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in TOKENIZER_CASES], ids=[c[0] for c in TOKENIZER_CASES])
def test_bad_tokenizer_input(tok, words, tmp_path, call, exc, fragment):
    with pytest.raises(exc) as e:
        call(tok, words, tmp_path)
    assert fragment in str(e.value), str(e.value)


def test_decode_checks_a_pyramid_of_another_grid(tok, photos64):
    pyr = tok.encode(photos64[:2])
    pyr.codes[1] = np.zeros((2, 3, 3), np.int32)            # e.g. a pyramid of a tokenizer with another grid
    with pytest.raises(ValueError, match=r"decode: layer 1 has shape \(2, 3, 3\), expected \(B, 2, 2\)"):
        tok.decode(pyr)


def _assert_text_round_trip(tok, x):
    pyr = tok.encode(x)
    text = tok.to_text(pyr)
    assert len(set(tok.vocab.words)) == tok.vocab.size      # no two rows read the same: the text is lossless
    back = tok.from_text(text, shape=pyr.shape)
    differ = sum(int((a != b).sum()) for a, b in zip(tok.llm_ids(pyr), tok.llm_ids(back)))
    assert differ == 0, f"{differ} token positions differ after to_text -> from_text"
    np.testing.assert_array_equal(tok.decode(back), tok.decode(pyr))
    one = tok.from_text(text[1][:2])                         # one image, a prefix of two layers
    assert [l.shape for l in one.llm_ids] == [(1, 1, 1), (1, 2, 2)]
    for a, b in zip(one.llm_ids, pyr.llm_ids[:2]):
        np.testing.assert_array_equal(a[0], b[1])
    assert tok.decode(one).shape == (1, 32, 32)              # the model's size when no shape is given


def test_text_round_trip_on_real_photos(tok, photos64):
    _assert_text_round_trip(tok, photos64)


@pytest.mark.fashion_mnist
def test_text_round_trip_on_fashion_mnist(tok):
    from visiondata import fashion_mnist

    _assert_text_round_trip(tok, fashion_mnist.load("test")[0][:6])


def test_encode_reads_a_list_of_image_files(tok, photos64, tmp_path):
    paths = []
    for i, im in enumerate(photos64[:3]):
        paths.append(tmp_path / f"p{i}.png")
        write_image(paths[-1], im)
    from_files, from_array = tok.encode(paths), tok.encode(photos64[:3])
    assert from_files.shape == from_array.shape == (3, 64, 64, 3)
    for a, b in zip(from_files.llm_ids, from_array.llm_ids):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------- episode CSVs

HEADER = "episode,role,dataset,split,index,label,class_name"
GOOD = ["0,support,fashion_mnist,test,5,7,sneaker", "0,support,fashion_mnist,test,6,3,dress",
        "0,query,fashion_mnist,test,9,7,sneaker", "0,query,fashion_mnist,test,12,3,dress"]


def _with(line_no, row):
    """GOOD with data row `line_no` (file line: 2 is the first data row) replaced, or appended when None."""
    rows = list(GOOD)
    if line_no is None:
        rows.append(row)
    else:
        rows[line_no - 2] = row
    return rows


# (id, data rows, read_csv keyword arguments, message fragment after "<file>, line N: ")
EPISODE_CASES = [
    ("negative-index", _with(3, "0,support,fashion_mnist,test,-1,3,dress"), {},
     "line 3: image index -1 is negative"),
    ("index-past-fashion-mnist", _with(5, "0,query,fashion_mnist,test,10000,3,dress"), {},
     "line 5: image index 10000 is out of range for fashion_mnist/test, which has 10000 images"),
    ("index-past-given-size", [r.replace("fashion_mnist", "mine") for r in GOOD], {"sizes": {"mine": 10}},
     "line 5: image index 12 is out of range for mine/test, which has 10 images"),
    ("query-class-without-support", _with(None, "0,query,fashion_mnist,test,40,1,trouser"), {},
     "line 6: query of class 1 in episode 0, which has no support of that class (support classes: [3, 7])"),
    ("episode-without-supports", _with(None, "1,query,fashion_mnist,test,40,1,trouser"), {},
     "line 6: query of class 1 in episode 1, which has no support of that class (support classes: none)"),
    ("label-named-twice", _with(4, "0,query,fashion_mnist,test,9,7,boot"), {},
     "line 4: episode 0 names label 7 'boot' here but 'sneaker' on line 2"),
    ("mixed-splits", _with(5, "0,query,fashion_mnist,train,12,3,dress"), {},
     "line 5: episode 0 mixes splits ('test' on line 2, 'train' here)"),
    ("mixed-datasets", _with(3, "0,support,scenes,test,6,3,dress"), {},
     "line 3: episode 0 mixes datasets in its support rows ('fashion_mnist', then 'scenes' here)"),
    ("support-is-query", _with(4, "0,query,fashion_mnist,test,5,7,sneaker"), {},
     "line 4: image 5 is both a support and a query of episode 0"),
    ("image-twice", _with(3, "0,support,fashion_mnist,test,5,3,dress"), {},
     "line 3: image 5 is already a support of episode 0 (line 2)"),
    ("short-row", _with(3, "0,support,fashion_mnist,test,6,3"), {}, "line 3: expected 7 fields"),
    ("not-an-integer", _with(3, "0,support,fashion_mnist,test,six,3,dress"), {}, "line 3: episode, index and label"),
]


@pytest.mark.parametrize("rows,kwargs,fragment", [c[1:] for c in EPISODE_CASES], ids=[c[0] for c in EPISODE_CASES])
def test_bad_episode_csv(tmp_path, rows, kwargs, fragment):
    path = tmp_path / "episodes.csv"
    path.write_text("\n".join([HEADER] + rows) + "\n")
    with pytest.raises(DataError) as e:
        episodes.read_csv(path, **kwargs)
    assert str(e.value).startswith(f"{path}, line "), str(e.value)
    assert fragment in str(e.value), str(e.value)


def test_good_episode_csv_still_reads(tmp_path):
    path = tmp_path / "episodes.csv"
    path.write_text("\n".join([HEADER] + GOOD) + "\n")
    (ep,) = episodes.read_csv(path)
    assert ep.classes.tolist() == [7, 3] and ep.class_names == ["sneaker", "dress"]
    assert ep.support.tolist() == [5, 6] and ep.query.tolist() == [9, 12]


# ------------------------------------------------------------------------------- GGUF weights


@pytest.fixture(scope="module")
def gguf_src():
    return named_model_path("smollm2-135m")


def _empty(src, d):
    (d / "empty.gguf").write_bytes(b"")
    return d / "empty.gguf"


def _prefix(n_bytes):
    def make(src, d):
        with open(src, "rb") as f:
            (d / "cut.gguf").write_bytes(f.read(n_bytes(os.path.getsize(src))))
        return d / "cut.gguf"
    return make


def _text(src, d):
    (d / "notes.gguf").write_text("these are notes, not weights\n" * 4)
    return d / "notes.gguf"


def _damaged(src, d):
    """A copy with 1 MB of random bytes in the middle of the tensor data, over quantised blocks
    whose f16 scales decode to inf/NaN for about 1 in 32 random values."""
    from gguf import GGMLQuantizationType as T

    _, tensors = read_gguf_fast(src)
    views = sorted(tensors.values(), key=lambda v: v.offset)
    mid = (views[0].offset + views[-1].offset + views[-1].data.nbytes) // 2
    hit = [v for v in views if v.offset < mid + 2 ** 20 and v.offset + v.data.nbytes > mid]
    assert hit and all(v.tensor_type in (T.Q4_0, T.Q4_1, T.Q8_0, T.F16) for v in hit), [v.name for v in hit]
    path = d / "damaged.gguf"
    shutil.copyfile(src, path)
    with open(path, "r+b") as f:
        f.seek(mid)
        f.write(np.random.default_rng(0).bytes(2 ** 20))
    return path


# (id, make(src, tmp_path) -> path, exception, message fragment; the message must also name the file)
GGUF_CASES = [
    ("empty", _empty, GGUFFormatError, "is empty: not a GGUF file"),
    ("ten-bytes", _prefix(lambda n: 10), GGUFFormatError, "is only 10 bytes: not a GGUF file"),
    ("cut-in-header", _prefix(lambda n: 5000), GGUFFormatError, "is truncated (needs byte"),
    ("cut-in-tensor-data", _prefix(lambda n: n // 2), GGUFFormatError, "is truncated: tensor"),
    ("not-gguf", _text, GGUFFormatError, "bad magic bytes"),
    ("random-megabyte", _damaged, CheckpointError, "tensor 'blk.16.ffn_"),
]


@pytest.mark.parametrize("make,exc,fragment", [c[1:] for c in GGUF_CASES], ids=[c[0] for c in GGUF_CASES])
def test_bad_gguf_fails_at_load_naming_the_file(gguf_src, tmp_path, make, exc, fragment):
    path = make(gguf_src, tmp_path)
    with pytest.raises(exc) as e:
        load_llm(str(path))
    assert fragment in str(e.value) and str(path) in str(e.value), str(e.value)
    if exc is CheckpointError:
        assert "non-finite values" in str(e.value) and "after dequantising" in str(e.value)

