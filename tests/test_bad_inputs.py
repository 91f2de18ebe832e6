"""Bad input gets one clear error: the SPAE tokenizer API, episode CSVs and weight files (GGUF,
safetensors, torch `.pth`).

Each table row is one bad input, the exception type it must raise and a fragment of its
message (which names what is wrong and where: the word, layer and position; the file and line;
the file and tensor). The round-trip tests check that the new text inverse loses nothing.
"""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from backbones.llm.api import load_llm, named_model_path
from backbones.llm.gguf_file import GGUFFormatError, read_gguf_fast
from backbones.llm.weights import CheckpointError
from backbones.weight_files import read_safetensors
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



# ------------------------------------------------------------------------ safetensors and .pth weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPAE_DIR = os.path.join(ROOT, "spae/pretrained/fmnist32")           # a real safetensors checkpoint


def _st(edit):
    """A copy of the fmnist32 tokenizer (vocab.json, config, params.safetensors) with its params file's
    bytes passed through `edit(raw) -> bytes`; -> the params file."""
    def make(d):
        shutil.copytree(SPAE_DIR, d / "tok")
        path = d / "tok" / "params.safetensors"
        path.write_bytes(edit(path.read_bytes()))
        return path
    return make


def _random_bytes(n, at=0.5, seed=0):
    """`edit` that overwrites n bytes at fraction `at` of the file with random bytes: float32 values of
    random bits are inf or NaN about 1 in 256."""
    def edit(raw):
        b, i = bytearray(raw), int(len(raw) * at)
        b[i:i + n] = np.random.default_rng(seed).bytes(n)
        return bytes(b)
    return edit


def _handmade(entry, data_bytes):
    """`edit` that replaces the file by one tensor 'a' with header `entry` and `data_bytes` zero bytes."""
    def edit(raw):
        h = json.dumps({"a": entry}).encode()
        return len(h).to_bytes(8, "little") + h + bytes(data_bytes)
    return edit


def _pth(edit):
    """A copy of the EfficientNet-Lite0 ImageNet weights (legacy torch.save, 18.8 MB) through `edit`."""
    def make(d):
        from backbones.vision.weights import weights_path

        path = d / "lite0.pth"
        path.write_bytes(edit(open(weights_path("efficientnet-lite0"), "rb").read()))
        return path
    return make


def _torch_zip(damage):
    """A torch >= 1.6 (zip) checkpoint written by torch, then `damage(path)`."""
    def make(d):
        torch = pytest.importorskip("torch")
        g = torch.Generator().manual_seed(0)
        sd = {"w": torch.randn(64, 16, generator=g), "b": torch.zeros(16), "n": torch.tensor(3)}
        path = d / "w.pth"
        torch.save(sd, path)
        damage(path, sd, torch)
        return path
    return make


def _cut_zip(path, sd, torch):
    path.write_bytes(path.read_bytes()[:-30])


def _flip_stored_bytes(path, sd, torch):
    """Change 8 bytes inside storage 0 (stored uncompressed): the zip's CRC no longer matches."""
    raw = bytearray(path.read_bytes())
    i = raw.index(b"w/data/0") + 200
    raw[i:i + 8] = b"\x7f" * 8
    path.write_bytes(bytes(raw))


