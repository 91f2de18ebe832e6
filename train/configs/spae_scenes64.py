"""SPAE on the synthetic scenes at 64 px (colour and shape words), real SmolLM2 vocabulary (CPU).

    nice -n 10 python -m train.spae --config train/configs/spae_scenes64.py --workdir runs/spae_scenes64_v2
    python -m eval.spae_eval --checkpoint runs/spae_scenes64_v2/export --num 1000 --targets runs/spae_scenes64_v2/semantic_targets.npz

Sized for the 2-core CPU (about 15 min beside another run): 4,800 training scenes seen once
(600 steps of 8), a 16-channel CNN with three downsamplings to an 8x8 latent grid, pyramid
strides (8, 4, 2, 1): 1 + 4 + 16 + 64 = 85 tokens per image. Shipped as spae/pretrained/scenes64
(eval.md there: top-layer word names the main object's colour or shape in 84.3% of 1,000 test
scenes; 17.8 dB at depth 4; object pixels decoded with a third of a flat fill's error).

The recipe, each part measured in the README's scenes-64 table:
- SAQ in a learned 32-d map of the frozen table (model.code_dim=32) and the decoder's input sliding
  from z to the pyramid over the first 400 steps (loss.quantize_ramp=400), as on Fashion-MNIST;
- the semantic loss on the top token only, at weight 4, toward the offline contrastive model's
  relevance (its text tower was trained on scene captions, so colour and shape words score). On
  layers 1-2 it left the top word at chance (13%, weight 0.5 or 2) or, at weight 8 without the ramp,
  stopped the decoder from using its input;
- the usage-entropy term and foreground weighting (pixels off the median colour weigh 11x).
Without the entropy term every 64 px run collapsed to a handful of words drawing the background
(the trainer's switches tried then, each at 600 steps: semantic loss on layers 1-2, on layer 1 at
0.2 or off; lr 1e-3 with a 200-step warmup; commitment 5; model.codebook_norm=center_sphere;
loss.commit_layers=last; loss.quantize_ramp=300; model.code_dim=64; loss.foreground=10 alone).
Six layers (--set 'model.strides=(8,4,2,1,1,1)') or 2,000 steps on fresh scenes (--set
train.steps=2000 --set data.num_train=16000) reach 19.0 dB at a similar hit rate (README).
The previous default (430 words, hit rate 13.6%, blobs in the wrong colours) is
    --set model.code_dim=0 --set loss.quantize_ramp=0 --set loss.semantic=0.5 --set 'loss.semantic_layers=(1,2)'
"""

from train.configs.spae_base import base_config


def get_config():
    c = base_config()
    c.data.update(name="scenes", image_size=64, channels=3, prep="resize", num_train=4800,
                  num_test=1000, batch_size=8)
    c.model.update(ch=16, ch_mult=(1, 2, 2, 2), strides=(8, 4, 2, 1), code_dim=32)
    c.loss.update(commit=50.0, semantic=4.0, semantic_layers=(1,), semantic_temp=1.0,
                  semantic_negatives=True, semantic_warmup=50, relevance="clip",
                  semantic_tau=0.01, semantic_k=16, entropy=1.0, foreground=10.0, quantize_ramp=400)
    c.optim.update(lr=2e-3, warmup=100)
    c.train.update(steps=600, log_every=25, ckpt_every=50)
    return c
