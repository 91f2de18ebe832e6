"""SPAE on the synthetic scenes at 32 px (colour and shape words), real SmolLM2 vocabulary (CPU).

    nice -n 10 python -m train.spae --config train/configs/spae_scenes32.py --workdir runs/spae_scenes32
    python -m eval.spae_eval --checkpoint runs/spae_scenes32/export

The Fashion-MNIST network (16 channels, two downsamplings to an 8x8 latent grid, pyramid strides
(8, 4, 2, 1): 1 + 4 + 16 + 64 = 85 tokens per image) on 3-channel scenes, 4,800 training scenes
seen once (600 steps of 8). Semantic loss on layers 1-2 toward the offline contrastive model's
relevance over the whole codebook (its text tower was trained on scene captions, so colour and
shape words score).
Foreground weighting (`loss.foreground=10`): pixels off the image's median colour weigh 11x in the
pixel loss. Without it every scenes run (spae_scenes64.py and the variants its docstring lists) settled on drawing
the background only and its code usage collapsed; with it the codes carry the objects' colours
and places (blurred shapes) and usage holds.
"""

from train.configs.spae_scenes64 import get_config as scenes64


def get_config():
    c = scenes64()
    c.data.update(image_size=32)
    c.model.update(ch_mult=(1, 2, 2))
    # The 32 px checkpoint predates the 64 px recipe (code space, ramp, entropy term, semantic
    # weight 4 on layer 1): these keep its command reproducing spae/pretrained/scenes32.
    c.model.update(code_dim=0)
    c.loss.update(foreground=10.0, entropy=0.0, quantize_ramp=0, semantic=0.5, semantic_layers=(1, 2))
    return c
