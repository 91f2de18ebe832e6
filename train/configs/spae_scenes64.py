"""SPAE on the synthetic scenes at 64 px (colour and shape words), real SmolLM2 vocabulary (CPU).

    nice -n 10 python -m train.spae --config train/configs/spae_scenes64.py --workdir runs/spae_scenes64_ent1
    python -m eval.spae_eval --checkpoint runs/spae_scenes64_ent1/export --num 1000

Sized for the 2-core CPU (well under an hour): 4,800 training scenes seen once (600 steps of 8),
a 16-channel CNN with three downsamplings to an 8x8 latent grid, pyramid strides (8, 4, 2, 1):
1 + 4 + 16 + 64 = 85 tokens per image. Semantic loss on layers 1-2 with the offline contrastive
model's relevance (its text tower was trained on scene captions, so colour and shape words score).
The commitment/negatives settings follow spae_fmnist32 (frozen codebook: z must be held near it).
Trains with the usage-entropy term and foreground weighting (loss.entropy=1.0, loss.foreground=10,
both defaults here); shipped as spae/pretrained/scenes64 (eval.md there: 430 distinct words at
depth 4 on 1,000 test scenes); the decoded objects are closer to the truth than a flat fill of
the median colour in 70% of 200 test scenes (README).
What collapsed before (600 steps each, without the entropy term): this config with the semantic
loss on layers 1-2, on layer 1 at 0.2, with lr 1e-3 and a 200-step warmup, without the semantic
loss, with a weaker commitment (5.0), the codebook on a centred sphere
(model.codebook_norm=center_sphere), commitment on the last layer only (loss.commit_layers=last),
a 300-step ramp from the continuous latent (loss.quantize_ramp=300), a learned 64-d projection of
the codebook (model.code_dim=64), and foreground weighting alone (loss.foreground=10): depth-4
code usage ~120 at step 50, 3-13 by step 150, the decoder drawing only the background colour.
"""

from train.configs.spae_base import base_config


def get_config():
    c = base_config()
    c.data.update(name="scenes", image_size=64, channels=3, prep="resize", num_train=4800,
                  num_test=1000, batch_size=8)
    c.model.update(ch=16, ch_mult=(1, 2, 2, 2), strides=(8, 4, 2, 1))
    c.loss.update(commit=50.0, semantic=0.5, semantic_layers=(1, 2), semantic_temp=1.0,
                  semantic_negatives=True, semantic_warmup=50, relevance="clip",
                  semantic_tau=0.01, semantic_k=16, entropy=1.0, foreground=10.0)
    c.optim.update(lr=2e-3, warmup=100)
    c.train.update(steps=600, log_every=25, ckpt_every=50)
    return c
