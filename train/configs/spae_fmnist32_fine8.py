"""SPAE on Fashion-MNIST at 32 px, 16x16 latent grid, eight pyramid layers: the spae_fmnist32_fine
recipe with two more full-resolution layers, half the semantic weight and the cheaper entropy term,
5,500 steps of batch 8 (0.96 s a step on the idle 2-core CPU; the shipped run took 92 min).

    nice -n 10 python -m train.spae --config train/configs/spae_fmnist32_fine8.py --workdir runs/spae_fmnist32_fine8
    python -m eval.spae_eval --checkpoint runs/spae_fmnist32_fine8/export --num 2000

Changes against train/configs/spae_fmnist32_fine.py:
- model.strides=(16, 8, 4, 2, 1, 1, 1, 1): layers of 1, 2x2, 4x4, 8x8 and four 16x16 tokens,
  1,109 in all. That is more tokens than the image has pixels (1,024); the pyramid is judged by
  its PSNR per depth, and the first two layers (5 tokens) are what the frozen LLM reads.
- loss.semantic=4.0 (8 in spae_fmnist32_fine).
- loss.entropy_positions=64: the usage-entropy term sees a quarter of each 16x16 layer's
  positions, on a stride-2 grid at a random offset per step (spae.losses.subsample_positions).
- loss.decode_layers=(2, 4, 6, 8): only every other pyramid prefix is decoded in training; the
  odd depths are still evaluated.
- train.steps=5500.
500-step probes (2,000 test images; README): the six-layer config scores 20.5 dB at full depth,
hit rate 59.4%, 1.32 s a step; with loss.semantic=4 and loss.entropy_positions=64 21.4 dB, 57.8%,
0.91 s (with loss.semantic=4 alone 21.5 dB, 58.0%, 1.31 s); eight layers as here 22.65 dB,
60.5%, 0.99 s (eight layers at weight 8 with every prefix and the whole entropy term: 22.2 dB,
58.6%, 2.18 s).
Shipped as spae/pretrained/fmnist32_fine8 (its eval.md, 2,000 test images): 11.0 / 16.1 / 15.5 /
18.9 / 22.3 / 23.9 / 24.6 / 24.9 dB at depths 1-8 (spae_fmnist32_fine: 23.8 dB at its full depth
6), decoder on z 25.5 dB, top-layer hit rate 65.0%; the undecoded odd depths 1 and 3 draw less
than in spae_fmnist32_fine. Two layers give the frozen LLM 66.0% / 45.5% at 2- / 5-way 1-shot.
"""

from train.configs.spae_fmnist32_fine import get_config as fine_config


def get_config():
    c = fine_config()
    c.model.update(strides=(16, 8, 4, 2, 1, 1, 1, 1))
    c.loss.update(semantic=4.0, entropy_positions=64, decode_layers=(2, 4, 6, 8))
    c.train.update(steps=5500)
    return c
