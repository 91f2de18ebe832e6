"""The default contrastive model: LiT on the frozen ImageNet EfficientNet-Lite0 (shipped as backbones/clip/lit/).

    python -m train.lit --config train/configs/contrastive_lit.py --workdir runs/lit
    python -m eval.zeroshot --models runs/lit/export --json runs/lit/zeroshot.json

Image tower: EfficientNet-Lite0's pooled 1,280-d features (frozen, computed once per image) through
a trained Linear. Text tower: 3 causal layers of width 256 over SmolLM2's frozen token table.
Batch of 320: 128 emoji (Noto, Twemoji; train concepts), 32 Tux Paint stamps (on white and on photo
crops), 32 Fashion-MNIST prompts, 32 scene captions, 96 ImageNet classifier rows named by class
names and WordNet hypernyms. Fluent emoji, the held-out emoji concepts and the test splits are never
trained on. Class names are written in each source's few fixed templates (data.templates="fixed");
train/configs/contrastive_lit_templates.py draws them from many (train/lit_templates.py).

train.lit checks every --config file against this file's fields: a variant (a copy of this file, or
one that calls its get_config) may change them but not add any, so a misspelt field is an error
naming the nearest one.
"""
from train.trainlib import Config


def get_config():
    return Config(
        seed=0,
        loss="clip",
        data=Config(
            context_length=24,
            templates="fixed",             # or "many": train/lit_templates.py
            batch=Config(emoji=128, tuxpaint=32, tuxpaint_categories=0, fmnist=32, scenes=32, imagenet=96),
            emoji=Config(styles=("google", "twitter"), size=64),
            tuxpaint=Config(backgrounds=("white", "photos"), size=96),
            fmnist=Config(limit=6000, size=32, aliases=True),
            scenes=Config(limit=3000, size=64),
        ),
        model=Config(
            llm="smollm2-135m", backbone="efficientnet-lite0", feature_dim=1280,
            text_width=256, text_layers=3, text_heads=4, mlp_ratio=4, embed_dim=256, act="gelu",
        ),
        optim=Config(lr=1e-3, warmup=100, final_lr_frac=0.05, weight_decay=0.05, clip=1.0),
        train=Config(steps=2000, log_every=50, ckpt_every=250),
    )
