"""lens.blip against transformers' BlipForConditionalGeneration on a tiny random checkpoint saved to disk:
the processor's pixels, the vision encoder's tokens, the decoder's logits, greedy `generate` ids and text,
and `Captioner.load` / `Lens.load` on the directory. transformers and torch are the reference only."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backbones.weight_files import CheckpointError  # noqa: E402
from lens.blip import BlipCaptioner, is_blip_dir, load_weights  # noqa: E402
from lens.caption import Captioner  # noqa: E402

WORDS = ("a picture of cat dog bird red blue green on the with sitting table car two small big and in grass "
         "black white man woman street").split()
PROMPT = "a picture of"


def _randomize(model, seed=0):
    """Weights far from transformers' near-zero init, so the tokens, logits and argmax say something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.4 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    """(directory, transformers model, processor) of a tiny random BLIP captioner."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    d = tmp_path_factory.mktemp("blip")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "."]) + "\n")
    tok = BertTokenizer(vocab=str(d / "vocab.txt"), bos_token="[DEC]", additional_special_tokens=["[ENC]"])
    cfg = BlipConfig(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, bos_token_id=tok.bos_token_id,
                         sep_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id))
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(cfg).eval()
    _randomize(model)
    proc = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok)
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d, model, proc


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 56), (32, 32), (77, 45), (64, 64)]
    return [rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8) for i in range(n)]


def _pixels_nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_config_and_dispatch(blip):
    d, _, _ = blip
    assert is_blip_dir(d) and not is_blip_dir(d / "nothing")
    cap = Captioner.load(d)
    assert isinstance(cap, BlipCaptioner)
    assert cap.cfg.num_image_tokens == 17 and cap.cfg.tie_embeddings
    assert cap.prompt_ids[0] == cap.cfg.bos_id and len(cap.prompt_ids) == 4


def test_pixels_match_the_processor(blip):
    d, _, proc = blip
    cap = BlipCaptioner.load(d)
    images = _images(4)
    ref = proc(images=images, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(cap.prepare(images)["pixels"], ref, atol=1e-5)


def test_vision_tokens_and_decoder_logits_match(blip):
    d, model, proc = blip
    cap = BlipCaptioner.load(d)
    pixels = cap.prepare(_images(3))["pixels"]
    with torch.no_grad():
        ref_tokens = model.vision_model(pixel_values=_pixels_nchw(pixels)).last_hidden_state.numpy()
    ours = cap.image_tokens(pixels=pixels)
    assert ours.shape == (3, 17, 32)
    np.testing.assert_allclose(ours, ref_tokens, atol=1e-4)

    ids = proc.tokenizer(["a picture of two cats on the grass"] * 3, return_tensors="pt").input_ids
    ids[:, 0] = cap.cfg.bos_id  # the decoder reads [DEC] first, as BLIP's generate feeds it
    with torch.no_grad():
        ref = model(pixel_values=_pixels_nchw(pixels), input_ids=ids).logits.numpy()
    logits = cap.logits(ids.numpy(), pixels=pixels)
    assert logits.shape == ref.shape
    err = float(np.abs(logits - ref).max())
    assert err < 1e-4, err
    assert float(np.abs(ref).max()) > 1.0  # not a near-zero model


@pytest.mark.parametrize("prompt", [PROMPT, None])
def test_greedy_generate_is_identical(blip, prompt):
    d, model, proc = blip
    cap = BlipCaptioner.load(d, prompt=prompt, max_length=20, strip_prompt=False)
    images = _images(4, seed=1)
    pixels = cap.prepare(images)["pixels"]
    kw = {"input_ids": proc.tokenizer([prompt] * 4, return_tensors="pt").input_ids} if prompt else {}
    with torch.no_grad():
        ref = model.generate(pixel_values=_pixels_nchw(pixels), max_length=20, do_sample=False, num_beams=1,
                             **kw).numpy()
    ours = cap.greedy_ids(pixels=pixels)
    assert ours.shape == (4, 20)
    np.testing.assert_array_equal(ours[:, : ref.shape[1]], ref)
    assert (ours[:, ref.shape[1]:] == cap.cfg.pad_id).all()
    generated = ref[:, len(cap.prompt_ids):]
    assert len({tuple(r) for r in generated}) > 1 and (generated != cap.cfg.pad_id).sum() > 8  # varied captions
    texts = [proc.decode(r, skip_special_tokens=True) for r in ref]
    assert cap.caption(images) == texts
    cap.strip_prompt = True  # the words after the prompt, as BLIP's own generate returns them
    stripped = cap.caption(pixels=pixels)
    n = len(cap.prompt_ids)
    assert stripped == [proc.decode(r[n:], skip_special_tokens=True) for r in ref]


def test_captioner_methods_and_lens(blip):
    from lens import Lens

    d, _, _ = blip
    cap = Captioner.load(d)
    images = _images(2, seed=2)
    x = cap.prepare(images)
    greedy = cap.caption(**x)
    assert cap.caption(images) == greedy and all(isinstance(c, str) for c in greedy)
    beams = cap.caption(**x, beam=3)
    samples = cap.sample(**x, n=3, top_k=5, seed=0)
    assert len(beams) == 2 and len(samples) == 2 and all(1 <= len(s) <= 3 for s in samples)
    assert cap.sample(**x, n=3, top_k=5, seed=0) == samples

    class NoLLM:  # describe_images never asks the reader; BLIP detokenises with its own tokenizer
        decode = None

    assert isinstance(Lens.load(llm=NoLLM(), clip=None, captioner=str(d)).captioner, BlipCaptioner)
    lens = Lens.load(llm=NoLLM(), clip=None, captioner=cap, beam=3, num_captions=3, sample_top_k=5)
    assert lens.captioner is cap
    out = lens.describe_images(images)  # the same compiled beam and sampling as above
    assert out[0]["sources"]["captions"] == cap.label
    assert [o["captions"][0] for o in out] == beams
    assert all(set(o["captions"][1:]) <= set(s) for o, s in zip(out, samples))


def test_weights_are_checked_by_name_and_shape(blip):
    from flax import nnx

    from lens.blip import BlipModel, _read_weights

    d, _, _ = blip
    stored, _ = _read_weights(d)
    cfg = BlipCaptioner.load(d).cfg
    fresh = lambda: nnx.eval_shape(lambda: BlipModel(cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(CheckpointError, match="not use"):
        load_weights(fresh(), {**stored, "text_decoder.bert.pooler.dense.weight": np.zeros((32, 32), np.float32)})
    missing = {k: v for k, v in stored.items() if "crossattention.self.key.weight" not in k}
    with pytest.raises(CheckpointError, match="missing"):
        load_weights(fresh(), missing)
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(fresh(), {**stored, name: np.zeros((65, 32), np.float32)})
