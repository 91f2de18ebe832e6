"""LiT trained on many prompt templates, so that zero-shot does not hang on one wording (issue 42, part 4).

Train (not yet run; the shipped LiT, backbones/clip/lit/, is still contrastive_lit.py's):

    nice -n 10 python -m train.lit --config train/configs/contrastive_lit_templates.py --workdir runs/lit_templates

Measure Fashion-MNIST zero-shot with the training templates beside the held-out ones (each a prompt
ensemble: the normalised mean text embedding over the set), the issue's single "a photo of a {}" and
the dataset's own eight templates, for the shipped LiT and the new export:

    python -m eval.zeroshot --models lit runs/lit_templates/export --datasets fmnist \\
        --templates train heldout photo fixed --json runs/lit_templates/zeroshot_templates.json

The table ends with held-out minus training top-1 per model (goal: within 3 points). The other
datasets take the same flag (drop --datasets); the full default table is
`python -m eval.zeroshot --models runs/lit_templates/export --json runs/lit_templates/zeroshot.json`.

Everything is contrastive_lit.py's (same sources, batch of 320, 2,000 steps, seed 0) but
data.templates="many": every source that names a class in fixed templates (Fashion-MNIST classes and
aliases, Tux Paint stamp names and categories, ImageNet class names and WordNet hypernyms) writes
the name, per drawn example, in one of the 24 TRAIN_TEMPLATES of train/lit_templates.py, drawn from
the batch's (seed, step) generator (a resumed run draws the same texts); the emoji keep their own
captions and gain their CLDR name in a random training template as one more choice. The 8
HELDOUT_TEMPLATES, among them "a photo of a {}" and every "a photo of a/the {}" form, are never
trained on, so the held-out figure is honest.

Baseline, the shipped LiT (contrastive_lit.py), Fashion-MNIST test, 10,000 images
(docs/results/zeroshot_templates_shipped_lit.md): own eight templates 84.3%; "a photo of a {}" alone
72.8%; training-set ensemble 84.1%, held-out-set ensemble 84.4% (+0.3 points: the ensembles already
meet the 3-point goal); each template alone: training set mean 78.8% (worst "{}" 54.9%), held-out
set mean 81.7% (worst "a photo of a {}" 72.8%). The single prompts are what this config must fix:
judge it by "a photo of a {}" alone and the held-out single-template mean and worst against the
training ensemble, as well as by the ensemble gap.

Time (an estimate from timings of pieces, not from a run of this config):
- training steps: the same shapes as contrastive_lit.py (batch 320, 24 tokens, same model), so the
  same cost per step: 2.3 s median over 14 steps here (2 CPU cores shared with another training run,
  nice 19; 6.4 s for the first, compiling step), about 77 min for 2,000; the shipped run took
  2,847 s for its 2,000 steps (1.4 s/step, backbones/clip/lit/config.json) on an idle CPU, about 47 min.
- once: the backbone features of 12,634 training images, 35 images/s here, about 6 min (skipped when
  WORKDIR/features already holds them: `cp -r runs/lit/features runs/lit_templates/` reuses a
  contrastive_lit run's, the cache keys being the images' hashes); building the sources about 5 s,
  tokenising the 109,901 texts (27,935 with fixed templates) about 2 s.
- in all about 85 min on the shared 2-core CPU, about 55 min on an idle one.
"""
from train.configs.contrastive_lit import get_config as lit_config


def get_config():
    c = lit_config()
    c.data.update(templates="many")
    return c
