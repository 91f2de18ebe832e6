"""Shared defaults of the SPAE configs; each train/configs/spae_<name>.py changes a few fields.

Not a runnable config itself: use spae_tiny / spae_fmnist32 / spae_scenes64 / spae_imagenet128_gemma.
"""

from train.trainlib import Config


def base_config() -> Config:
    return Config(
        seed=0,
        lqae=False,                      # True: one stride-1 layer, no semantic loss (LQAE-like baseline)
        data=dict(
            name="fashion_mnist",        # fashion_mnist | scenes | photos (visiondata.photo_mix)
            parts=None,                  # photos: image sources (None: wallpapers, tuxpaint, emoji)
            folder=None,                 # photos: a folder of your own images (add "folder" to parts)
            crop_min=0.3,                # photos: smallest crop side, as a fraction of the short side
            image_size=32, channels=1,
            prep="resize",               # pad (28 -> 32, zeros) | resize
            num_train=None, num_test=2000,
            semantic_size=None,          # semantic path: size of the source images the backbone also reads
            batch_size=32,
        ),
        vocab=dict(
            source="llm",                # llm | random (random: shape tests only)
            llm="smollm2-135m",
            mode="words", min_len=3, max_size=None,
            random_size=512, random_dim=32,
        ),
        model=dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, strides=(8, 4, 2, 1, 1),
                   patch=1,                    # p x p pixels folded into channels first (the latent grid: S / (p 2^(len(ch_mult)-1)))
                   chunk_size=8192, dtype="float32", codebook_norm="none",
                   code_dim=0,                 # > 0: SAQ in a learned projection of the frozen table
                   straight_through="identity",    # identity | rotation (spae.quantizer)
                   decoder_growth=0,           # identity-initialised residual blocks added per decoder resolution
                   semantic_backbone="none",   # none | efficientnet-lite0 (any load_vision name) | clip:NAME
                   semantic_layers=0,          # top layers the semantic path predicts (spae.semantic_path)
                   semantic_head="words",      # words: class logits -> teacher-word scores | mlp: pooled features
                   semantic_features=0,        # head input width: 1000 class logits (words), 1280 pooled (mlp)
                   semantic_hidden=1024),
        loss=dict(
            l2=1.0, l1=0.0,
            foreground=0.0,              # extra pixel-loss weight on pixels off the image's median colour
            decode_layers=None,          # pyramid prefixes decoded in training (None: all)
            prefix_weight=0.5,           # weight of truncated-pyramid reconstructions
            random_prefix=False,         # also decode, per image, a prefix of depth drawn from 1..L-1
            quantize_ramp=0,             # steps over which the decoder input goes from z to zhat (0: off)
            commit=0.25,
            codebook=1.0,                # codebook loss, only with model.code_dim > 0 (trains the projection)
            commit_layers="all",         # all: mean over every zhat_l | last: the full pyramid only
            entropy=0.0,                 # codebook-usage regulariser (spae.losses.usage_entropy_loss)
            entropy_temp=1.0, entropy_layers=None,   # None: every layer
            entropy_positions=None,      # cap on positions per image the entropy term sees (None: all)
            perceptual=0.0,              # feature distance (in the manner of LPIPS) on perceptual_net's features
            perceptual_net="random",     # random (a fixed seeded CNN, any channels) | effnet (the ImageNet backbone, RGB)
            gan=0.0, gan_start=0, disc_ch=32, lecam=0.0, lecam_decay=0.99,
            semantic=0.0, semantic_layers=(1, 2), semantic_temp=1.0,
            semantic_schedule="warmup", semantic_warmup=200,
            semantic_k=32, semantic_tau=0.01,
            semantic_negatives=False,    # also push away from the chosen off-list token
            semantic_path=1.0,           # with model.semantic_backbone: weight of the head's word cross-entropy
            semantic_path_temp=0.25,     # its temperature on squared code distances
            semantic_specificity=True,   # imagenet teacher: hypernym words weighed by how few classes they name
            relevance="clip",            # clip | imagenet (classifier, onto class and hypernym words) | labels | random
            clip=None,                   # load_clip() argument (None: the repo's default)
            relevance_words="all",       # all | known (only words the contrastive model was trained on)
        ),
        optim=dict(lr=1e-3, disc_lr=1e-4, warmup=100, b1=0.9, b2=0.99, weight_decay=0.0,
                   clip_norm=1.0, final_lr_frac=0.1),
        train=dict(steps=1000, log_every=50, ckpt_every=500, ema_decay=0.99,
                   num_devices=None, eval_batches=4,
                   model_shards=1,       # devices of the mesh's 'model' axis: the codebook's rows split over them
                   init_from=None,       # a tokenizer checkpoint dir whose weights start the model
                   semantic_head_steps=0,  # semantic path: steps fitting the head alone before step 1
                   trainable="all"),     # all | decoder (fixed encoder and tokens; needs init_from)
    )
