"""The T5 / Flan-T5 reader (backbones/llm/t5.py) against transformers, on random tiny checkpoints.

Two checkpoints, each a seeded random `T5ForConditionalGeneration` (norm scales and position
biases randomised so that a wrong mapping shows) with an offline SentencePiece-style Unigram
tokenizer.json (T5's specials: <pad> 0, </s> 1, <unk> 2):
- Flan-T5 style: gated-gelu FFN, its own lm_head, no output scaling, 2 encoder / 3 decoder
  layers, one model.safetensors in the hub's layout (config tie_word_embeddings false, the stacks'
  copies of the shared table present);
- original T5: ReLU FFN, head tied to the shared table with the d_model**-0.5 scaling, saved by
  save_pretrained in shards (model.safetensors.index.json).
Both load through `load_llm(dir)`. The encoder output and the decoder logits match transformers'
(1e-4 of the logit range), `score` equals transformers' summed label log-probs, and greedy
`generate` gives transformers' `generate(do_sample=False)` ids. Damaged directories fail with a
ValueError saying what is wrong; `Lens.load(llm=dir)` reads with the T5 reader.
"""
import json
import shutil

import numpy as np
import pytest

from backbones import load_llm
from backbones.llm.t5 import T5Config, T5Reader, load_t5, relative_buckets
from backbones.weight_files import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = ("the a an cat dog bird car red blue green small big sat on in of is what this picture photo "
         "animal color question short answer tags attributes captions yes no grass street").split()
V = 96          # the model's vocabulary; the tokenizer's is smaller, as T5's 32128 > 32100
PROMPTS = ["Tags: cat, dog. Question: What is in this picture? Short Answer:",
           "what color is the small car on the street in this photo of a red car"]
CANDS = [" cat", "dog", " red car", "a big green bird on the grass", "yes"]


