"""LENS captioner for real pictures on frozen EfficientNet-Lite0 features (the shipped `lens/pretrained/captioner_real`).

    nice -n 10 python -m train.captioner --config train/configs/captioner_real.py --workdir runs/captioner_real
    python -m eval.captioning --captioner runs/captioner_real/export --dataset fluent-flat --baselines

Image side: EfficientNet-Lite0's pooled 1,280-d features (frozen, computed once per picture at its
224 px input and cached in WORKDIR/features) through a LayerNorm and one Linear to 8 memory tokens,
one encoder layer; a 2-layer cross-attention decoder of width 192 writes SmolLM2 tokens through a
compact vocabulary. Pairs: emoji concepts of the training split in the Noto and Twemoji styles
(every caption phrase of the concept), Tux Paint training stamps on white and on photo crops (their
caption and name), and 3,000 synthetic scenes. Validation: the emoji "test" concepts (never trained
on). Never seen: Fluent emoji, the held-out emoji concepts, the Tux Paint test stamps.
"""
from train.configs.captioner import get_config as base


def get_config():
    c = base()
    c.data.update(source="real", num_train=3000, num_val=64, batch_size=48)
    c.model.update(encoder="features", width=192, heads=4, encoder_layers=1, decoder_layers=2, max_len=24)
    c.optim.update(lr=1e-3, warmup=200, weight_decay=0.05, label_smoothing=0.1)
    c.train.update(steps=3000, log_every=100, ckpt_every=500)
    return c
