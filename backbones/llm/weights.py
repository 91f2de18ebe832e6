"""Checkpoint readers for the Llama decoder: GGUF files and Hugging Face safetensors directories.

Both produce a LlamaConfig and a dict of parameters whose names and shapes match `Llama`'s: stacked
float32 arrays from a GGUF, `LazyParam`s from a Hugging Face directory. Every tensor is checked by
name and shape; unexpected tensors are an error, so a wrong checkpoint never loads silently. Every
value must also be finite once dequantised: a damaged file (random bytes decode to inf or NaN)
fails naming the file and the tensor, instead of giving NaN logits later.

A Hugging Face directory holds config.json and either one `model.safetensors` or shards
`model-0000N-of-0000M.safetensors` listed by `model.safetensors.index.json` (its `weight_map` names
the shard of each tensor). `HFCheckpoint` reads every shard's header at once (truncation, tensor
sizes, a shard the index names but the directory lacks: CheckpointError naming the file) and no
tensor data: a `LazyParam` memory-maps its shards when it is first read and then reads only the
bytes the requested slice needs, so a model of any size is placed one device shard at a time:

    cfg, params = load_hf_llama(directory)            # {name: LazyParam}, model layout
    params["wq"].shape                                # (L, D, H, E)
    params["wq"][0:2, :, 4:8]                         # float32 ndarray: layers 0-1 only are read
    jax.make_array_from_callback(lazy.shape, sharding, lambda index: lazy[index])
    np.asarray(params["wq"])                          # the whole (L, D, H, E) float32 array
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from backbones.llm.config import LlamaConfig
# CheckpointError and read_safetensors are re-exported.
from backbones.weight_files import (CheckpointError, _safetensors_entry, _safetensors_header,  # noqa: F401
                                    check_finite, check_not_empty, is_float, read_safetensors)

# Names of one layer's tensors in a GGUF (llama.cpp's names; `stack_hf_layout` maps them).
_GGUF_LAYER = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "q": "blk.{i}.attn_q.weight",
    "k": "blk.{i}.attn_k.weight",
    "v": "blk.{i}.attn_v.weight",
    "o": "blk.{i}.attn_output.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
    "gate": "blk.{i}.ffn_gate.weight",
    "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
}


def _expect(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if tuple(arr.shape) != tuple(shape):
        raise CheckpointError(f"tensor {name!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    return arr


def stack_hf_layout(cfg: LlamaConfig, get: Callable[[str], np.ndarray], layer_names: Mapping[str, str],
                    embed: str, final_norm: str, head: str | None) -> dict[str, np.ndarray]:
    """Assemble `Llama` parameters from per-layer tensors in HF layout ((out, in) matrices, half-split
    Q/K rows); `get(name)` returns float32. The GGUF reader's path (HF directories: `load_hf_llama`)."""
    L, D, H, K, E, F, V = (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.hidden_dim, cfg.vocab_size)

    def layers(kind, shape, to_model):
        return np.stack([to_model(_expect(layer_names[kind].format(i=i), get(layer_names[kind].format(i=i)), shape))
                         for i in range(L)])

    out = {
        "embed": _expect(embed, get(embed), (V, D)),
        "final_norm": _expect(final_norm, get(final_norm), (D,)),
        "attn_norm": layers("attn_norm", (D,), lambda w: w),
        "ffn_norm": layers("ffn_norm", (D,), lambda w: w),
        "wq": layers("q", (H * E, D), lambda w: w.T.reshape(D, H, E)),
        "wk": layers("k", (K * E, D), lambda w: w.T.reshape(D, K, E)),
        "wv": layers("v", (K * E, D), lambda w: w.T.reshape(D, K, E)),
        "wo": layers("o", (D, H * E), lambda w: w.T.reshape(H, E, D)),
        "w_gate": layers("gate", (F, D), lambda w: w.T),
        "w_up": layers("up", (F, D), lambda w: w.T),
        "w_down": layers("down", (D, F), lambda w: w.T),
    }
    if head is not None:
        out["head"] = _expect(head, get(head), (V, D)).T
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row order (pairs interleaved per head) to HF's half-split order."""
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


