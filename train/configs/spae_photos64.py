"""SPAE on real images at 64x64 RGB with the SmolLM2 vocabulary: the default tokenizer `photos64`.

    nice -n 10 python -m train.spae --config train/configs/spae_photos64.py --workdir runs/spae_photos64
    python -m eval.spae_eval --checkpoint runs/spae_photos64/export --out docs/results/spae_photos64

Data (`visiondata.photo_mix`): random crops of the Debian wallpapers' train split, the Tux Paint
photo cut-outs of the train split (on white and on photo crops) and Noto/Twemoji emoji of the
train concepts; the scikit photos, the test wallpapers and the Tux Paint test photos are never seen.

Pyramid strides (8, 4, 2, 1, 1, 1, 1) on an 8x8 latent grid: 1 + 4 + 16 + 4 x 64 = 277 tokens, so
every depth costs at most 277 x log2(21,163) = 3,980 bits = 0.97 bits per pixel (4,096 pixels);
depth 4 (85 tokens) is 0.30 bpp.

Semantic teacher: the ImageNet classifier (loss.relevance="imagenet"): its class probabilities
spread onto the vocabulary words of the class names and their nearest hypernyms. Measured on the
21 scikit photos before training, its top words name what is there (coffee: coffee beverage;
chelsea: cat domestic feline; motorcycle: motorcycle motor vehicle), while the LiT model's
relevance over the 21k single words is close to noise (coffee: crow scale syringe): LiT was
trained on names and captions, not single sub-words. loss.relevance="clip" still selects it.
Perceptual loss on the frozen EfficientNet-Lite0's stage features (loss.perceptual_net="effnet").
"""

from train.configs.spae_base import base_config


def get_config():
    c = base_config()
    c.data.update(name="photos", image_size=64, channels=3, prep="resize", num_train=16000,
                  num_test=None, batch_size=16)
    c.model.update(ch=32, ch_mult=(1, 2, 2, 2), strides=(8, 4, 2, 1, 1, 1, 1), code_dim=32)
    c.loss.update(commit=50.0, semantic=4.0, semantic_layers=(1,), semantic_temp=1.0,
                  semantic_negatives=True, semantic_warmup=50, relevance="imagenet", semantic_k=16,
                  entropy=1.0, quantize_ramp=300, perceptual=0.2, perceptual_net="effnet",
                  l1=0.5, decode_layers=(4, 7), random_prefix=True, entropy_positions=16)
    c.optim.update(lr=2e-3, warmup=100)
    c.train.update(steps=1200, log_every=25, ckpt_every=100)
    return c
