"""The `llmsight` command line: tokenize -> decode round trip, reconstruct, and one-line errors."""
import json

import numpy as np
import pytest
from PIL import Image

from llmsight.cli import build_parser, main
from visiondata import photos


@pytest.fixture(scope="module")
def photo():
    return photos.paths()[photos.NAMES.index("chelsea")]


def test_tokenize_json_decodes_to_what_the_library_draws(photo, tmp_path, capsys):
    from lens.images import load_image
    from spae import load_tokenizer

    assert main(["tokenize", photo, "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)
    tok = load_tokenizer(spec["tokenizer"])
    assert [tuple(l["shape"]) for l in spec["layers"]] == [tuple(s) for s in tok.layer_shapes()]
    assert spec["tokens"] == sum(h * w for h, w in tok.layer_shapes())
    assert spec["bpp"] == pytest.approx(spec["tokens"] * np.log2(tok.vocab.size) / tok.model.cfg.image_size ** 2, abs=1e-4)
    pyr = tok.encode(load_image(photo)[None])
    assert spec["layers"][0]["words"] == tok.to_text(pyr)[0][0]
    (tmp_path / "t.json").write_text(json.dumps(spec))
    assert main(["decode", str(tmp_path / "t.json"), "--out", str(tmp_path / "d.png")]) == 0
    want = tok.decode(tok.from_llm_ids([np.asarray(l, np.int64) for l in pyr.llm_ids]))[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d.png")), want)
    assert main(["reconstruct", photo, "--out", str(tmp_path / "r.png"), "--depth", "2"]) == 0
    assert "bits/pixel" in capsys.readouterr().out and Image.open(tmp_path / "r.png").size == (64, 64)


def test_bad_input_is_one_line_and_exit_2(photo, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases = [
        (["tokenize", str(bad)], "corrupt"),
        (["tokenize", photo, "--tokenizer", "nope"], "shipped names: fmnist32"),
        (["tokenize", photo, "--depth", "9"], "--depth must be in 1..7"),
        (["decode", str(bad), "--out", str(tmp_path / "x.png")], "not a token file"),
        (["fewshot", photo, "--support", "x.png"], "IMAGE=LABEL"),
        (["fewshot", photo, "--support", f"{photo}=cat"], "at least two labels"),
        (["fewshot", photo, "--support", f"{photo}=cat", "--support", f"{bad}=dog"], "corrupt"),
    ]
    shape_wrong = tmp_path / "s.json"
    shape_wrong.write_text(json.dumps({"tokenizer": "fmnist32", "layers": [{"shape": [2, 2], "ids": [1, 2, 3, 4]}]}))
    cases.append((["decode", str(shape_wrong), "--out", str(tmp_path / "x.png")], "layer 1 is (2, 2)"))
    unknown = tmp_path / "u.json"
    unknown.write_text(json.dumps({"tokenizer": "fmnist32", "layers": [{"shape": [1, 1], "ids": [0]}]}))
    cases.append((["decode", str(unknown), "--out", str(tmp_path / "x.png")], "not in this tokenizer's codebook"))
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_every_command_has_help_with_an_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "tokenize" in a.choices)
    for name, p in sub.choices.items():
        assert "example:" in p.format_help() and "llmsight " + name in p.format_help(), name


@pytest.fixture
def shared_models(monkeypatch, smollm2):
    """`llmsight fewshot` loads its models on every call; here the session's LLM and one LENS serve them all."""
    import functools

    import backbones
    from lens import Lens

    monkeypatch.setattr(backbones, "load_llm", lambda name: smollm2)
    monkeypatch.setattr(Lens, "load", functools.lru_cache(maxsize=None)(Lens.load))


@pytest.mark.parametrize("method", ["spae", "lens"])
def test_fewshot_labels_a_support_image_as_that_support_in_either_order(method, photo, shared_models, capsys):
    """With the label-bias correction on, a query that is the very file of a support gets that support's label,
    whichever support comes last (uncorrected, SmolLM2 answers "cat" for the coffee photo in one order)."""
    coffee = photos.paths()[photos.NAMES.index("coffee")]
    for supports in ([f"{photo}=cat", f"{coffee}=coffee"], [f"{coffee}=coffee", f"{photo}=cat"]):
        argv = ["fewshot", "--method", method, "--calibrate", "both", coffee, photo]
        assert main(argv + [a for s in supports for a in ("--support", s)]) == 0, supports
        lines = capsys.readouterr().out.strip().splitlines()
        assert [line.split(": ", 1)[0] for line in lines] == [coffee, photo]
        assert [line.split(": ", 1)[1].split()[0] for line in lines] == ["coffee", "cat"], (supports, lines)
        for line in lines:       # "(cat -0.64, coffee -0.75 log-prob over the labels, ...)": a distribution
            log_probs = [float(part.split()[1]) for part in line.split("(", 1)[1].split(" log-prob")[0].split(", ")]
            assert sum(np.exp(log_probs)) == pytest.approx(1, abs=0.02) and "calibrated: both" in line
