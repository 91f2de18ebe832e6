"""LENS captioner on 64 px synthetic scenes (the shipped `lens/pretrained/captioner`).

    nice -n 10 python -m train.captioner --config train/configs/captioner.py --workdir runs/captioner
    python -m eval.captioning --captioner runs/captioner/export

A CNN (3 stride-2 stages -> 8x8 image tokens) + 1 encoder layer + 2-layer cross-attention
decoder, width 128 (0.84 M parameters); 3,000 steps took 42 min (2,521 s) on a 2-core CPU shared
with other jobs (load average 6-11) and reach CIDEr 2.93 / BLEU-4 0.999 on 500 test scenes.
The decoder's classes are a compact vocabulary of the SmolLM2 token ids seen in the training
captions. (The shipped weights were initialised eagerly with the threefry PRNG; `init_model` now
uses one jitted "rbg" init, so a rerun starts from a different init (its scores not re-measured).) Variants override fields: `captioner_tiny.py` (tests), `captioner_coco.py` (COCO
caption JSON), `captioner_real.py` (real pictures on frozen EfficientNet-Lite features); `--set a.b=value` overrides one field.
"""
from train.trainlib import Config


def get_config():
    return Config(
        seed=0,
        data=Config(
            source="scenes",          # "scenes", "coco" or "real" (emoji, Tux Paint, scenes; encoder=features)
            image_size=64,
            num_train=20_000,         # scenes: images of split "train" (6 captions each)
            num_val=64,               # scenes: images of split "test" for the val loss (all captions)
            background="plain",       # scenes background: plain | photo | mixed
            coco_json="",             # coco: caption annotations (visiondata.formats.read_coco_captions)
            coco_image_dir="",        # coco: the images those annotations name
            coco_val_frac=0.02,
            batch_size=32,
            parts=("emoji", "tuxpaint", "scenes"),   # real: the sources of pairs (train.captioner.real_pairs)
            emoji_styles=("google", "twitter"),       # real: emoji styles trained on (Fluent stays unseen)
            emoji_size=64,
            tuxpaint_backgrounds=("white", "photos"),
            tuxpaint_size=96,
        ),
        vocab=Config(llm="smollm2-135m", min_count=1, max_size=4096),
        model=Config(channels=(16, 32, 64), width=128, heads=4, encoder_layers=1, decoder_layers=2,
                     mlp_ratio=4, max_len=24,
                     encoder="cnn",                   # "cnn" on pixels, or "features" of a frozen backbone
                     backbone="efficientnet-lite0", feature_dim=1280, feature_tokens=8),
        optim=Config(lr=1.5e-3, warmup=200, final_lr_frac=0.05, weight_decay=0.01, clip=1.0, label_smoothing=0.0),
        train=Config(steps=3000, log_every=100, ckpt_every=500, num_devices=None),
    )
