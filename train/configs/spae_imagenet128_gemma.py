"""SPAE at ImageNet scale: 128 px RGB, Gemma 3 270M vocabulary (262,144 tokens x 640), accelerators.

Shape-checked on CPU with jax.eval_shape (tests/test_spae_train.py). On a GPU/TPU host with an
ImageNet-style class-folder dataset wired into spae/data.py:
    python -m train.spae --config train/configs/spae_imagenet128_gemma.py --workdir runs/spae_in128
16x16 latent grid, strides (16, 8, 4, 2, 1, 1) as in the SPAE paper; bf16 convolutions.
"""

from train.configs.spae_base import base_config


def get_config():
    c = base_config()
    c.data.update(name="imagenet", image_size=128, channels=3, prep="resize", batch_size=256)
    c.vocab.update(llm="gemma3-270m", mode="alpha", min_len=2)
    c.model.update(ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, strides=(16, 8, 4, 2, 1, 1),
                   chunk_size=16384, dtype="bfloat16")
    c.loss.update(perceptual=0.1, gan=0.1, gan_start=20000, disc_ch=64, lecam=0.001,
                  semantic=1.0, semantic_layers=(1, 2, 3), semantic_k=64)
    c.optim.update(lr=1e-4, warmup=5000)
    c.train.update(steps=500000, log_every=100, ckpt_every=5000, ema_decay=0.999)
    return c
