"""Benchmark of the frozen image backbone: images/s of ours (fp32, bf16) beside the torch reference in the
same run, at batch 1 and 32, with MFU against a matmul peak measured in the same run.

    python -m eval.bench_vision                                  # efficientnet-lite0, 224 px
    python -m eval.bench_vision --model efficientnet-lite2 --batch 1 32 --out docs/results/cpu/bench_vision

MFU = model FLOPs / time per batch / measured matmul peak of the same dtype. Model FLOPs are the
convolutions and matmul of the forward pass: 2 x multiply-adds of every conv and the classifier
(`model_flops`). The depthwise convs run as fused elementwise taps (backbones.vision.model.depthwise),
which eval.flops' jaxpr count does not see, so the count is analytic here; the tests check that
it equals the jaxpr count plus the depthwise taps. bf16 is reported with its
accuracy on the scikit-image / scikit-learn photos: top-1 agreement with fp32 and the largest
logit difference as a fraction of the fp32 logit range. The torch reference (efficientnet-lite-pytorch,
test extra) is skipped with a note where it is not installed.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from eval.report import write_md_json

from eval.bench_spae import _time, matmul_peak
from backbones.cli_errors import add_debug_flag, cli_main


def model_flops(cfg, size: int) -> float:
    """FLOPs of one image's forward pass at size x size: 2 x multiply-adds of every conv and the classifier."""
    def out(n, s):
        return -(-n // s)

    h = out(size, 2)
    total = 2 * 3 * 3 * 3 * cfg.stem * h * h                         # stem 3x3 stride 2
    for b in cfg.blocks:
        if b.expand != 1:
            total += 2 * b.in_ch * b.hidden * h * h                    # 1x1 expand
        h = out(h, b.stride)
        total += 2 * b.kernel * b.kernel * b.hidden * h * h          # depthwise k x k
        total += 2 * b.hidden * b.out_ch * h * h                      # 1x1 project
    total += 2 * cfg.blocks[-1].out_ch * cfg.head * h * h            # 1x1 head
    return float(total + 2 * cfg.head * cfg.num_classes)             # classifier


def torch_images_per_s(name: str, x: np.ndarray, repeats: int = 5) -> float | None:
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    from backbones.vision.weights import weights_path

    ref = EfficientNet.from_pretrained(name, weights_path=weights_path(name)).eval()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.inference_mode():
        ref(xt)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            ref(xt)
            best = min(best, time.perf_counter() - t)
    return len(x) / best


def bf16_accuracy(name: str) -> dict:
    """bf16 against fp32 on the 21 real photos."""
    from backbones import load_vision
    from visiondata import photos

    fp32, bf16 = load_vision(name), load_vision(name, dtype=jnp.bfloat16)
    x = fp32.preprocess_batch(photos.paths())
    a, b = fp32.logits(x), bf16.logits(x)
    return {"photos": len(x), "top1_agree": float(np.mean(a.argmax(1) == b.argmax(1))),
            "max_logit_diff_frac": float(np.abs(a - b).max() / (a.max() - a.min()))}


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--matmul", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="eval_out/bench_vision")
    add_debug_flag(p)
    args = p.parse_args(argv)

    from backbones import load_vision

    dev = jax.devices()[0]
    res = {"device": f"{dev.platform}:{dev.device_kind} x{len(jax.devices())}", "jax": jax.__version__,
           "model": args.model, "rows": []}
    peaks = {d: matmul_peak(args.matmul, jnp.dtype(d)) for d in ("float32", "bfloat16")}
    res["matmul_peak_gflops"] = peaks
    print(f"matmul peak fp32 {peaks['float32']:.1f}, bf16 {peaks['bfloat16']:.1f} GFLOP/s", flush=True)
    models = {d: load_vision(args.model, dtype=jnp.dtype(d)) for d in peaks}
    S = models["float32"].image_size
    rng = np.random.default_rng(0)
    for batch in args.batch:
        x = rng.uniform(-1, 1, (batch, S, S, 3)).astype(np.float32)
        torch_ips = torch_images_per_s(args.model, x, args.repeats)
        for dtype, m in models.items():
            fn = jax.jit(lambda state, x, m=m: m._logits_fn(state, x))
            secs = _time(fn, m._state, x, repeats=args.repeats)
            flops = model_flops(m.config, S) * batch
            row = {"batch": batch, "dtype": dtype, "images_per_s": batch / secs, "gflops_per_image": flops / batch / 1e9,
                   "mfu": flops / secs / 1e9 / peaks[dtype], "torch_images_per_s": torch_ips,
                   "vs_torch": None if torch_ips is None else batch / secs / torch_ips}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    res["bf16_accuracy"] = bf16_accuracy(args.model)
    md = write_report(res, args.out)
    print(md)
    return res


def write_report(res: dict, out: str) -> str:
    pk = res["matmul_peak_gflops"]
    lines = [f"{res['model']} on {res['device']} (jax {res['jax']}); matmul peak fp32 {pk['float32']:.1f}, "
             f"bf16 {pk['bfloat16']:.1f} GFLOP/s (2048^3, same run)", "",
             "| batch | dtype | images/s | torch fp32 images/s | ours / torch | GFLOP/image | MFU |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        t = "n/a" if r["torch_images_per_s"] is None else f"{r['torch_images_per_s']:.1f}"
        v = "n/a" if r["vs_torch"] is None else f"{r['vs_torch']:.2f}x"
        lines.append(f"| {r['batch']} | {r['dtype']} | {r['images_per_s']:.1f} | {t} | {v} | "
                     f"{r['gflops_per_image']:.3f} | {100 * r['mfu']:.1f}% |")
    acc = res["bf16_accuracy"]
    lines += ["", f"bf16 vs fp32 on {acc['photos']} real photos: top-1 agreement {100 * acc['top1_agree']:.0f}%, "
              f"largest logit difference {100 * acc['max_logit_diff_frac']:.2f}% of the fp32 logit range.",
              "", "Written by `python -m eval.bench_vision`."]
    md = "\n".join(lines) + "\n"
    write_md_json(out, md, res)
    return md


if __name__ == "__main__":
    main()
