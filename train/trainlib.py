"""Small, generic training utilities shared by the trainers in `train/`.

    cfg = load_config("train/configs/spae_tiny.py", ["optim.lr=1e-3"])
    mesh = make_mesh()                                # (data, model) mesh, model=1: all devices on "data"
    batch = shard_batch({"image": x}, mesh)           # axis 0 split over "data", copied over "model"
    check_resume_config(workdir, cfg, ("model",))     # ConfigError if the checkpoints hold another model
    ckpt = Checkpointer(workdir)                      # Orbax CheckpointManager
    ckpt.save(step, state, extra={"loader": loader.get_state()})
    restored = ckpt.restore(abstract_state)           # (step, state, extra) | None; skips damaged steps
    write_config(workdir, cfg)                        # once the state is restored or initialised
    check_finite(step, metrics)                       # FloatingPointError on NaN/Inf
    MetricsWriter(workdir).write(step, metrics)       # workdir/metrics.jsonl

Model and optimizer state travel as plain pytrees of arrays: use
`nnx.split(model)` / `nnx.state(optimizer)` to get them and `nnx.update` to put them back.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import json
import os
import sys
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from backbones.cli_errors import UserError, add_debug_flag, debug_enabled, one_line as _one_line
from backbones.cli_errors import user_errors as _user_errors
from backbones.mesh import DATA, make_mesh as _mesh_of
from spae.configdict import Config  # the libraries read configs too, so the class lives there

__all__ = [
    "Config", "ConfigError", "CheckpointError", "load_config", "apply_overrides", "make_mesh", "data_sharding",
    "replicated_sharding", "shard_batch", "Checkpointer", "check_finite", "check_resume_config", "write_config",
    "MetricsWriter", "progress", "to_host_scalars", "parse_train_args", "user_errors",
]


# ----------------------------------------------------------------------------- config


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as `model.act=gelu`


class ConfigError(ValueError):
    """A config file or override the trainer cannot use; the message says which field and why."""


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, an adjacent swap counting as one edit."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def _nearest(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the field a typo most likely meant: fewest edits (`stpes` -> `steps`,
    `semantik` -> `semantic` rather than `semantic_k`), else difflib's closest; '' if none is close."""
    import difflib

    choices = [str(c) for c in choices]
    best = min(choices, key=lambda c: (_edit_distance(name, c), c), default=None)
    if best is not None and _edit_distance(name, best) <= max(1, len(name) // 3):
        return f" (did you mean {best!r}?)"
    close = difflib.get_close_matches(name, choices, n=1)
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


def load_config(path: str, overrides: Sequence[str] = (), base=None) -> Config:
    """Load `get_config()` from a Python file and apply "a.b=3" overrides.

    `base`: the trainer's own base config function (e.g. train/configs/contrastive_offline.py's
    get_config): the file may only set fields it has, whether or not the file builds on it
    (see check_against_base)."""
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
    check_against_base(config, module, path, base)
    return apply_overrides(config, overrides)


def _base_functions(module, seen=()) -> list:
    """The root config functions (`base_config`, a parent's `get_config`) a config module builds on,
    followed through chains of parent config files; [] for a config file that builds on none."""
    roots = []
    for obj in vars(module).values():
        if (inspect.isfunction(obj) and obj.__name__ in ("get_config", "base_config")
                and obj.__module__ != module.__name__ and obj.__module__ not in seen):
            parent = sys.modules.get(obj.__module__)
            up = _base_functions(parent, (*seen, module.__name__)) if parent is not None else []
            roots.extend(up or [obj])
    return roots


def _unknown_fields(config: dict, base: dict, prefix: str = "") -> list[tuple[str, list]]:
    """(dotted path, the base's fields at that level) for every key of `config` the base lacks; only
    where both hold a dict (a base field that is None or a value may take any dict)."""
    out = []
    for k, v in config.items():
        path = f"{prefix}{k}"
        if k not in base:
            out.append((path, sorted(map(str, base))))
        elif isinstance(v, dict) and isinstance(base[k], dict):
            out.extend(_unknown_fields(v, base[k], path + "."))
    return out


def check_against_base(config: dict, module, path: str, base=None) -> None:
    """A config file may change the fields of the config it builds on (train/configs/spae_base.py's
    base_config(), a parent file's get_config()) but not add new ones: a key the base lacks is a typo
    (`stpes`) that would otherwise be ignored. ConfigError naming it, with the nearest field suggested.
    `base`, a trainer's declared base config function, applies also to a file that builds on none
    (a copy of a shipped config, edited)."""
    bases = _base_functions(module)
    if base is not None and base not in bases:
        bases.append(base)
    if not bases:
        return
    allowed: dict = {}
    for fn in bases:
        _merge_keys(allowed, fn())
    unknown = _unknown_fields(config, allowed)
    if unknown:
        name, here = unknown[0]
        more = f" (and {len(unknown) - 1} more: {', '.join(u for u, _ in unknown[1:])})" if len(unknown) > 1 else ""
        where = " or ".join(f"{fn.__module__}.{fn.__name__}()" for fn in bases)
        raise ConfigError(f"config file {path!r} sets {name!r}, which {where} does not have"
                          + _nearest(name.rsplit(".", 1)[-1], here) + more
                          + "; fix the name, or add the field to the base config first")


def _merge_keys(into: dict, tree: dict) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            sub = into.get(k)
            if not isinstance(sub, dict):
                sub = into[k] = {}
            _merge_keys(sub, v)
        elif k not in into:
            into[k] = v


def _json_tree(config) -> dict:
    """The config as config.json holds it (tuples become lists)."""
    data = config.to_dict() if isinstance(config, Config) else dict(config)
    return json.loads(json.dumps(data, default=list))


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: dict, new: dict, fields: Sequence[str]) -> list[str]:
    """'path: old -> new' for every leaf under one of `fields` ("model" covers model.*, "data.image_size"
    that field alone) whose value differs between two configs (as config.json holds them)."""
    a, b = _flatten(_json_tree(old)), _flatten(_json_tree(new))
    chosen = lambda key: any(key == f or key.startswith(f + ".") for f in fields)
    absent = "<absent>"
    return [f"{key}: {a.get(key, absent)!r} -> {b.get(key, absent)!r}"
            for key in sorted(set(a) | set(b)) if chosen(key) and a.get(key, absent) != b.get(key, absent)]


