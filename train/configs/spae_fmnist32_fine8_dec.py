"""Second stage of spae/pretrained/fmnist32_fine8: its decoder trained alone under its fixed encoder.

    nice -n 10 python -m train.spae --config train/configs/spae_fmnist32_fine8_dec.py --workdir runs/spae_fmnist32_fine8_dec
    python -m eval.spae_eval --checkpoint runs/spae_fmnist32_fine8_dec/export --num 2000

The encoder and the learned projection of the word table are loaded from the shipped checkpoint
and never move (train.trainable="decoder"), so every image gets exactly the tokens it got from
fmnist32_fine8: the top-layer hit rate and the few-shot figures carry over unchanged, and only
the pictures change. The word losses (commitment, usage entropy, semantic) reach only the
encoder, so this stage skips them; it decodes the full pyramid and, per image, one shorter prefix
of uniformly drawn depth (loss.random_prefix), so every depth is trained, the odd ones too
(the first stage decoded only depths 2, 4, 6, 8).
"""

from train.configs.spae_fmnist32_fine8 import get_config as fine8_config


def get_config():
    c = fine8_config()
    c.loss.update(decode_layers=(8,), random_prefix=True, quantize_ramp=0)
    c.train.update(init_from="spae/pretrained/fmnist32_fine8", trainable="decoder", steps=2500, ckpt_every=100)
    return c
