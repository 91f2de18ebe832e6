"""visiondata: the data the repo makes and reads, as numpy arrays.

    from visiondata import fashion_mnist, scenes, photos, pipeline, episodes, formats, images, emoji, tuxpaint

- `scenes`: synthetic captioned scenes with QA, labels and a held-out composition split.
- `fashion_mnist`: the real Fashion-MNIST idx files (70k 28x28, 10 classes).
- `photos`: 21 real photographs shipped with scikit-image and scikit-learn.
- `emoji`: 1,906 emoji concepts drawn by Noto and Twemoji (train/test/heldout by concept), 1,561
  also by Fluent, the held-out style; names and captions (`python -m visiondata.emoji_setup` once).
- `tuxpaint`: 785 captioned Tux Paint stamps, photo cut-outs and cartoons (Debian package).
- `formats`: readers/writers for class-folder trees, COCO captions, VQAv2, mini-ImageNet CSV.
- `pipeline`: a deterministic, resumable, host-sharded batch loader.
- `episodes`: N-way K-shot episodes saved as CSV.
- `preview`: contact-sheet PNGs (`python -m visiondata.preview --dataset scenes --out sheet.png`).
"""