# --------------------------------------------------------------------------------------- GGUF


def read_gguf(path: str | Path):
    """(metadata dict, {tensor name: reader tensor}) through the `gguf` package's own reader.

    The loaders use `gguf_file.read_gguf_fast` (same result, much faster on large vocabularies);
    this one stays as the independent reference that the fast reader is tested against.
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # the gguf package raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from e
    meta = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = field.contents()
        except Exception:  # fields of exotic types that no loader here needs
            continue
    return meta, {t.name: t for t in reader.tensors}


def dequantize(tensor) -> np.ndarray:
    """A GGUF tensor as float32 with numpy (row-major) shape: (rows, cols) = reversed GGUF dims.

    Non-finite values (a damaged file) are a CheckpointError naming the file and the tensor."""
    from gguf import GGMLQuantizationType, quants

    shape = tuple(int(d) for d in reversed(tensor.shape))
    with np.errstate(invalid="ignore", over="ignore"):     # damaged scales: reported below, not warned
        if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            arr = np.asarray(tensor.data)
            if tensor.tensor_type == GGMLQuantizationType.BF16:
                arr = quants.dequantize(arr, tensor.tensor_type)
            arr = arr.astype(np.float32).reshape(shape)
        else:
            arr = quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32).reshape(shape)
    return check_finite(arr, tensor.name, getattr(tensor, "source", ""), " after dequantising")


def load_gguf_llama(path: str | Path) -> tuple[LlamaConfig, dict[str, np.ndarray], dict]:
    """Read a Llama-architecture GGUF: (config, parameters, metadata)."""
    from backbones.llm.gguf_file import read_gguf_fast

    meta, tensors = read_gguf_fast(path)
    cfg = LlamaConfig.from_gguf_metadata(meta)
    cfg = cfg.replace(tie_embeddings="output.weight" not in tensors)
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor {name!r} is missing")
        used.add(name)
        w = dequantize(tensors[name])
        if ".attn_q." in name:
            w = _unpermute_rope_rows(w, cfg.n_heads)
        elif ".attn_k." in name:
            w = _unpermute_rope_rows(w, cfg.n_kv_heads)
        return w

    params = stack_hf_layout(cfg, get, _GGUF_LAYER, "token_embd.weight", "output_norm.weight",
                             None if cfg.tie_embeddings else "output.weight")
    extra = sorted(set(tensors) - used - {"rope_freqs.weight"})
    if extra:
        raise CheckpointError(f"{path}: unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}")
    return cfg, params, meta


# ------------------------------------------------------------------------------ HF safetensors


class _Tensor:
    """Where one checkpoint tensor's bytes lie: file, dtype, shape, absolute byte range."""
    __slots__ = ("file", "name", "dtype", "shape", "begin", "end", "file_size")

    def __init__(self, file: Path, name: str, dtype: np.dtype, shape: tuple[int, ...], begin: int, end: int,
                 file_size: int):
        self.file, self.name, self.dtype, self.shape = file, name, dtype, shape
        self.begin, self.end, self.file_size = begin, end, file_size


class _Maps:
    """Read-only memory maps of a checkpoint's files, each opened on its first read."""

    def __init__(self):
        self._maps: dict[Path, np.memmap] = {}

    def raw(self, t: _Tensor) -> np.ndarray:
        """The tensor in file layout and dtype: a view of the file's map (no bytes read yet)."""
        buf = self._maps.get(t.file)
        if buf is None:
            try:
                size = os.path.getsize(t.file)
            except OSError as e:
                raise CheckpointError(f"{t.file}: cannot read tensor {t.name!r}: the shard is gone ({e})") from None
            if size != t.file_size:          # mapped bytes past a shrunk file's end would crash the process
                raise CheckpointError(f"{t.file} changed since its header was read ({t.file_size} -> {size} "
                                      f"bytes); reading tensor {t.name!r} stopped")
            buf = self._maps[t.file] = np.memmap(t.file, np.uint8, mode="r")
        if t.end == t.begin:
            return np.zeros(t.shape, t.dtype)
        return buf[t.begin:t.end].view(t.dtype).reshape(t.shape)


