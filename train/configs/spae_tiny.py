"""SPAE tiny: every loss switched on, random codebook, 256 Fashion-MNIST images at 16 px.

For tests (shapes, gradients, sharding, resume); not a model to use.
    python -m train.spae --config train/configs/spae_tiny.py --workdir /tmp/spae_tiny
"""

from train.configs.spae_base import base_config


def get_config():
    c = base_config()
    c.data.update(image_size=16, num_train=256, num_test=64, batch_size=8, prep="resize")
    c.vocab.update(source="random", random_size=512, random_dim=32)
    c.model.update(ch=8, ch_mult=(1, 2, 2), strides=(4, 2, 1, 1), chunk_size=128)
    c.loss.update(perceptual=0.1, gan=0.1, gan_start=0, disc_ch=8, lecam=0.01,
                  semantic=0.1, semantic_layers=(1, 2), semantic_k=8, relevance="random",
                  semantic_warmup=2)
    c.optim.update(warmup=2)
    c.train.update(steps=6, log_every=2, ckpt_every=3, eval_batches=1)
    return c
