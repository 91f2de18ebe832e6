"""SPAE on real images at 64x64 with a 16x16 finest grid: photos64-words' top words over a pixel path
that keeps the detail (`spae.model` with model.patch=4, f = 4).

    nice -n 10 python -m train.spae --config train/configs/spae_photos64_fine.py --workdir runs/spae_photos64_fine
    python -m eval.spae_eval --checkpoint runs/spae_photos64_fine/export --out docs/results/spae_photos64_fine

Pyramid strides (16, 8, 4, 1) on the 16x16 latent grid: 1 + 4 + 16 + 256 = 277 tokens, at most
277 x log2(21,163) = 3,980 bits = 0.97 bits per pixel (4,096 pixels); depth 3 (21 tokens) is 0.07 bpp.
The top two layers (1 + 4 words) are photos64-words' semantic path (the frozen EfficientNet-Lite0's
class logits through the teacher's word matrix), so the words are photos64-words' words.

The pixel path folds each 4x4 block of pixels into 48 channels (space-to-depth) and works at 16x16
only, with 128 channels: the same FLOPs as 32-channel convolutions at 64x64, run as matmuls wide
enough to keep a CPU busy. Same data as photos64 (16,000 images of visiondata.photo_mix).

Shipped as spae/pretrained/photos64-fine (3,600 steps, about 70 CPU minutes; the first 2,500 under a
4,500-step schedule, see its registry note): 22.1 dB, SSIM 0.70, perceptual 0.61 at 0.97 bpp on the
189 held-out images (photos64: 21.0 / 0.61 / 0.80; JPEG at the same bytes 31.2 / 0.82 / 0.39).

Probes (same seed, so the same batches; PSNR of the training batch at full depth, live model):
- commit on every layer (the 4x4-average layer too) against the full pyramid only: no difference
  over 325 steps (20.6 / 21.4 dB at step 325); the full pyramid only is kept, as it has no pull
  toward the coarse layer's blocks.
- code_dim 8 against 32: 18.5 / 20.2 dB at step 125, 17.5 / 18.4 at 150.
- commit 1 against 50: better while the decoder still sees z (quantize_ramp), worse after it
  (16.1 / 19.6 dB at step 200, 18.6 / 20.1 at 250); code_dim 8 with commit 1: 18.7 / 19.6 at 200.
- The continuous decode (decoder on z itself, skipping SAQ) of the live model at step 1,100 is within
  0.5 dB of the quantized one on the held-out photos (18.6 / 18.1 dB): the pixel path is still learning.
"""

from train.configs.spae_photos64_words import get_config as words_config


def get_config():
    c = words_config()
    c.model.update(patch=4, ch=128, ch_mult=(1,), num_res_blocks=3, strides=(16, 8, 4, 1), code_dim=32)
    c.loss.update(decode_layers=(4,), random_prefix=True, prefix_weight=0.25, quantize_ramp=200,
                  l2=1.0, l1=0.5, perceptual=0.2, perceptual_net="effnet", commit=50.0, commit_layers="last", entropy=1.0,
                  entropy_positions=64)
    c.optim.update(lr=1e-3, warmup=100)
    c.train.update(steps=3600, init_from=None, log_every=25, ckpt_every=100, ema_decay=0.999)
    return c