def _zero_strided(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only array of `shape` holding no memory: what an index does to a shape, for free."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0,) * len(shape), writeable=False)


def _full_index(index, shape: tuple[int, ...]) -> tuple:
    """`index` as one int or slice per axis (ints checked and made non-negative)."""
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    if len(index) > len(shape):
        raise IndexError(f"{len(index)} indices for an array of shape {shape}")
    out = []
    for i, n in zip(index + (slice(None),) * (len(shape) - len(index)), shape):
        if isinstance(i, slice):
            out.append(i)
        elif isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for an axis of size {n}")
            out.append(int(i) % n)
        else:
            raise TypeError(f"LazyParam takes ints and slices as indices, got {type(i).__name__}")
    return tuple(out)


class LazyParam:
    """One model parameter, assembled on demand from memory-mapped checkpoint tensors.

    A stacked parameter (`stacked=True`, shape (L, *part)) has one tensor per layer; otherwise there
    is one tensor of shape `part`. `to_model` turns a tensor in file layout into model layout with
    views only (reshape that splits axes, transpose), so `lazy[index]` reads just the bytes under
    the slice: only the selected layers' tensors, only their selected rows. `add` is added to the
    values read (Gemma's norm scales are stored as w of a 1 + w multiplier).

        lazy.shape, lazy.dtype (float32), lazy.ndim
        lazy[index] -> np.ndarray float32   index: a tuple of slices and ints, as
                                            jax.make_array_from_callback passes (slice(None) included)
        np.asarray(lazy) -> the whole parameter (float32)

    Every slice read is checked finite (CheckpointError naming the file and the tensor)."""

    dtype = np.dtype(np.float32)

    def __init__(self, parts: Sequence[_Tensor], maps: _Maps, part_shape: tuple[int, ...], *,
                 stacked: bool, to_model: Callable[[np.ndarray], np.ndarray] | None = None, add: float = 0.0):
        if not stacked and len(parts) != 1:
            raise ValueError(f"an unstacked LazyParam has one tensor, got {len(parts)}")
        self._parts, self._maps, self._part_shape = tuple(parts), maps, tuple(part_shape)
        self._stacked, self._to_model, self._add = stacked, to_model or (lambda w: w), float(add)
        self.shape = ((len(parts),) if stacked else ()) + self._part_shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def sources(self) -> list[tuple[str, str]]:
        """(file, tensor name) of each part, in order."""
        return [(str(t.file), t.name) for t in self._parts]

    def _read(self, i: int, index: tuple) -> np.ndarray:
        t = self._parts[i]
        view = self._to_model(self._maps.raw(t))
        if view.shape != self._part_shape:
            raise AssertionError(f"{t.name}: to_model gave {view.shape}, expected {self._part_shape}")
        with np.errstate(invalid="ignore", over="ignore"):
            out = np.array(view[index], dtype=np.float32)
        check_finite(out, t.name, t.file)
        if self._add:
            out += self._add
        return out

    def __getitem__(self, index) -> np.ndarray:
        index = _full_index(index, self.shape)
        if not self._stacked:
            return self._read(0, index)
        layer, rest = index[0], index[1:]
        if isinstance(layer, int):
            return self._read(layer, rest)
        layers = range(len(self._parts))[layer]
        out = np.empty((len(layers),) + _zero_strided(self._part_shape)[rest].shape, np.float32)
        for j, i in enumerate(layers):
            out[j] = self._read(i, rest)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        full = self[(slice(None),) * self.ndim]
        return full if dtype is None else full.astype(dtype, copy=False)

    def __repr__(self) -> str:
        first = self._parts[0]
        return (f"LazyParam(shape={self.shape}, {len(self._parts)} tensor(s) from {first.name!r} "
                f"({first.dtype.name}) in {first.file.name}{'...' if len(self._parts) > 1 else ''})")


class HFCheckpoint:
    """A Hugging Face checkpoint directory: config.json and its safetensors file(s), single or sharded.

    Opening reads config.json, the index (when there is one) and every file's header, with
    weight_files' checks (empty or truncated file, a tensor's byte size against its shape and dtype),
    and no tensor data. `single` / `stacked` hand out LazyParams, checking each tensor's name and
    shape; `unused()` lists the tensors no parameter took."""

    INDEX = "model.safetensors.index.json"

    def __init__(self, directory: str | Path):
        self.directory = directory = Path(directory)
        cfg_path = directory / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{directory} has no config.json; pass a Hugging Face checkpoint directory")
        try:
            self.config: dict = json.loads(cfg_path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{cfg_path} is not readable JSON ({e})") from None
        self._maps = _Maps()
        self._tensors: dict[str, _Tensor] = {}
        self._used: set[str] = set()
        index = directory / self.INDEX
        if index.is_file():
            weight_map = self._read_index(index)
            files = sorted(set(weight_map.values()))
            for fname in files:
                if not (directory / fname).is_file():
                    held = sorted(k for k, v in weight_map.items() if v == fname)
                    raise CheckpointError(f"{index} names the shard {fname!r} (holding {held[0]!r} and "
                                          f"{len(held) - 1} more tensors), which is missing from {directory}; "
                                          "download or copy it again")
            paths = [directory / f for f in files]
        else:
            weight_map = None
            paths = sorted(directory.glob("*.safetensors"))
            if not paths:
                raise FileNotFoundError(
                    f"{directory} has no *.safetensors files (PyTorch .bin checkpoints: re-save them with "
                    "safe_serialization=True)")
        for path in paths:
            self._read_header(path)
        if weight_map is not None:
            for name, fname in weight_map.items():
                t = self._tensors.get(name)
                if t is None or t.file.name != fname:
                    raise CheckpointError(f"{index} puts tensor {name!r} in {fname!r}, but "
                                          f"{'no shard holds it' if t is None else f'it is in {t.file.name!r}'}; "
                                          "the index and the shards do not match")

    @staticmethod
    def _read_index(index: Path) -> dict[str, str]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ValueError("weight_map is not an object of file names")
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a readable safetensors index ({type(e).__name__}: {e})") from None
        bad = sorted({f for f in weight_map.values() if Path(f).name != f})
        if bad:
            raise CheckpointError(f"{index} names shards outside its directory: {bad[:3]}")
        return weight_map

    def _read_header(self, path: Path) -> None:
        size = check_not_empty(path, "safetensors")
        with open(path, "rb") as f:
            header, data_start = _safetensors_header(str(path), size, f)
        for name, info in header.items():
            dtype, shape, begin, end = _safetensors_entry(str(path), name, info, data_start, size)
            if name in self._tensors:
                raise CheckpointError(f"tensor {name!r} is in both {self._tensors[name].file} and {path}")
            self._tensors[name] = _Tensor(path, name, dtype, shape, data_start + begin, data_start + end, size)

    def has(self, name: str) -> bool:
        return name in self._tensors

    def _take(self, name: str, shape: tuple[int, ...]) -> _Tensor:
        t = self._tensors.get(name)
        if t is None:
            raise CheckpointError(f"{self.directory}: tensor {name!r} is missing")
        if t.shape != tuple(shape):
            raise CheckpointError(f"{t.file}: tensor {name!r} has shape {t.shape}, expected {tuple(shape)}")
        if not is_float(t.dtype):
            raise CheckpointError(f"{t.file}: tensor {name!r} holds {t.dtype.name}, not floating-point weights")
        self._used.add(name)
        return t

    def single(self, name: str, shape: tuple[int, ...], to_model=None, add: float = 0.0,
               model_shape: tuple[int, ...] | None = None) -> LazyParam:
        """The tensor `name` (file shape `shape`) as a LazyParam of shape `model_shape` (default `shape`)."""
        return LazyParam([self._take(name, shape)], self._maps, model_shape or shape, stacked=False,
                         to_model=to_model, add=add)

    def stacked(self, template: str, n_layers: int, shape: tuple[int, ...], to_model=None, add: float = 0.0,
                model_shape: tuple[int, ...] | None = None) -> LazyParam:
        """Tensors template.format(i=i), i < n_layers, each of file shape `shape`, as one (L, *model_shape)."""
        parts = [self._take(template.format(i=i), shape) for i in range(n_layers)]
        return LazyParam(parts, self._maps, model_shape or shape, stacked=True, to_model=to_model, add=add)

    def unused(self, ignore: Callable[[str], bool] = lambda name: False) -> list[str]:
        return sorted(k for k in self._tensors if k not in self._used and not ignore(k))

    def refuse_unused(self, ignore: Callable[[str], bool] = lambda name: False) -> None:
        extra = self.unused(ignore)
        if extra:
            raise CheckpointError(f"{self.directory}: unexpected tensors {extra[:5]}"
                                  f"{f' and {len(extra) - 5} more' if len(extra) > 5 else ''}")


def hf_model_type(directory: str | Path) -> str | None:
    """config.json's model_type of a checkpoint directory (None when it has none or no config.json)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("model_type")
    except (ValueError, AttributeError):
        return None


def load_hf_llama(directory: str | Path) -> tuple[LlamaConfig, dict[str, LazyParam]]:
    """Read a Hugging Face Llama / Mistral / Qwen 2 checkpoint directory: (config, {name: LazyParam}).

    Single-file or sharded (model.safetensors.index.json); BF16, FP16 and FP32 tensors. Nothing but
    the headers is read here: each LazyParam reads its tensors when it is indexed or converted."""
    ckpt = HFCheckpoint(directory)
    cfg = LlamaConfig.from_hf_config(ckpt.config)
    L, D, H, K, E, F, V = (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.hidden_dim, cfg.vocab_size)

    def layer(suffix, shape, to_model=None, model_shape=None):
        return ckpt.stacked("model.layers.{i}." + suffix, L, shape, to_model, model_shape=model_shape)

    params = {
        "embed": ckpt.single("model.embed_tokens.weight", (V, D)),
        "final_norm": ckpt.single("model.norm.weight", (D,)),
        "attn_norm": layer("input_layernorm.weight", (D,)),
        "ffn_norm": layer("post_attention_layernorm.weight", (D,)),
        # (out, in) torch.nn.Linear matrices to (in, *out) einsum operands: split, then transpose (views).
        "wq": layer("self_attn.q_proj.weight", (H * E, D), lambda w: w.reshape(H, E, D).transpose(2, 0, 1), (D, H, E)),
        "wk": layer("self_attn.k_proj.weight", (K * E, D), lambda w: w.reshape(K, E, D).transpose(2, 0, 1), (D, K, E)),
        "wv": layer("self_attn.v_proj.weight", (K * E, D), lambda w: w.reshape(K, E, D).transpose(2, 0, 1), (D, K, E)),
        "wo": layer("self_attn.o_proj.weight", (D, H * E), lambda w: w.reshape(D, H, E).transpose(1, 2, 0), (H, E, D)),
        "w_gate": layer("mlp.gate_proj.weight", (F, D), lambda w: w.T, (D, F)),
        "w_up": layer("mlp.up_proj.weight", (F, D), lambda w: w.T, (D, F)),
        "w_down": layer("mlp.down_proj.weight", (D, F), lambda w: w.T, (F, D)),
    }
    if cfg.qkv_bias:
        params["bq"] = layer("self_attn.q_proj.bias", (H * E,), lambda b: b.reshape(H, E), (H, E))
        params["bk"] = layer("self_attn.k_proj.bias", (K * E,), lambda b: b.reshape(K, E), (K, E))
        params["bv"] = layer("self_attn.v_proj.bias", (K * E,), lambda b: b.reshape(K, E), (K, E))
    if not cfg.tie_embeddings:
        params["head"] = ckpt.single("lm_head.weight", (V, D), lambda w: w.T, model_shape=(D, V))
    ckpt.refuse_unused(lambda k: k.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and k == "lm_head.weight"))
    return cfg, params
