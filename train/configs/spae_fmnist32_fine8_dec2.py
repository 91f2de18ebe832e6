"""Third stage of the fmnist32_fine8 chain: spae/pretrained/fmnist32_fine8_dec's decoder trained
7,000 more steps alone under the same fixed encoder (the recipe of spae_fmnist32_fine8_dec,
restarted from its checkpoint with a fresh warmup and cosine schedule).

    nice -n 10 python -m train.spae --config train/configs/spae_fmnist32_fine8_dec2.py --workdir runs/spae_fmnist32_fine8_dec2
    python -m eval.spae_eval --checkpoint runs/spae_fmnist32_fine8_dec2/export --num 2000

As in spae_fmnist32_fine8_dec, the encoder and the projection of the word table never move, so
every image keeps the tokens fmnist32_fine8 gives it (hit rate and few-shot figures unchanged);
7,000 steps of batch 8 is about one pass over the 60,000 training images.
"""

from train.configs.spae_fmnist32_fine8_dec import get_config as dec_config


def get_config():
    c = dec_config()
    c.train.update(init_from="spae/pretrained/fmnist32_fine8_dec", steps=7000)
    return c
