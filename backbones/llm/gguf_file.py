"""A fast GGUF reader: metadata and memory-mapped tensor views, without per-element parsing.

`gguf.GGUFReader` builds one numpy view per array element, which takes half a minute for a
262k-token vocabulary; this reader parses the header with `struct` and bulk numpy reads and
takes well under a second. Tensor views have the attributes `weights.dequantize` uses
(`name`, `tensor_type`, `shape` in GGUF dim order, `data`), so both readers are interchangeable.

File layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 KV
count; KV pairs (string key, u32 value type, value); tensor infos (string name, u32 n_dims,
u64 dims[n_dims], u32 ggml type, u64 offset); padding to `general.alignment` (32); tensor data.
"""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any

import numpy as np

from backbones.llm.weights import CheckpointError

# GGUF metadata value types -> numpy dtypes (8 string, 9 array are handled apart).
_SCALAR = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
           7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(CheckpointError):
    """The file is not a well-formed GGUF file."""


@dataclasses.dataclass(frozen=True)
class TensorView:
    name: str
    tensor_type: Any          # gguf.GGMLQuantizationType
    shape: tuple[int, ...]    # GGUF order (fastest-varying dim first), as gguf.GGUFReader gives it
    data: np.ndarray          # typed elements for float/int types, raw bytes (rows, row bytes) otherwise
    source: str = ""          # the file (or label) it was read from, for error messages
    offset: int = -1          # byte offset of its data in the file


class _Cursor:
    def __init__(self, buf: np.ndarray, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise GGUFFormatError(f"{self.path} is truncated (needs byte {self.pos + n}, has {len(self.buf)})")
        out = memoryview(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        n = self.unpack("Q")
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def array(self, dtype, count: int) -> np.ndarray:
        dtype = np.dtype(dtype).newbyteorder("<")
        return np.frombuffer(self.take(dtype.itemsize * count), dtype=dtype)

    def value(self, vtype: int):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("I"), self.unpack("Q")
            if etype == _STRING:
                return [self.string() for _ in range(count)]
            if etype in _SCALAR:
                return self.array(_SCALAR[etype], count).tolist()
            return [self.value(etype) for _ in range(count)]   # arrays of arrays (rare)
        if vtype not in _SCALAR:
            raise GGUFFormatError(f"{self.path}: unknown metadata value type {vtype}")
        return self.array(_SCALAR[vtype], 1)[0].item()


def read_gguf_fast(source: str | Path | np.ndarray, name: str | None = None
                   ) -> tuple[dict[str, Any], dict[str, TensorView]]:
    """Return (metadata dict, {tensor name: TensorView}) of a GGUF file or of its bytes in memory
    (a uint8 array; `name` labels it in errors). A file is memory-mapped: tensor data stays on disk."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 1:
            raise TypeError(f"GGUF bytes must be a 1-D uint8 array, got {source.dtype} {source.shape}")
        buf, path = source, Path(name or "<GGUF bytes>")
    else:
        path = Path(source)
        buf = _map(path)
    cur = _Cursor(buf, path)
    if len(buf) < 24 or bytes(cur.take(4)) != b"GGUF":
        raise GGUFFormatError(f"{path} is not a readable GGUF file (bad magic bytes)")
    version = cur.unpack("I")
    if version not in (2, 3):
        raise GGUFFormatError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
    meta: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.unpack("I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        dims = tuple(int(d) for d in cur.array(np.uint64, n_dims))
        infos.append((name, dims, cur.unpack("I"), cur.unpack("Q")))
    align = int(meta.get("general.alignment", 32))
    start = -(-cur.pos // align) * align
    tensors: dict[str, TensorView] = {}
    for tname, dims, raw_type, offset in infos:
        try:
            qtype = GGMLQuantizationType(raw_type)
        except ValueError:
            raise GGUFFormatError(f"{path}: tensor {tname!r} has unknown ggml type {raw_type}") from None
        block, block_bytes = GGML_QUANT_SIZES[qtype]
        rows_first = tuple(reversed(dims))                       # numpy order
        if rows_first[-1] % block:
            raise GGUFFormatError(f"{path}: tensor {tname!r} row length {rows_first[-1]} is not a multiple of {block}")
        row_bytes = rows_first[-1] // block * block_bytes
        n_bytes = int(np.prod(rows_first[:-1], dtype=np.int64)) * row_bytes
        lo = start + offset
        if lo + n_bytes > len(buf):
            raise GGUFFormatError(f"{path} is truncated: tensor {tname!r} ends at byte {lo + n_bytes}, "
                                  f"the file has {len(buf)}")
        raw = buf[lo:lo + n_bytes]
        typed = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}.get(qtype)
        if typed is not None:
            data = raw.view(np.dtype(typed).newbyteorder("<")).reshape(rows_first)
        else:
            data = raw.reshape(rows_first[:-1] + (row_bytes,))
        if tname in tensors:
            raise GGUFFormatError(f"{path}: duplicated tensor {tname!r}")
        tensors[tname] = TensorView(tname, qtype, dims, data, str(path), lo)
    return meta, tensors


def _map(path: Path) -> np.ndarray:
    """The file's bytes, memory-mapped; clear errors for a missing, empty or unreadable file."""
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    size = path.stat().st_size
    if size < 24:
        raise GGUFFormatError(f"{path} is {'empty' if size == 0 else f'only {size} bytes'}: not a GGUF file "
                              "(a GGUF header alone is 24 bytes); the download or copy was probably cut short")
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise GGUFFormatError(f"cannot read {path} ({type(e).__name__}: {e})") from e


def gguf_architecture(path: str | Path) -> str | None:
    """`general.architecture` of a GGUF file, read without parsing the rest of the header."""
    path = Path(path)
    cur = _Cursor(_map(path), path)
    if bytes(cur.take(4)) != b"GGUF":
        raise GGUFFormatError(f"{path} is not a readable GGUF file (bad magic bytes)")
    cur.take(4 + 8)
    for _ in range(cur.unpack("Q")):
        key, value = cur.string(), cur.value(cur.unpack("I"))
        if key == "general.architecture":
            return value
    return None
