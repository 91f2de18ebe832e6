"""Tiny captioner for tests (shapes, sharding, resume); not a model to use.

    python -m train.captioner --config train/configs/captioner_tiny.py --workdir /tmp/cap_tiny
"""
from train.configs.captioner import get_config as base


def get_config():
    c = base()
    c.data.update(image_size=32, num_train=64, num_val=16, batch_size=8)
    c.model.update(channels=(8, 16), width=32, heads=2, decoder_layers=1)
    c.optim.update(warmup=2)
    c.train.update(steps=6, log_every=2, ckpt_every=3)
    return c
