"""The repo's offline contrastive model (the shipped `backbones/clip/offline/`; a stand-in for CLIP).

    nice -n 10 python -m train.contrastive --config train/configs/contrastive_offline.py --workdir runs/contrastive
    nice -n 10 python -m train.contrastive --config train/configs/contrastive_offline.py --workdir runs/contrastive \
        --set train.steps=1600     # the shipped weights: the same run resumed at 1200 and extended to 1600
    python -m eval.contrastive --clip runs/contrastive/export

Trains on synthetic-scene captions (split "train") and Fashion-MNIST class prompts (8 templates)
at 32 px: a ViT image tower (4 px patches, 3 layers, width 64) and a causal text tower (2 layers,
width 64) whose input is the frozen SmolLM2 token-embedding table (576 wide, never trained, not
stored: read from the LLM at load time) through a trained Linear. Measured (shared 2-core CPU,
38.4 + 9.5 min): after 1200 steps FMNIST zero-shot 83.9%, scenes test i2t R@1 52.1%; after 1600
steps 85.1% and 51.3% (held-out compositions 53.1%).
Variants override fields: `--set loss=siglip`, `--set model.lock_text=True` (LiT-style: the whole
text tower stays locked at its initial state, frozen LLM embeddings through fixed random layers, and
only the image side and the logit scale learn; untested for accuracy).

train.contrastive checks every --config file against this file's fields: a variant (a copy of this file, or
one that calls its get_config) may change them but not add any, so a misspelt field is an error
naming the nearest one.
"""
from train.trainlib import Config


def get_config():
    return Config(
        seed=0,
        loss="clip",                      # "clip" (softmax) or "siglip" (sigmoid, learned bias)
        data=Config(
            image_size=32,
            num_scenes=20_000,            # training scenes (6 captions each)
            scene_batch=96,               # per step: this many scenes ...
            fmnist_batch=96,              # ... and this many Fashion-MNIST images
            fmnist_limit=0,               # >0: only the first N training images (tests)
            fmnist_names="class",         # "aliases": prompts also say "pants", "sweater", "shoe", ...
            context_length=32,            # LLM tokens per text (scene captions need <= 24)
        ),
        model=Config(
            llm="smollm2-135m",           # whose tokenizer and frozen token table feed the text tower
            patch_size=4, vision_width=64, vision_layers=3, vision_heads=2,
            text_width=64, text_layers=2, text_heads=2, mlp_ratio=4, embed_dim=64, act="quick_gelu",
            lock_text=False,
        ),
        optim=Config(lr=2e-3, warmup=100, final_lr_frac=0.05, weight_decay=0.05, clip=1.0),
        train=Config(steps=1200, log_every=50, ckpt_every=200, eval_every=400, eval_scenes=500,
                     eval_fmnist=2000, num_devices=None),
    )
