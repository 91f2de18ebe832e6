"""Small, generic training utilities shared by the trainers in `train/`.

    cfg = load_config("train/configs/spae_tiny.py", ["optim.lr=1e-3"])
    mesh = make_mesh()                                # one axis, "data"
    batch = shard_batch({"image": x}, mesh)           # axis 0 split over "data"
    ckpt = Checkpointer(workdir)                      # Orbax CheckpointManager
    ckpt.save(step, state, extra={"loader": loader.get_state()})
    restored = ckpt.restore(abstract_state)           # (step, state, extra) | None
    check_finite(step, metrics)                       # FloatingPointError on NaN/Inf
    MetricsWriter(workdir).write(step, metrics)       # workdir/metrics.jsonl

Model and optimizer state travel as plain pytrees of arrays: use
`nnx.split(model)` / `nnx.state(optimizer)` to get them and `nnx.update` to put them back.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from spae.configdict import Config  # the libraries read configs too, so the class lives there

__all__ = [
    "Config", "load_config", "apply_overrides", "make_mesh", "data_sharding",
    "replicated_sharding", "shard_batch", "Checkpointer", "check_finite",
    "MetricsWriter", "progress", "to_host_scalars",
]


# ----------------------------------------------------------------------------- config


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as `model.act=gelu`


class ConfigError(ValueError):
    """A config file or override the trainer cannot use; the message says which field and why."""


def _nearest(name: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_type(path: str, old: Any, new: Any) -> None:
    """An override keeps the field's type: int and float fields take numbers, bools take True/False, strings
    take strings; None fields (optional) take anything."""
    if old is None or new is None:
        return
    if isinstance(old, bool) or isinstance(new, bool):
        ok = isinstance(old, bool) and isinstance(new, bool)
    elif isinstance(old, (int, float)):
        ok = isinstance(new, (int, float)) and (isinstance(new, int) or not isinstance(old, int) or new == int(new))
    elif isinstance(old, (list, tuple)):
        ok = isinstance(new, (list, tuple))
    else:
        ok = isinstance(new, type(old))
    if not ok:
        raise ConfigError(f"{path}={new!r}: this field holds a {type(old).__name__} (now {old!r}), "
                          f"not a {type(new).__name__}")


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Apply "a.b=3" overrides in place; the key path must already exist and the value keep the field's type.
    Errors are ConfigError (a ValueError) naming the field, with the nearest existing field suggested."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like 'a.b=value'")
        path, text = item.split("=", 1)
        path = path.strip()
        keys = path.split(".")
        node = config
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                here = sorted(node) if isinstance(node, dict) else []
                where = ".".join(keys[:i]) or "the top level"
                raise ConfigError(f"override {item!r}: no config field {path!r}: {where} has no {k!r}"
                                  + _nearest(k, here) + (f"; fields there: {', '.join(here)}" if here else ""))
            if i < len(keys) - 1:
                node = node[k]
        value = _parse_value(text.strip())
        if isinstance(node[keys[-1]], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        _check_type(path, node[keys[-1]], value)
        node[keys[-1]] = value
    return config


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """Load `get_config()` from a Python file and apply "a.b=3" overrides."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found (expected e.g. train/configs/<name>.py)")
    name = "_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path!r} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, Config):
        config = Config(config)
    return apply_overrides(config, overrides)


# ----------------------------------------------------------------------------- sharding


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over the first `num_devices` devices (default: all)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices but {len(devices)} are visible; on CPU set "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax")
    return Mesh(np.asarray(devices[:n]), ("data",))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 split over "data", other axes replicated."""
    return NamedSharding(mesh, P("data"))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Place every array of `batch` on `mesh`, axis 0 split over "data"."""
    n = mesh.shape["data"]
    sharding = data_sharding(mesh)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value) if not isinstance(value, jax.Array) else value
        if value.ndim == 0 or value.shape[0] % n:
            raise ValueError(f"batch[{key!r}] has shape {value.shape}; its leading (batch) axis "
                             f"must be a multiple of the {n} devices of the 'data' axis")
        out[key] = jax.device_put(value, sharding)
    return out


