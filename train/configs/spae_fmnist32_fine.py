"""SPAE on Fashion-MNIST at 32 px with a 16x16 latent grid: the spae_fmnist32_deep recipe with one
downsampling fewer (f = 2), six pyramid layers of 1, 2x2, 4x4, 8x8, 16x16 and 16x16 tokens (597 in
all), 4,000 steps of batch 8 (about 1.3 s a step on the idle 2-core CPU, 87 min).

    nice -n 10 python -m train.spae --config train/configs/spae_fmnist32_fine.py --workdir runs/spae_fmnist32_fine
    python -m eval.spae_eval --checkpoint runs/spae_fmnist32_fine/export --num 2000

Everything else is train/configs/spae_fmnist32_deep.py (semantic teacher and weight, usage entropy,
commitment, the learned 32-d search space, the 400-step ramp, width 32), with:
- model.ch_mult=(1, 2): one downsampling, so the latent grid is 16x16 and each full-resolution
  token stands for a 2x2 block of pixels (4x4 in spae_fmnist32_deep).
- model.strides=(16, 8, 4, 2, 1, 1): the pyramid the SPAE paper lays over a 16x16 grid.
- train.steps=4000.
At 500 steps this layout reached 20.5 dB at full depth, against 18.7 dB for
the 8x8 grid of spae_fmnist32_deep at the same step count (2,000 test images for both).
Shipped as spae/pretrained/fmnist32_fine (its eval.md, 2,000 test images): 13.1 / 15.9 / 17.1 /
18.7 / 22.6 / 23.8 dB at depths 1-6 (spae_fmnist32_deep: 21.6 dB at full depth), decoder on z
23.9 dB, top-layer hit rate 64.0%; two layers give the frozen LLM 69.5% / 44.2% at 2- / 5-way
1-shot.
500-step probes against this config's 20.5 dB / 59.4% (README): usage entropy on layers 1-4 only,
20.2 dB / 58.3% at 0.72 s a step; loss.commit=5, 19.8 dB / 57.8%; loss.l2=4, 21.2 dB / 53.6%;
loss.semantic=4, 21.5 dB / 58.0%; strides (16,8,4,2,1,1,1,1), 22.2 dB / 58.6% at 2.18 s a step.
Without the word losses this network's decoder on z reaches 35.6 dB at 500 steps; with commitment
alone the pyramid gives 19.4 dB, with commitment and usage entropy 22.2 dB (hit rate 0%).
"""

from train.configs.spae_fmnist32_deep import get_config as deep_config


def get_config():
    c = deep_config()
    c.model.update(ch_mult=(1, 2), strides=(16, 8, 4, 2, 1, 1))
    c.train.update(steps=4000, ckpt_every=100)
    return c
