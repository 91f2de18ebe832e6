"""Read a PyTorch ``torch.save`` checkpoint without torch: the zip format and the legacy one.

Both formats pickle the state dict with each tensor referring to a *storage* by a persistent
id ``('storage', StorageType, key, location, numel[, view])``; they differ in where the
storages' bytes live:

- zip (torch >= 1.6, e.g. ``pytorch_model.bin``): ``<root>/data.pkl`` plus one raw
  little-endian file per storage, ``<root>/data/<key>``.
- legacy (torch < 1.6, e.g. the EfficientNet-Lite ``.pth`` files): five things in a row in
  one file: a pickled magic number, the protocol version (1001), system info, the state-dict
  pickle, the pickled list of storage keys, then per key an int64 element count and the
  storage's raw bytes.

Unpickling builds placeholders (`_Storage`, `_Tensor`); once every storage's bytes are read,
each tensor becomes a NumPy array from (storage, offset, size, stride), non-contiguous
strides included. Anything else a pickle asks to import is refused, so a checkpoint cannot
run code.

A damaged file is a `CheckpointError` (a ValueError) naming it: empty, truncated (a zip without its
end record, a legacy file ending inside a storage), a storage whose bytes do not match its declared
element count, a tensor view past its storage, or a floating-point tensor holding inf or NaN.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

from backbones.weight_files import CheckpointError, check_finite_tensors, check_not_empty

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class _StorageType:
    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


@dataclasses.dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def materialize(self, data: np.ndarray, where: str) -> np.ndarray:
        """`data` is the storage's flat array -> a contiguous copy of this view."""
        if not self.size:
            return np.array(data[self.offset])
        n = 1 + sum((s - 1) * st for s, st in zip(self.size, self.stride)) if all(self.size) else 0
        if self.offset + n > data.size:
            raise CheckpointError(f"{where}: tensor of size {self.size} at offset {self.offset} runs past its storage "
                             f"{self.storage.key!r} ({data.size} elements); the file is truncated or corrupt")
        flat = data[self.offset: self.offset + n]
        return np.lib.stride_tricks.as_strided(flat, self.size, tuple(st * flat.itemsize for st in self.stride)).copy()


def _rebuild_tensor(storage, offset, size, stride, *args):  # torch._utils._rebuild_tensor_v2
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *args):  # torch._utils._rebuild_parameter
    return data


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name == "Size":
            return tuple
        raise pickle.UnpicklingError(
            f"checkpoint asks for {module}.{name}, which this reader refuses (only plain tensors "
            "are read); convert it to safetensors where torch is installed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (legacy torch < 0.4) are not read")
        return _Storage(str(key), storage_type.dtype, int(numel))


def _state_dict(obj, path: str) -> dict:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def _materialize(obj: dict, storages: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    out = {}
    for name, value in obj.items():
        if isinstance(value, _Tensor):
            if value.storage.key not in storages:
                raise CheckpointError(f"{path}: tensor {name!r} refers to storage {value.storage.key!r}, which is missing")
            out[name] = value.materialize(storages[value.storage.key], f"{path}: tensor {name!r}")
    return out


def _load_zip(path: str) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                raise CheckpointError(f"{path}: no data.pkl inside; not a torch.save checkpoint")
            root = pkl[0][: -len("data.pkl")]  # "<archive>/" or ""
            with zf.open(pkl[0]) as f:
                obj = _state_dict(_Unpickler(f).load(), path)
            refs = {t.storage.key: t.storage for t in obj.values() if isinstance(t, _Tensor)}
            storages = {}
            for key, s in refs.items():
                raw = zf.read(f"{root}data/{key}")
                if len(raw) != s.numel * s.dtype.itemsize:
                    raise CheckpointError(f"{path}: storage {key!r} holds {len(raw)} bytes, but its {s.numel} "
                                          f"{s.dtype} elements need {s.numel * s.dtype.itemsize}; the file is corrupt")
                storages[key] = np.frombuffer(raw, s.dtype.newbyteorder("<"))
    except (zipfile.BadZipFile, KeyError, EOFError, OSError, pickle.UnpicklingError, AttributeError, IndexError,
            TypeError) as e:        # bad CRC, a missing member, a damaged pickle
        raise CheckpointError(f"{path}: cannot read this torch checkpoint ({type(e).__name__}: {e}); "
                              "the file is truncated or corrupt") from e
    return _materialize(obj, storages, path)


def _load_legacy(path: str) -> dict[str, np.ndarray]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
            if magic != LEGACY_MAGIC:
                raise CheckpointError(f"{path}: not a torch checkpoint (neither a zip archive nor legacy torch.save)")
            protocol = pickle.load(f)
            if protocol != LEGACY_PROTOCOL:
                raise CheckpointError(f"{path}: legacy torch.save protocol {protocol!r}, expected {LEGACY_PROTOCOL}")
            sys_info = pickle.load(f)
            if not sys_info.get("little_endian", True):
                raise CheckpointError(f"{path}: big-endian checkpoints are not read")
            obj = _state_dict(_Unpickler(f).load(), path)
            keys = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, IndexError, TypeError) as e:
            raise CheckpointError(f"{path}: cannot read this torch checkpoint ({type(e).__name__}: {e}); "
                             "the file is truncated or corrupt") from e
        refs = {t.storage.key: t.storage for t in obj.values() if isinstance(t, _Tensor)}
        storages = {}
        for key in keys:
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: ends before storage {key!r}; the file is truncated")
            numel = int(np.frombuffer(head, "<i8")[0])
            ref = refs.get(str(key))
            dtype = ref.dtype if ref is not None else np.dtype(np.uint8)
            nbytes = numel * dtype.itemsize
            if numel < 0 or f.tell() + nbytes > size:
                raise CheckpointError(f"{path}: storage {key!r} claims {numel} elements, past the end of the "
                                 f"{size}-byte file; the file is truncated or corrupt")
            raw = f.read(nbytes)
            if ref is not None:
                if numel != ref.numel:
                    raise CheckpointError(f"{path}: storage {key!r} holds {numel} elements, its tensors expect "
                                     f"{ref.numel}; the file is corrupt")
                storages[str(key)] = np.frombuffer(raw, dtype.newbyteorder("<"))
    return _materialize(obj, storages, path)


def load_torch_state_dict(path: str, finite: bool = True) -> dict[str, np.ndarray]:
    """``{name: array}`` from a torch checkpoint (zip or legacy); a nested ``{"state_dict": ...}`` is unwrapped.

    Non-tensor entries (e.g. a saved epoch number) are dropped. Raises FileNotFoundError for a
    missing file and CheckpointError (a ValueError), naming the file, for anything unreadable or a
    floating-point tensor with inf/NaN values (`finite=False` skips that check).
    """
    path = os.fspath(path)
    check_not_empty(path, "torch checkpoint")
    if zipfile.is_zipfile(path):
        out = _load_zip(path)
    else:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise CheckpointError(f"{path} is truncated: it starts as a zip archive (torch >= 1.6 format) but "
                                      "its end record is missing; download or copy it again")
        out = _load_legacy(path)
    if finite:
        check_finite_tensors(out, path)
    return out
