"""SPAE: semantic pyramid autoencoder over a frozen LLM's vocabulary.

    from spae import saq_quantize, load_tokenizer
    ids, zhat = saq_quantize(z, codebook, strides)
    tok = load_tokenizer()            # the repo's default trained tokenizer (offline)
"""

from spae.quantizer import saq_quantize, saq_quantize_aux, nearest_code, embed_pyramid

__all__ = ["saq_quantize", "saq_quantize_aux", "nearest_code", "embed_pyramid", "load_tokenizer"]


def load_tokenizer(checkpoint_dir=None, llm=None):
    """Load a trained SPAE tokenizer (default: the small Fashion-MNIST one shipped in the repo).

    llm: an already loaded frozen LLM to take the embedding table from (else loaded by name)."""
    from spae.tokenizer import load_tokenizer as _load

    return _load(checkpoint_dir, llm=llm)
