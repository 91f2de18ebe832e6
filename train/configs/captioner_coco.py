"""Captioner on a COCO caption JSON the user brings (nothing is downloaded).

    python -m train.captioner --config train/configs/captioner_coco.py --workdir runs/cap_coco \
        --set data.coco_json=/data/coco/annotations/captions_train2017.json \
        --set data.coco_image_dir=/data/coco/train2017

Images are centre-cropped and resized to data.image_size; the output vocabulary keeps the
SmolLM2 token ids seen at least vocab.min_count times (rarer ones become <unk>).
"""
from train.configs.captioner import get_config as base


def get_config():
    c = base()
    c.data.update(source="coco", image_size=128, batch_size=128)
    c.vocab.update(min_count=5, max_size=8192)
    c.model.update(channels=(32, 64, 128, 256), width=384, heads=6, encoder_layers=2, decoder_layers=6, max_len=32)
    c.optim.update(lr=5e-4, warmup=2000, label_smoothing=0.1)
    c.train.update(steps=100_000, log_every=200, ckpt_every=2000)
    return c