# ----------------------------------------------------------------------------- checkpoints


class Checkpointer:
    """Orbax CheckpointManager holding a state pytree plus a JSON `extra` dict.

    `extra` carries what is not an array: the data iterator's state, the config, ...
    Scalars in `state` must be 0-d arrays (`np.array(7, np.int32)`), not NumPy scalars.
    """

    def __init__(self, workdir: str, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        os.makedirs(self.directory, exist_ok=True)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, extra: dict | None = None, wait: bool = True) -> None:
        ocp = self._ocp
        self.manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            extra=ocp.args.JsonSave(dict(extra or {})),
        ))
        if wait:
            self.manager.wait_until_finished()

    def restore(self, abstract_state: Any, step: int | None = None):
        """-> (step, state, extra) from the latest (or given) checkpoint, or None if none.

        `abstract_state` is a pytree of arrays or `jax.ShapeDtypeStruct`s (with shardings
        to restore sharded) shaped like the saved state.
        """
        ocp = self._ocp
        step = self.manager.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree.map(_as_abstract, abstract_state)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                extra=ocp.args.JsonRestore(),
            ))
        except Exception as e:  # corrupt or mismatching checkpoint: say what to do
            raise RuntimeError(
                f"could not restore checkpoint step {step} from {self.directory}: {e}\n"
                "If the model/config changed, use a fresh --workdir or delete that folder.") from e
        return step, out["state"], dict(out["extra"] or {})

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _as_abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


# ----------------------------------------------------------------------------- metrics


def to_host_scalars(metrics: dict) -> dict:
    """Device scalars -> Python floats (ints stay ints)."""
    out = {}
    for k, v in metrics.items():
        a = np.asarray(jax.device_get(v))
        if a.size != 1:
            continue
        out[k] = int(a.item()) if np.issubdtype(a.dtype, np.integer) else float(a.item())
    return out


def check_finite(step: int, metrics: dict) -> None:
    """Raise FloatingPointError naming the non-finite metrics of `step`."""
    bad = {}
    for k, v in metrics.items():
        a = np.asarray(jax.device_get(v), dtype=np.float64)
        if not np.all(np.isfinite(a)):
            bad[k] = a.tolist() if a.size == 1 else f"{int((~np.isfinite(a)).sum())} non-finite values"
    if bad:
        raise FloatingPointError(
            f"non-finite metrics at step {step}: {bad}. Training stopped; the last checkpoint is "
            "intact. Lower the learning rate, check the input data, or resume from the checkpoint.")


def log_metrics(step: int, metrics: dict, writer: "MetricsWriter", bar, t0: float,
                postfix: tuple = (("loss", ".3f"), ("i2t_acc", ".2f"))) -> dict:
    """A logging step of a trainer: stop on non-finite metrics, append them with the wall time to
    metrics.jsonl, show the `postfix` (name, format) pairs on the progress bar, or print the whole line
    when the bar is off (no terminal). Returns the host scalars."""
    import time

    check_finite(step, metrics)
    m = to_host_scalars(metrics)
    m["wall_s"] = time.time() - t0
    writer.write(step, m)
    bar.set_postfix({k: format(m[k], f) for k, f in postfix if k in m})
    if bar.disable:
        print(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items()), flush=True)
    return m


class MetricsWriter:
    """Append one JSON line per `write(step, metrics)` to workdir/metrics.jsonl."""

    def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, filename)

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step), **to_host_scalars(metrics)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]


def progress(iterable=None, total=None, desc=None, initial=0, disable=None):
    """tqdm progress bar, disabled when stderr is not a terminal (unless disable=False)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=disable,
                dynamic_ncols=True)


def parse_train_args(doc: str, argv=None):
    """The shared trainer command line: --config FILE --workdir DIR [--set a.b=value ...] [--stop_after N]."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], metavar="a.b=value", help="config override")
    p.add_argument("--stop_after", type=int, default=None,
                   help="stop after this many steps of this run, without export (tests: simulated kill)")
    args = p.parse_args(argv)
    try:
        return args, load_config(args.config, args.set)
    except (ConfigError, FileNotFoundError, AttributeError, SyntaxError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
