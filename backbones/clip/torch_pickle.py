"""Read a PyTorch ``torch.save`` checkpoint (zip format, e.g. ``pytorch_model.bin``) without torch.

The zip holds ``<root>/data.pkl`` (a pickle whose tensors refer to storages by key) and one
raw little-endian file per storage, ``<root>/data/<key>``. A restricted unpickler rebuilds
each tensor as a NumPy array from (storage, offset, size, stride); anything else a pickle
asks to import is refused, so a checkpoint cannot run code.
"""
from __future__ import annotations

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *args):  # torch._utils._rebuild_tensor_v2
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    n = 1 + sum((s - 1) * st for s, st in zip(size, stride))
    flat = storage[offset: offset + n]
    return np.lib.stride_tricks.as_strided(
        flat, size, tuple(st * flat.itemsize for st in stride)).copy()


def _rebuild_parameter(data, *args):  # torch._utils._rebuild_parameter
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, zf: zipfile.ZipFile, root: str):
        super().__init__(file)
        self.zf, self.root, self.cache = zf, root, {}

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
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.cache:
            raw = self.zf.read(f"{self.root}data/{key}")
            self.cache[key] = np.frombuffer(raw, storage_type.dtype)
        return self.cache[key]


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """``{name: array}`` from a torch zip checkpoint; a nested ``{"state_dict": ...}`` is unwrapped."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format torch checkpoint (legacy torch<1.6 or TorchScript formats are "
            "not read); convert it to safetensors where torch is installed: "
            "`from safetensors.torch import save_file; save_file(torch.load(p), 'model.safetensors')`")
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise ValueError(f"{path}: no data.pkl inside; not a torch.save checkpoint")
        root = pkl[0][: -len("data.pkl")]  # "<archive>/" or ""
        with zf.open(pkl[0]) as f:
            obj = _Unpickler(f, zf, root).load()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
