"""SPAE on the synthetic scenes at 64 px (colour + shape words), real SmolLM2 vocabulary (CPU).

    nice -n 10 python -m train.spae --config train/configs/spae_scenes64.py --workdir runs/spae_scenes64
"""

from train.configs.spae_base import base_config


def get_config():
    c = base_config()
    c.data.update(name="scenes", image_size=64, channels=3, prep="resize", num_train=10000,
                  num_test=1000, batch_size=16)
    c.model.update(ch=32, ch_mult=(1, 2, 2, 2), strides=(8, 4, 2, 1, 1))
    c.loss.update(semantic=0.1, semantic_layers=(1, 2), semantic_warmup=200)
    c.train.update(steps=1500, log_every=25, ckpt_every=250)
    return c