def has_checkpoints(workdir: str) -> bool:
    """Whether workdir/checkpoints holds a step folder (damaged ones moved aside do not count)."""
    d = os.path.join(workdir, "checkpoints")
    return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


def check_resume_config(workdir: str, config, model_fields: Sequence[str]) -> None:
    """Before a trainer resumes in `workdir`: if it holds checkpoints and a config.json, the new config
    must define the same model. ConfigError naming the differing `model_fields` (old -> new) otherwise;
    training fields (train.steps, the learning rate, ...) may change."""
    path = os.path.join(workdir, "config.json")
    if not (os.path.isfile(path) and has_checkpoints(workdir)):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} beside the checkpoints cannot be read ({e}); the model it describes is "
                          "unknown, so use a new --workdir (or restore that file)") from None
    diff = config_diff(saved, config, model_fields)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise ConfigError(f"{workdir} holds checkpoints of another model ({shown}); use a new --workdir for "
                          "a new model, or the saved values to resume (training fields such as train.steps "
                          "may change)")


def write_config(workdir: str, config) -> str:
    """Write workdir/config.json (atomically: a crash leaves the old one or the new one); -> its path.
    Trainers call it once the state has been restored or initialised. In a multi-process run
    process 0 alone writes it (the others return the path)."""
    path = os.path.join(workdir, "config.json")
    if not _primary():
        return path
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_json_tree(config), f, indent=1)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- sharding


def make_mesh(num_devices: int | None = None, model: int = 1) -> Mesh:
    """The (data, model) mesh of `backbones.mesh` over the first `num_devices` devices (default: all):
    `model` devices per "model" group (the vocabulary / weight shards), num_devices // model along
    "data" (the batch). model=1 puts every device on "data", as the trainers have always had it."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    model = int(model)
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices but {len(devices)} are visible; on CPU set "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax")
    if model < 1 or n % model:
        raise ValueError(f"model={model} must be a positive divisor of the {n} devices asked for "
                         "(each 'model' group holds one copy of the sharded weights)")
    return _mesh_of(data=n // model, model=model, devices=devices[:n])


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 split over "data", other axes (and the "model" axis) replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Place every array of `batch` on `mesh`, axis 0 split over "data"."""
    n = mesh.shape[DATA]
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


