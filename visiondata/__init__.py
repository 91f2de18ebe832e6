"""visiondata: the data the repo makes and reads, as numpy arrays.

    from visiondata import fashion_mnist, scenes, photos, pipeline, episodes, formats, images

- `scenes`: synthetic captioned scenes with QA, labels and a held-out composition split.
- `fashion_mnist`: the real Fashion-MNIST idx files (70k 28x28, 10 classes).
- `photos`: 21 real photographs shipped with scikit-image and scikit-learn.
- `formats`: readers/writers for class-folder trees, COCO captions, VQAv2, mini-ImageNet CSV.
- `pipeline`: a deterministic, resumable, host-sharded batch loader.
- `episodes`: N-way K-shot episodes saved as CSV.
- `preview`: contact-sheet PNGs (`python -m visiondata.preview --dataset scenes --out sheet.png`).
"""
