"""Fourth stage of the fmnist32_fine8 chain: spae/pretrained/fmnist32_fine8_dec2 with four more
full-resolution layers appended to its pyramid (12 layers, 2,133 tokens), its decoder trained alone
on them.

    nice -n 10 python -m train.spae --config train/configs/spae_fmnist32_fine8_L12.py --workdir runs/spae_fmnist32_fine8_L12
    python -m eval.spae_eval --checkpoint runs/spae_fmnist32_fine8_L12/export --num 2000

SAQ picks each layer's words given only the layers above it, so the first eight layers keep exactly
the tokens fmnist32_fine8 gives every image (hit rate and few-shot figures unchanged); the appended
layers take the running average closer to the encoder's latent z. The encoder is fixed
(train.trainable="decoder"); the decoder starts from fmnist32_fine8_dec2's at a lower rate (it has
converged on eight layers: README, the 500-step probes) and learns the deeper prefixes.
"""

from train.configs.spae_fmnist32_fine8_dec2 import get_config as dec2_config


def get_config():
    c = dec2_config()
    c.model.update(strides=(16, 8, 4, 2) + (1,) * 8)
    c.loss.update(decode_layers=(12,))
    c.optim.update(lr=5e-4, warmup=50, final_lr_frac=0.01)
    c.train.update(init_from="spae/pretrained/fmnist32_fine8_dec2", steps=2000)
    return c
