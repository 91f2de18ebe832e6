"""SPAE: semantic pyramid autoencoder over a frozen LLM's vocabulary.

    from spae import saq_quantize, load_tokenizer
    ids, zhat = saq_quantize(z, codebook, strides)
    tok = load_tokenizer()            # the repo's default trained tokenizer (offline)
"""

from spae.quantizer import saq_quantize, saq_quantize_aux, nearest_code, embed_pyramid

__all__ = ["saq_quantize", "saq_quantize_aux", "nearest_code", "embed_pyramid", "load_tokenizer"]


def load_tokenizer(checkpoint_dir=None, llm=None, semantic_backbone=None):
    """Load a trained SPAE tokenizer by shipped name or checkpoint directory (default: the shipped
    real-image one; `spae.tokenizer.load_tokenizer` says more).

    llm: an already loaded frozen LLM to take the embedding table from (else loaded by name).
    semantic_backbone: an already loaded backbone for a tokenizer whose top layers read one."""
    from spae.tokenizer import load_tokenizer as _load

    return _load(checkpoint_dir, llm=llm, semantic_backbone=semantic_backbone)
