"""The CLIP BPE tokenizer equals transformers' CLIPTokenizer on varied text (vocabulary from the
open-clip-torch package's bpe_simple_vocab_16e6.txt.gz; no open_clip code is imported)."""
import gzip
import json

import numpy as np
import pytest

from backbones.clip.tokenizer import (BPETokenizer, ByteTokenizer, clip_vocab_from_merges,
                                      open_clip_vocab_file)

TEXTS = [
    "a photo of a cat", "A Red CIRCLE left of the blue square!!", "It's 3.14159 o'clock, isn't it? I'd say we'll see.",
    "naïve café résumé Ünïcödé", "emoji 🙂🚀 and CJK 漢字かな", "   multiple   spaces\tand\nnewlines ",
    "hyphen-ated words & symbols $%^ (brackets) [x] {y}", "", "a" * 300, "2024-11-27 12:30pm #tags @user",
    "an ankle boot", "a T-shirt/top", "three small green triangles above a large yellow star",
]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    try:
        path = open_clip_vocab_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    d = tmp_path_factory.mktemp("clipvocab")
    (d / "vocab.json").write_text(json.dumps(clip_vocab_from_merges([tuple(m.split()) for m in merges])))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return d


@pytest.fixture(scope="module")
def reference(vocab_dir, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    ref = transformers.CLIPTokenizer(vocab=str(vocab_dir / "vocab.json"), merges=str(vocab_dir / "merges.txt"))
    out = tmp_path_factory.mktemp("hftok")
    ref.save_pretrained(out)
    return ref, out


def _ours_unpadded(tok, text):
    row = tok([text])[0].tolist()
    return row[: row.index(tok.eos_id) + 1]


def test_known_openai_ids():
    """Ids published with OpenAI's CLIP for this sentence (independent of any implementation here)."""
    try:
        tok = BPETokenizer.from_open_clip_vocab()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert _ours_unpadded(tok, "a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.vocab_size == 49408


@pytest.mark.parametrize("source", ["open_clip_gz", "vocab_merges", "tokenizer_json"])
def test_equals_transformers_clip_tokenizer(reference, vocab_dir, source):
    ref, tok_dir = reference
    tok = {"open_clip_gz": lambda: BPETokenizer.from_open_clip_vocab(),
           "vocab_merges": lambda: BPETokenizer.from_vocab_merges(vocab_dir / "vocab.json", vocab_dir / "merges.txt"),
           "tokenizer_json": lambda: BPETokenizer.from_file(tok_dir / "tokenizer.json")}[source]()
    for text in TEXTS:
        want = ref(text, truncation=True, max_length=77)["input_ids"]
        assert _ours_unpadded(tok, text) == want, text


def test_padding_truncation_and_decode():
    try:
        tok = BPETokenizer.from_open_clip_vocab(context_length=8)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    ids = tok(["a photo of a cat", "one two three four five six seven eight nine"])
    assert ids.shape == (2, 8) and ids.dtype == np.int32
    assert ids[0, -1] == 0 and ids[1, -1] == tok.eos_id and ids[1, 0] == tok.bos_id
    assert tok.decode(ids[0]) == "a photo of a cat"


def test_byte_tokenizer_roundtrip_and_errors():
    tok = ByteTokenizer(context_length=16)
    ids = tok(["A  Café", ""])
    assert ids[0, 0] == 1 and tok.decode(ids[0]) == "a café" and ids[1, :2].tolist() == [1, 2]
    with pytest.raises(TypeError, match="list of strings"):
        tok("just one string")
    with pytest.raises(TypeError, match="list of strings"):
        tok([1, 2])