def _write_tokenizer(directory):
    """A Unigram tokenizer.json in T5's layout: whitespace split + metaspace, "$A </s>" post-processing."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -4.0)]
    pieces += [("\u2581" + w, -3.0) for w in WORDS]
    pieces += [(c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz:,.?!'"]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    for i, special in enumerate(("<pad>", "</s>", "<unk>")):
        assert tok.token_to_id(special) == i
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "pad_token": "<pad>"}))


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
            elif "relative_attention_bias" in name:
                p.copy_(2.0 * torch.randn(p.shape, generator=g))
    return model


def _build(directory, *, gated, seed):
    """A tiny random T5 (torch, eval mode) saved to `directory`; returns the torch model."""
    cfg = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                num_decoder_layers=3 if gated else 2, num_heads=4, dropout_rate=0.0,
                                feed_forward_proj="gated-gelu" if gated else "relu",
                                tie_word_embeddings=not gated, decoder_start_token_id=0)
    torch.manual_seed(seed)
    model = _randomise(transformers.T5ForConditionalGeneration(cfg), seed).eval()
    if gated:
        # transformers 5 ties lm_head to the shared table whatever the config says; Flan-T5's own
        # checkpoints have a separate head. Untie it, and write the file in the hub's layout.
        g = torch.Generator().manual_seed(seed + 1)
        model.lm_head.weight = torch.nn.Parameter(0.5 * torch.randn(V, 32, generator=g))
        assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
        model.save_pretrained(directory)
        from safetensors.torch import save_file

        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  str(directory / "model.safetensors"), metadata={"format": "pt"})
        c = json.loads((directory / "config.json").read_text())
        c["tie_word_embeddings"] = False
        c.pop("scale_decoder_outputs", None)
        (directory / "config.json").write_text(json.dumps(c))
    else:
        total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        model.save_pretrained(directory, max_shard_size=int(total * 0.45))
        assert (directory / "model.safetensors.index.json").is_file()
    _write_tokenizer(directory)
    return model


@pytest.fixture(scope="module", params=["flan", "t5"])
def ckpt(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param) / "ckpt"
    directory.mkdir()
    ref = _build(directory, gated=request.param == "flan", seed=3 if request.param == "flan" else 4)
    return request.param, directory, ref, load_llm(str(directory))


def _ref_logits(ref, enc_ids, dec_ids):
    with torch.no_grad():
        out = ref(input_ids=torch.tensor([enc_ids]), decoder_input_ids=torch.tensor([dec_ids]))
    return out.encoder_last_hidden_state[0].numpy(), out.logits[0].numpy()


def test_buckets_match_transformers():
    attn = transformers.models.t5.modeling_t5.T5Attention
    rel = np.arange(-300, 301)
    for bidirectional in (True, False):
        for n, dist in ((32, 128), (16, 20)):
            want = attn._relative_position_bucket(torch.tensor(rel), bidirectional, n, dist).numpy()
            np.testing.assert_array_equal(relative_buckets(rel, bidirectional, n, dist), want)


def test_loads_as_a_t5_reader(ckpt):
    kind, directory, ref, llm = ckpt
    assert isinstance(llm, T5Reader) and llm.weights == "fp32"
    c = llm.config
    assert (c.gated, c.tied_head, c.scale_output) == ((True, False, False) if kind == "flan" else (False, True, True))
    assert c.act == ("gelu_new" if kind == "flan" else "relu") and c.n_decoder_layers == ref.config.num_decoder_layers
    assert (c.pad_id, c.eos_id, c.decoder_start_id) == (0, 1, 0)
    ids = llm.encode("The cat sat")
    assert ids == [llm.tokenizer.token_to_id(p) for p in ("\u2581the", "\u2581cat", "\u2581sat")]
    assert llm.decode(ids) == "the cat sat" and llm.decode(ids + [1], skip_special=True) == "the cat sat"
    assert llm.embeddings.shape == (V, 32) and len(llm.token_strings) == V
    np.testing.assert_array_equal(llm.embeddings, ref.shared.weight.detach().numpy())
    assert "T5Reader(" in repr(llm)


def test_encoder_output_and_decoder_logits_match_transformers(ckpt):
    kind, _, ref, llm = ckpt
    errs = []
    for prompt, target in zip(PROMPTS, ["a red car on the street", "blue"]):
        enc_ids = llm.encode(prompt) + [1]
        tgt = llm.encode(target)
        want_enc, want = _ref_logits(ref, enc_ids, [0] + tgt)
        got_enc = llm.encoder_output(prompt)
        got = llm.logits(prompt, target)
        assert got_enc.shape == want_enc.shape and got.shape == want.shape == (len(tgt) + 1, V)
        np.testing.assert_allclose(got_enc, want_enc, atol=1e-4 * np.abs(want_enc).max())
        errs.append(np.abs(got - want).max() / (want.max() - want.min()))
        assert errs[-1] <= 1e-4, f"{kind}: max logit error {errs[-1]:.2e} of the range"
    # id prompts are taken as they are (a trailing </s> is not doubled)
    np.testing.assert_allclose(llm.logits(llm.encode(PROMPTS[0]) + [1]), llm.logits(PROMPTS[0]), atol=1e-6)
    print(f"{kind}: max decoder logit error {max(errs):.2e} of the logit range")


def test_score_is_transformers_summed_label_log_probs(ckpt):
    kind, _, ref, llm = ckpt
    prompt = PROMPTS[0]
    enc = torch.tensor([llm.encode(prompt) + [1]])
    want = []
    for cand in CANDS:
        labels = torch.tensor([llm.encode(cand) + [1]])
        with torch.no_grad():
            logits = ref(input_ids=enc, labels=labels).logits
        logp = torch.log_softmax(logits, -1)[0].gather(-1, labels[0][:, None])[:, 0]
        want.append(float(logp.sum()))
    got = llm.score(prompt, CANDS)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
    print(f"{kind}: score max |diff| {np.abs(np.array(got) - want).max():.2e} (scores {np.round(want, 2)})")
    # normalize divides by the target length (with </s>); eos=False leaves </s> out
    lens = [len(llm.encode(c)) + 1 for c in CANDS]
    np.testing.assert_allclose(llm.score(prompt, CANDS, normalize=True), np.array(want) / lens, atol=1e-5)
    no_eos = llm.score(prompt, [llm.encode(c) for c in CANDS], eos=False)
    assert all(a > b for a, b in zip(no_eos, got))
    with pytest.raises(ValueError, match="at least one candidate"):
        llm.score(prompt, [])


def test_greedy_generate_matches_transformers(ckpt):
    kind, _, ref, llm = ckpt
    n = 20
    ids = [llm.encode(p) + [1] for p in PROMPTS]
    T = max(map(len, ids))
    batch = torch.tensor([i + [0] * (T - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids])
    with torch.no_grad():
        out = ref.generate(input_ids=batch, attention_mask=mask, max_new_tokens=n, do_sample=False, num_beams=1,
                           use_cache=False)   # its cache assumes as many decoder layers as encoder ones
    want = []
    for row in out[:, 1:].tolist():                       # drop the decoder start token
        want.append(row[:row.index(1)] if 1 in row else row)
    got = llm.generate_ids(PROMPTS, n)
    assert got == want, f"{kind}: {got} != {want}"
    assert any(len(r) >= 17 for r in got)                 # beyond the decoder's 16 exact-distance buckets
    assert llm.generate(PROMPTS, max_new_tokens=3, chat=True) == [llm.decode(w[:3], skip_special=True) for w in want]
    with pytest.raises(ValueError, match="greedily"):
        llm.generate(PROMPTS[0], temperature=0.7)


def test_damaged_or_missing_directories_fail_saying_what_is_wrong(ckpt, tmp_path):
    kind, directory, _, _ = ckpt
    if kind != "flan":
        pytest.skip("one checkpoint is enough")
    with pytest.raises(ValueError, match="is not a directory"):
        load_t5(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither a named model"):
        load_llm(str(tmp_path / "nowhere"))

    def copy(name):
        d = tmp_path / name
        shutil.copytree(directory, d)
        return d

    d = copy("no_tok")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="has no tokenizer.json"):
        load_llm(str(d))
    d = copy("no_weights")
    (d / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        load_llm(str(d))
    d = copy("cut")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_llm(str(d))
    d = copy("untied_no_head")
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(d / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="no lm_head.weight"):
        load_llm(str(d))
    d = copy("bad_ffn")
    c = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(dict(c, feed_forward_proj="gated-tanhshrink")))
    with pytest.raises(ValueError, match="not supported"):
        load_llm(str(d))
    with pytest.raises(ValueError, match="mesh"):
        load_t5(directory, mesh=object())
    with pytest.raises(ValueError, match="'fp32' or 'bf16'"):
        load_llm(str(directory), weights="int8")


def test_config_defaults_of_original_t5_and_flan_configs():
    base = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
    t5 = T5Config.from_hf_config(dict(base, feed_forward_proj="relu"), has_lm_head=False)
    assert t5.tied_head and t5.scale_output and not t5.gated and t5.n_decoder_layers == 6
    flan = T5Config.from_hf_config(dict(base, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                        num_decoder_layers=4), has_lm_head=True)
    assert not flan.tied_head and not flan.scale_output and flan.gated and flan.act == "gelu_new"
    assert flan.n_decoder_layers == 4


def test_lens_loads_a_t5_reader(ckpt):
    kind, directory, _, llm = ckpt
    if kind != "flan":
        pytest.skip("one checkpoint is enough")
    from lens import Lens

    lens = Lens.load(llm=str(directory), clip=None, captioner="none")
    assert isinstance(lens.llm, T5Reader) and lens.llm.name == str(directory)
    lens.llm = llm                      # the same weights, already compiled by the tests above
    out = {"tags": ["cat", "dog"], "tag_scores": [0.6, 0.3], "attributes": ["small"],
           "captions": ["A cat on the grass."]}
    [answer] = lens.answer([PROMPTS[0]], [out])
    assert answer in {"cat", "dog", "small", "yes", "no"} | {str(i) for i in range(10)}
    lens.answer_mode = "generate"
    assert all(isinstance(a, str) for a in lens.answer(PROMPTS))
    text = lens.llm.generate(PROMPTS[0], max_new_tokens=lens.answer_tokens)     # one prompt: one str
    assert text == lens.llm.decode(lens.llm.generate_ids([PROMPTS[0]], lens.answer_tokens)[0], skip_special=True)
    # The shipped captioner writes SmolLM2 ids: it must not detokenise them with T5's tokenizer.
    with_captions = Lens.load(llm=llm, clip=None)
    assert with_captions.captioner is not None and with_captions.captioner._decode is None