def _primary() -> bool:
    """Process 0 of a multi-process run (backbones/distributed.py), or the only one: the process that
    writes config.json, metrics and warnings."""
    from backbones.distributed import is_primary

    return is_primary()


class CheckpointError(RuntimeError, UserError):
    """A checkpoint that is there but cannot be used: it holds another model's arrays, or a step asked
    for by number is damaged. The message says which and what to do."""


@contextlib.contextmanager
def _quiet_orbax(capture_stderr: bool = False):
    """Keep Orbax's noise out of the user's terminal: its absl/orbax log records, the "Exception ignored
    in <coroutine>" / "Event loop is closed" reports of the reads a failed restore abandons, and (with
    `capture_stderr`) whatever else goes to stderr, Python or C++. Yields a list that collects the
    captured text. With LLMSIGHT_DEBUG=1 nothing is hidden."""
    import gc
    import logging
    import tempfile

    captured: list[str] = []
    if debug_enabled():
        yield captured
        return
    loggers = [logging.getLogger(n) for n in ("absl", "orbax", "orbax.checkpoint", "tensorstore", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: captured.append(f"{u.err_msg or 'ignored'}: {u.exc_type.__name__}: {u.exc_value}")
    saved_fd = tmp = None
    if capture_stderr:
        sys.stderr.flush()
        tmp = tempfile.TemporaryFile(mode="w+b")
        saved_fd = os.dup(2)
        os.dup2(tmp.fileno(), 2)
    try:
        with contextlib.redirect_stderr(_Sink(captured)):
            yield captured
    finally:
        if capture_stderr:
            gc.collect()                  # a failed restore's abandoned coroutines report now, into `captured`
        if saved_fd is not None:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            tmp.seek(0)
            captured.append(tmp.read().decode(errors="replace"))
            tmp.close()
        sys.unraisablehook = old_hook
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _drop_closed_loop_reports() -> None:
    """Once per process: leave out the "Exception ignored ... RuntimeError: Event loop is closed" reports
    that TensorStore's threads make when a read of a failed restore finishes after Orbax closed its
    event loop (after the restore returned, so `_quiet_orbax` cannot catch them; a damaged checkpoint
    made ~100 of them). Every other unraisable exception goes to the hook that was there."""
    if getattr(sys.unraisablehook, "_llmsight_filter", False):
        return
    previous = sys.unraisablehook

    def hook(u):
        if not (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"):
            previous(u)

    hook._llmsight_filter = True
    sys.unraisablehook = hook


class _Sink:
    """A text stream that appends what is written to a list (stands in for sys.stderr)."""

    def __init__(self, into: list):
        self.into = into

    def write(self, text):
        self.into.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def _root_cause(e: BaseException) -> BaseException:
    while e.__cause__ is not None:
        e = e.__cause__
    return e


def _short_reason(e: BaseException, limit: int = 110) -> str:
    """The root cause of a failed restore in a few words: its first line, cut to `limit` characters."""
    e = _root_cause(e)
    text = _one_line(e)
    text = text.split(" See full TensorStore details")[0].split(" in OCDBT database at ")[0]
    text = f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def model_state(model, optimizer) -> dict:
    """What the contrastive trainers checkpoint: {"params": the model's Params, "opt": the optimizer's state}."""
    from flax import nnx

    return {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param)), "opt": nnx.to_pure_dict(nnx.state(optimizer))}


def restore_model_state(ckpt, model, optimizer) -> tuple[int, dict]:
    """Load the newest intact checkpoint into `model` and `optimizer` -> (its step, its extra dict); (0, {}) if none."""
    from flax import nnx

    restored = ckpt.restore(model_state(model, optimizer))
    if restored is None:
        return 0, {}
    start, st, extra = restored
    nnx.update(model, st["params"])
    nnx.update(optimizer, st["opt"])
    if _primary():
        print(f"resumed from step {start}")
    return start, extra


class Checkpointer:
    """Orbax CheckpointManager holding a state pytree plus a JSON `extra` dict.

    `extra` carries what is not an array: the data iterator's state, the config, ...
    Scalars in `state` must be 0-d arrays (`np.array(7, np.int32)`), not NumPy scalars.

    A damaged checkpoint (truncated or overwritten files) is reported in one line on stderr, moved
    aside to checkpoints/damaged/step_N (never deleted), and `restore` falls back to the newest intact
    step. Orbax's own messages stay out of the terminal unless LLMSIGHT_DEBUG=1 (--debug).

    Many processes (backbones/distributed.py): every process makes the Checkpointer over the same
    directory (one that all hosts see) and calls save and restore together; Orbax writes each array
    shard once (replicated arrays and the JSON from process 0) and every process reads what it holds. A
    step counts as intact only if it reads on every process; process 0 moves a damaged one aside
    and prints the warnings.
    """

    def __init__(self, workdir: str, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.damaged_directory = os.path.join(self.directory, "damaged")
        os.makedirs(self.directory, exist_ok=True)
        if not debug_enabled():
            _drop_closed_loop_reports()
        with _quiet_orbax():
            self.manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
                item_handlers={"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()},
            )

    def latest_step(self) -> int | None:
        with _quiet_orbax():
            return self.manager.latest_step()

    def save(self, step: int, state: Any, extra: dict | None = None, wait: bool = True) -> None:
        ocp = self._ocp
        with _quiet_orbax():
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

        Without `step`, a latest step that cannot be read is moved aside and the newest intact earlier
        one restored (one warning line per damaged step); None if no intact step is left. A checkpoint
        that reads but holds other arrays than `abstract_state` (the model changed) is CheckpointError.
        """
        abstract = jax.tree.map(_as_abstract, abstract_state)
        if step is not None:
            try:
                return step, *self._restore_step(step, abstract)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure of Orbax's read means the same here
                raise CheckpointError(f"could not restore checkpoint step {step} from {self.directory}: "
                                      f"{_short_reason(e)}") from e
        from backbones import distributed

        damaged = []                       # (step, reason, moved to)
        result = None
        with _quiet_orbax():
            while (latest := self.manager.latest_step()) is not None:
                error = None
                try:
                    result = (latest, *self._restore_step(latest, abstract))
                except CheckpointError:
                    raise
                except Exception as e:  # noqa: BLE001 - a step that cannot be read, whatever the cause
                    result, error = None, e
                reasons = distributed.allgather_json(None if error is None else _short_reason(error))
                if not any(reasons):           # read on every process
                    break
                result = None
                if error is not None:
                    reason = _short_reason(error)
                    bad = _damage_hint(os.path.join(self.directory, str(latest)))
                    if isinstance(_root_cause(error), ValueError) and bad:
                        reason = f"{bad} is not valid JSON"
                    if debug_enabled():
                        import traceback

                        traceback.print_exception(error)
                else:
                    reason = "it did not read on process " + ", ".join(str(p) for p, r in enumerate(reasons) if r)
                damaged.append((latest, reason, self._move_aside(latest)))
        if not _primary():
            return result
        then = f"resuming from step {result[0]}" if result else "no intact checkpoint is left; starting from step 0"
        if len(damaged) == 1:
            (s, reason, moved), = damaged
            print(f"warning: checkpoint step {s} in {self.directory} is damaged ({reason}); moved it to "
                  f"{moved}; {then}", file=sys.stderr, flush=True)
        elif damaged:
            steps = ", ".join(str(s) for s, _, _ in damaged)
            reasons = "; ".join(f"{s}: {reason}" for s, reason, _ in damaged)
            print(f"warning: checkpoint steps {steps} in {self.directory} are damaged ({reasons}); moved them to "
                  f"{self.damaged_directory}; {then}", file=sys.stderr, flush=True)
        return result

    def _restore_step(self, step: int, abstract):
        ocp = self._ocp
        with _quiet_orbax(capture_stderr=True):
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    extra=ocp.args.JsonRestore(),
                ))
            except Exception:
                self._check_same_arrays(step, abstract)   # CheckpointError if it is another model's
                raise
        return out["state"], dict(out["extra"] or {})

    def _check_same_arrays(self, step: int, abstract) -> None:
        """After a failed restore: if the step's metadata reads and lists other arrays (names or shapes)
        than `abstract`, the checkpoint is intact but of another model (CheckpointError); otherwise
        return (the failure is damage)."""
        try:
            meta = self.manager.item_metadata(step)["state"]
            saved = _named_shapes(getattr(meta, "tree", meta))
        except Exception:  # noqa: BLE001 - unreadable metadata: damage
            return
        want = _named_shapes(abstract)
        if not saved or saved == want:
            return
        extra = sorted(set(saved.items()) - set(want.items()))
        missing = sorted(set(want.items()) - set(saved.items()))
        show = lambda pairs: ", ".join(f"{k} {v}" for k, v in pairs[:2]) + (" ..." if len(pairs) > 2 else "")
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} holds other arrays than this model "
            f"(only in the checkpoint: {show(extra) or 'none'}; only in the model: {show(missing) or 'none'}): "
            "the model or its config changed since it was written; use a new --workdir "
            "(the checkpoints are left as they are)")

    def _move_aside(self, step: int) -> str:
        """Move step `step`'s folder to checkpoints/damaged/step_N (step_N.1, ... if taken); -> the new path.
        Many processes: process 0 moves it, every process waits for that and re-reads the steps."""
        import shutil

        from backbones import distributed

        dst = ""
        if _primary():
            src = os.path.join(self.directory, str(step))
            os.makedirs(self.damaged_directory, exist_ok=True)
            dst = os.path.join(self.damaged_directory, f"step_{step}")
            n = 0
            while os.path.exists(dst):
                n += 1
                dst = os.path.join(self.damaged_directory, f"step_{step}.{n}")
            shutil.move(src, dst)
        distributed.barrier(f"checkpoint step {step} moved aside")
        self.manager.reload()
        return dst

    def close(self) -> None:
        with _quiet_orbax():
            self.manager.wait_until_finished()
            self.manager.close()


def _named_shapes(tree) -> dict:
    """{'a.b.0': shape} for the leaves of a pytree, keys as plain strings (dict keys, list indices and
    attribute names alike), so that a saved tree's metadata and a live state compare."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        out[name] = tuple(getattr(leaf, "shape", ()))
    return out


def _damage_hint(step_dir: str) -> str | None:
    """The first of a step folder's JSON files that does not parse (Orbax's own error does not name it)."""
    for root, _, files in sorted(os.walk(step_dir)):
        for name in sorted(files):
            if name in ("_CHECKPOINT_METADATA", "_METADATA", "metadata", "_sharding") or root.endswith("array_metadatas"):
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as f:
                        json.loads(f.read().decode())
                except (OSError, ValueError):
                    return os.path.relpath(path, step_dir)
    return None


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
    if bar.disable and _primary():
        print(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items()), flush=True)
    return m


class MetricsWriter:
    """Append one JSON line per `write(step, metrics)` to workdir/metrics.jsonl (in a multi-process
    run, process 0 alone writes; every process may call it)."""

    def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, filename)

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step), **to_host_scalars(metrics)}
        if not _primary():
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]