def _short_storage(path, sd, torch):
    """A well-formed zip whose storage 0 lost its last 8 bytes."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data[:-8] if name.endswith("/data/0") else data)
    tmp.replace(path)


def _inf_weight(path, sd, torch):
    sd["w"][3, 5] = float("inf")
    torch.save(sd, path)


def _read_tensors(path, llm):
    from backbones.clip.loaders import read_tensors

    return read_tensors(str(path))


def _load_vision(path, llm):
    from backbones import load_vision

    return load_vision(str(path))


def _load_spae(path, llm):
    from spae import load_tokenizer

    return load_tokenizer(str(path.parent), llm=llm)


def _torch_reader(path, llm):
    from backbones.torch_pickle import load_torch_state_dict

    return load_torch_state_dict(str(path))


# (id, make(tmp_path) -> path, load(path, llm), message fragment); each raises CheckpointError naming the file
WEIGHT_CASES = [
    ("st-empty", _st(lambda raw: b""), _load_spae, "is empty: not a safetensors file"),
    ("st-five-bytes", _st(lambda raw: raw[:5]), _read_tensors, "is only 5 bytes: not a safetensors file"),
    ("st-cut-in-header", _st(lambda raw: raw[:100]), _read_tensors,
     "is truncated or corrupt: its header claims 8016 bytes, the file holds 92"),
    ("st-cut-in-data", _st(lambda raw: raw[: len(raw) // 2]), _load_spae,
     "is truncated: tensor 'decoder/conv_in/kernel' needs bytes up to 409624, the file has 379726"),
    ("st-header-not-json", _st(lambda raw: (20).to_bytes(8, "little") + b"these are notes, not"), _read_tensors,
     "the safetensors header is not readable"),
    ("st-size-mismatch", _st(_handmade({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}, 12)),
     _read_tensors, "tensor 'a' spans 12 bytes, but shape (2, 2) of F32 needs 16"),
    ("st-unknown-dtype", _st(_handmade({"dtype": "Q4", "shape": [2, 2], "data_offsets": [0, 8]}, 8)),
     _read_tensors, "tensor 'a' has unknown dtype 'Q4'"),
    ("st-random-4k", _st(_random_bytes(4096)), _load_spae,
     "tensor 'decoder/conv_in/kernel' holds 5 non-finite values of 18432 (first nan at (0, 0, 342, 29))"),
    ("pth-empty", _pth(lambda raw: b""), _load_vision, "is empty: not a torch checkpoint file"),
    ("pth-cut-in-pickle", _pth(lambda raw: raw[:100]), _load_vision,
     "cannot read this torch checkpoint (UnpicklingError: pickle data was truncated)"),
    ("pth-cut-in-storage", _pth(lambda raw: raw[: len(raw) // 2]), _load_vision,
     "storage '89377584' claims 1280000 elements, past the end of the 9413016-byte file"),
    ("pth-cut-before-storage", _pth(lambda raw: raw[:-10]), _load_vision, "ends before storage '99234208'"),
    ("pth-random-4k", _pth(_random_bytes(4096)), _load_vision,
     "tensor '_fc.weight' holds 4 non-finite values of 1280000 (first nan at (165, 643))"),
    ("zip-cut", _torch_zip(_cut_zip), _torch_reader, "is truncated: it starts as a zip archive"),
    ("zip-bad-crc", _torch_zip(_flip_stored_bytes), _torch_reader, "Bad CRC-32 for file 'w/data/0'"),
    ("zip-short-storage", _torch_zip(_short_storage), _torch_reader,
     "storage '0' holds 4088 bytes, but its 1024 float32 elements need 4096"),
    ("zip-inf", _torch_zip(_inf_weight), _read_tensors,
     "tensor 'w' holds 1 non-finite values of 1024 (first inf at (3, 5))"),
]


@pytest.mark.parametrize("make,load,fragment", [c[1:] for c in WEIGHT_CASES], ids=[c[0] for c in WEIGHT_CASES])
def test_bad_weight_file_fails_at_load_naming_the_file(smollm2, tmp_path, make, load, fragment):
    path = make(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load(path, smollm2)
    assert fragment in str(e.value) and str(path) in str(e.value), str(e.value)


def test_safetensors_reader_reads_what_safetensors_writes(tmp_path):
    """Every dtype the reader knows, an empty tensor, and the repo's largest file, against the
    safetensors package's own reader; the arrays are writable."""
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    tensors = {f"t_{np.dtype(t).name}": (rng.standard_normal((3, 5)) * 10).astype(t)
               for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8)}
    tensors.update(empty=np.zeros((0, 4), np.float32), flag=np.array([True, False]), scalar=np.array(2.5, np.float32))
    save_file(tensors, str(tmp_path / "all.safetensors"))
    for path in (tmp_path / "all.safetensors", os.path.join(ROOT, "backbones/clip/lit/model.safetensors")):
        ours, ref = read_safetensors(path), load_file(str(path))
        assert set(ours) == set(ref)
        for k, v in ref.items():
            assert ours[k].dtype == v.dtype and ours[k].shape == v.shape and np.array_equal(ours[k], v), k
            assert ours[k].flags.writeable
    bf16 = np.arange(6, dtype=np.float32).reshape(2, 3)
    h = json.dumps({"b": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(len(h).to_bytes(8, "little") + h
                                                + bf16.astype(ml_dtypes.bfloat16).tobytes())
    got = read_safetensors(tmp_path / "bf16.safetensors")["b"]
    assert got.dtype == ml_dtypes.bfloat16 and np.array_equal(got.astype(np.float32), bf16)
