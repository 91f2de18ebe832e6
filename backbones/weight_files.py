"""Checks shared by the weight-file readers, and the safetensors reader.

Every reader of weights (GGUF in backbones/llm/gguf_file.py, safetensors here, torch `.pth`/`.bin`
in backbones/torch_pickle.py) fails at load with a `CheckpointError` that names the file:

- an empty or truncated file says so (a header that promises more bytes than the file holds);
- each tensor's byte size must match its declared shape and dtype;
- every floating-point tensor must be finite: random bytes in a damaged file decode to inf or NaN,
  which would otherwise surface much later as NaN logits. The message names the file and the tensor.

The finiteness check is `np.isfinite(a).all()` per tensor, 0.3-0.45 ms per million float32 values
(2-core CPU): 0.8 ms of the 14 ms read of the repo's largest safetensors file (backbones/clip/lit,
11.7 MB), 5 ms of the 41 ms read of the largest `.pth` (EfficientNet-Lite2, 24.7 MB), 57 ms of the
1.4 s read of a 537 MB float32 file (safetensors.numpy.load_file: 2.3 s for that file, unchecked).

    tensors = read_safetensors("model.safetensors")      # {name: array}, bf16 and fp8 via ml_dtypes
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
    """A checkpoint does not match the model it claims to be, or its file is damaged."""


_ML_FLOATS = {np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2)}


def is_float(dtype) -> bool:
    """Whether tensors of `dtype` hold floating-point values (numpy's and ml_dtypes' bfloat16 / fp8)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "fc" or dtype in _ML_FLOATS


def check_finite(arr: np.ndarray, name: str, source: str | Path = "", stage: str = "") -> np.ndarray:
    """`arr` itself if every value is finite; else a CheckpointError naming the file and the tensor.

    `stage` ends the description of where the values come from (" after dequantising")."""
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    bad = np.flatnonzero(~finite.reshape(-1))
    first = np.unravel_index(int(bad[0]), arr.shape)
    where = f"{source}: " if str(source) else ""
    raise CheckpointError(f"{where}tensor {name!r} holds {len(bad)} non-finite values of {arr.size} "
                          f"(first {arr.reshape(-1)[bad[0]]} at {tuple(int(i) for i in first)}){stage}; "
                          "the file is damaged: download or reinstall it")


def check_finite_tensors(tensors: Mapping[str, np.ndarray], source: str | Path) -> None:
    """check_finite over every floating-point tensor of a state dict read from `source`."""
    for name, arr in tensors.items():
        if is_float(arr.dtype):
            check_finite(arr, name, source)


def check_not_empty(path: str | Path, what: str) -> int:
    """The size of the file at `path`; FileNotFoundError if absent, CheckpointError if empty."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {what} file at {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path} is empty: not a {what} file; download or copy it again")
    return size


# ------------------------------------------------------------------------------------ safetensors

# https://github.com/huggingface/safetensors: u64 header length N, N bytes of JSON
# {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data,
# offsets counted from its start.
SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


def _safetensors_header(path: str, size: int, f) -> tuple[dict, int]:
    """(header dict without __metadata__, byte offset of the data) of an open safetensors file."""
    if size < 8:
        raise CheckpointError(f"{path} is only {size} bytes: not a safetensors file (truncated or corrupt)")
    n = int(np.frombuffer(f.read(8), "<u8")[0])
    if n > size - 8:
        raise CheckpointError(f"{path} is truncated or corrupt: its header claims {n} bytes, the file holds "
                              f"{size - 8} after the length field; download or copy it again")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError(f"a JSON {type(header).__name__}, not an object")
    except ValueError as e:                          # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: the safetensors header is not readable ({e}); the file is corrupt "
                              "or not a safetensors file") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def _safetensors_entry(path: str, name: str, info, data_start: int, size: int):
    """(dtype, shape, begin, end) of one header entry, checked against its dtype, shape and the file size."""
    try:
        dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        if any(d < 0 for d in shape) or not 0 <= begin <= end:
            raise ValueError("negative size or offset")
    except (KeyError, TypeError, ValueError) as e:
        desc = f"unknown dtype {info.get('dtype')!r}" if isinstance(info, dict) and info.get("dtype") not in \
            SAFETENSORS_DTYPES else f"a malformed entry ({type(e).__name__}: {e})"
        raise CheckpointError(f"{path}: tensor {name!r} has {desc}; the file is corrupt or of a newer "
                              "format") from None
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end - begin != need:
        raise CheckpointError(f"{path}: tensor {name!r} spans {end - begin} bytes, but shape {shape} of "
                              f"{info['dtype']} needs {need}; the file is corrupt")
    if data_start + end > size:
        raise CheckpointError(f"{path} is truncated: tensor {name!r} needs bytes up to {data_start + end}, "
                              f"the file has {size}; download or copy it again")
    return dtype, shape, begin, end


def read_safetensors(path: str | Path, finite: bool = True) -> dict[str, np.ndarray]:
    """{name: array} of a safetensors file, with the checks of this module (CheckpointError naming the
    file; `finite=False` skips the finiteness check). The arrays are writable views of one buffer
    holding the file (no copy per tensor); BF16 and FP8 tensors come as ml_dtypes arrays."""
    path = os.fspath(path)
    size = check_not_empty(path, "safetensors")
    with open(path, "rb") as f:
        header, data_start = _safetensors_header(path, size, f)
        entries = {name: _safetensors_entry(path, name, info, data_start, size) for name, info in header.items()}
        f.seek(0)
        buf = bytearray(size)
        got = f.readinto(buf)
    if got != size:                                  # the file shrank while being read
        raise CheckpointError(f"{path} is truncated: read {got} of {size} bytes")
    out = {}
    for name, (dtype, shape, begin, end) in entries.items():
        count = (end - begin) // dtype.itemsize
        out[name] = (np.frombuffer(buf, dtype, count, data_start + begin).reshape(shape) if count
                     else np.zeros(shape, dtype))
    if finite:
        check_finite_tensors(out, path)
    return out