def progress(iterable=None, total=None, desc=None, initial=0, disable=None):
    """tqdm progress bar, disabled when stderr is not a terminal (unless disable=False), and on every
    process but 0 of a multi-process run."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    disable = disable or not _primary()
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=disable,
                dynamic_ncols=True)


def parse_train_args(doc: str, argv=None, base=None, add_flags=None):
    """The shared trainer command line: --config FILE --workdir DIR [--set a.b=value ...] [--stop_after N].

    `base`: the trainer's base config function; the --config file may only set its fields (load_config).
    `add_flags(parser)`: a trainer's own flags (e.g. `backbones.distributed.add_flags`)."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], metavar="a.b=value", help="config override")
    p.add_argument("--stop_after", type=int, default=None,
                   help="stop after this many steps of this run, without export (tests: simulated kill)")
    add_debug_flag(p, help="show tracebacks and Orbax's messages (also: environment variable LLMSIGHT_DEBUG=1)")
    if add_flags is not None:
        add_flags(p)
    args = p.parse_args(argv)
    with user_errors((FileNotFoundError, AttributeError, SyntaxError)):
        return args, load_config(args.config, args.set, base=base)


def user_errors(also: tuple = ()):
    """Around a trainer's main: the repo's errors (ConfigError, CheckpointError), OSError, ValueError and
    the types in `also` end as one line `error: ...` on stderr and exit status 2; with --debug or
    LLMSIGHT_DEBUG=1 the traceback shows instead. (backbones.cli_errors.user_errors, which every
    command line of the repo uses.)"""
    return _user_errors((ConfigError, CheckpointError, *also))
