"""SPAE on real images at 128x128 RGB with the SmolLM2 vocabulary (for an accelerator or a long CPU run).

    python -m train.spae --config train/configs/spae_photos128.py --workdir runs/spae_photos128

The photos64 recipe (train/configs/spae_photos64.py: same data mix, ImageNet teacher, backbone
perceptual loss) on a 16x16 latent grid. Pyramid strides (16, 8, 4, 2, 1, 1): 1 + 4 + 16 + 64 +
256 + 256 = 597 tokens = 597 x log2(21,163) / 16,384 = 0.52 bits per pixel at full depth.
Not trained in the repo: on the 2-core CPU a step costs about four times photos64's (four times
the pixels), so its 1,200 steps would take about five hours; `python -m eval.bench_spae --config
train/configs/spae_photos128.py` measures its step. For the Gemma 3 vocabulary (262,144 words) at
128 px see train/configs/spae_imagenet128_gemma.py.
"""

from train.configs.spae_photos64 import get_config as photos64


def get_config():
    c = photos64()
    c.data.update(image_size=128, num_train=40000, batch_size=16)
    c.model.update(ch=32, ch_mult=(1, 2, 2, 2), strides=(16, 8, 4, 2, 1, 1))
    c.loss.update(decode_layers=(4, 6))
    c.train.update(steps=4000)
    return c
