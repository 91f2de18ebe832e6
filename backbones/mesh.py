"""The one device mesh of the repo: named axes "data" (batch) and "model" (weights).

    from backbones.mesh import make_mesh, parse_mesh, DATA, MODEL
    mesh = make_mesh(data=2, model=4)          # 8 devices, axes ("data", "model")
    mesh = make_mesh(**parse_mesh("data=2,model=4"))

Every sharded thing in the repo names these two axes: the batch splits over DATA; the frozen LLM's
matrices (embedding / codebook rows, attention heads, MLP hidden) split over MODEL. A mesh spans
every process of a multi-host run (`jax.devices()` lists all hosts' devices once
`jax.distributed.initialize` has run), so one definition serves one device, one host and a pod.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> Mesh:
    """A (data, model) mesh over `devices` (default: all of `jax.devices()`, every host's).

    data=None takes every device that `model` leaves: len(devices) // model. Devices are laid out
    process-major, so each host's devices form whole rows of the "data" axis when `model` divides
    the devices per host (the usual case: model parallelism stays inside a host's fast links)."""
    devices = list(jax.devices() if devices is None else devices)
    model = int(model)
    if model < 1:
        raise ValueError(f"model={model}: the 'model' axis needs at least one device")
    if data is None:
        data = max(len(devices) // model, 1)
    data = int(data)
    n = data * model
    if data < 1 or n > len(devices):
        raise ValueError(f"a data={data} x model={model} mesh needs {n} devices but {len(devices)} are visible; "
                         "on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax")
    devices = sorted(devices[:n], key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices).reshape(data, model), AXES)


def parse_mesh(text: str) -> dict[str, int]:
    """'data=2,model=4' -> {'data': 2, 'model': 4}; a missing axis is left out (make_mesh's default)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in AXES or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"bad mesh {text!r}: write axis=size pairs over {AXES}, e.g. 'data=2,model=4'")
        out[name] = int(value)
    return out
