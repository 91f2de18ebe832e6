"""Many processes (hosts) on JAX's own multi-controller runtime: one program per process, one mesh over all.

    from backbones import distributed
    distributed.add_flags(parser)                 # --coordinator HOST:PORT --num_processes N --process_id I
    args = parser.parse_args()
    distributed.initialize_from_args(args)        # before any JAX work; a one-host run does nothing here
    if distributed.is_primary(): ...              # process 0 writes files and prints
    loader = distributed.ProcessRows(arrays, order_loader, sharding)   # this process's rows of each batch
    batch = distributed.global_batch(next(loader), sharding, global_size)
    everyone = distributed.allgather_json(mine)   # JSON-able values of every process, in process order

Start the same command once per process (host), with the same coordinator address (process 0's
host and a free port) and each its own `--process_id`:

    python -m train.spae ... --coordinator 10.0.0.1:1234 --num_processes 2 --process_id 0   # host 0
    python -m train.spae ... --coordinator 10.0.0.1:1234 --num_processes 2 --process_id 1   # host 1

or set the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID
(a flag wins over its variable). JAX 0.10 reads JAX_COORDINATOR_ADDRESS itself; the other two
names are this repo's, in the same style. Under a cluster manager that JAX recognises (Slurm,
Open MPI, Kubernetes, Cloud TPU) `--coordinator auto` lets `jax.distributed.initialize` find all
three; a Slurm or Open MPI job with more than one task is recognised without any flag. Nothing
given: a single-process run, and `jax.distributed.initialize` is never called.

On CPU the cross-process collectives go through gloo (`jax_cpu_collectives_implementation`, set
here unless its environment variable JAX_CPU_COLLECTIVES_IMPLEMENTATION names another); GPUs
and TPUs bring their own. A run of several processes on one machine (tests, a dry run) works the
same with the coordinator on 127.0.0.1; XLA_FLAGS=--xla_force_host_platform_device_count=N gives
each process N CPU devices.

Data. `ProcessRows` turns the loader of the one-process run into each process's part of it: the
single-process loader is kept (over the example indices, so it draws the same order and keeps the
same resumable state), each global batch is cut into the rows this process's devices hold (a block,
with `backbones.mesh.make_mesh`'s process-major layout), and `global_batch` joins the parts into one
jax.Array with `jax.make_array_from_process_local_data`. The global batch at every step is thus the
one-process run's, row for row, whatever the number of processes.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import numpy as np

from backbones.cli_errors import UserError

__all__ = ["DistributedError", "Plan", "plan", "initialize_distributed", "add_flags", "initialize_from_args",
           "process_index", "process_count", "is_primary", "barrier", "allgather_json", "process_rows",
           "global_batch", "ProcessRows", "host_arrays", "ENV"]

# flag -> the environment variable that stands in for it
ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
AUTO = "auto"
COLLECTIVES_ENV = "JAX_CPU_COLLECTIVES_IMPLEMENTATION"


class DistributedError(UserError, ValueError):
    """Flags or environment variables of a multi-process run that do not fit together, or a process
    that could not join the run; the message names the flag (or variable) and what to give."""


class Plan(tuple):
    """(coordinator, num_processes, process_id): what `initialize_distributed` passes to JAX; None
    fields (with coordinator None too: "auto") are left to JAX's cluster detection."""

    def __new__(cls, coordinator, num_processes, process_id):
        return super().__new__(cls, (coordinator, num_processes, process_id))

    coordinator = property(lambda self: self[0])
    num_processes = property(lambda self: self[1])
    process_id = property(lambda self: self[2])


def _cluster_tasks(environ) -> int:
    """How many tasks a Slurm or Open MPI launch started (the variables JAX's own detection reads); 0 if none."""
    for count, rank in (("SLURM_NTASKS", "SLURM_PROCID"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")):
        if rank in environ and str(environ.get(count, "")).isdigit():
            return int(environ[count])
    return 0


def _whole(value, name: str, low: int) -> int:
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text) or int(text) < low:
        raise DistributedError(f"{name} {value!r} must be a whole number >= {low}")
    return int(text)


def plan(coordinator: str | None = None, num_processes=None, process_id=None, environ=None) -> Plan | None:
    """What a run asks for: None for one process (no flag, no variable, no multi-task cluster job),
    else the `Plan`. Flags win over their environment variables. DistributedError for a partial or
    out-of-range setting (all three go together, unless the coordinator is "auto")."""
    environ = os.environ if environ is None else environ
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    names = {}
    for key, value in list(given.items()):
        names[key] = f"--{key}"
        if value is None or str(value).strip() == "":
            value = environ.get(ENV[key]) or None
            if value is not None:
                names[key] = ENV[key]          # an error names where the value came from
        given[key] = None if value is None else str(value).strip()
    if all(v is None for v in given.values()):
        return Plan(None, None, None) if _cluster_tasks(environ) > 1 else None
    n = None if given["num_processes"] is None else _whole(given["num_processes"], names["num_processes"], 1)
    i = None if given["process_id"] is None else _whole(given["process_id"], names["process_id"], 0)
    if n is not None and i is not None and i >= n:
        raise DistributedError(f"{names['process_id']} {i} is out of range for {names['num_processes']} {n}: "
                               f"give each process its own id in 0..{n - 1}")
    if given["coordinator"] == AUTO:
        return Plan(None, n, i)
    missing = [names[k] for k, v in given.items() if v is None]
    if missing:
        have = ", ".join(f"{names[k]} {v}" for k, v in given.items() if v is not None)
        raise DistributedError(
            f"a multi-process run needs --coordinator HOST:PORT, --num_processes N and --process_id I together "
            f"(or {', '.join(ENV.values())}); got {have} but not {' or '.join(missing)} "
            f"(--coordinator auto: found by the cluster manager)")
    host, _, port = given["coordinator"].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"{names['coordinator']} {given['coordinator']!r} must be HOST:PORT (process 0's "
                               "host and a free port, e.g. 10.0.0.1:1234), or auto")
    return Plan(given["coordinator"], n, i)


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _wait_for_coordinator(address: str, timeout_s: float, who: str) -> None:
    """Until process 0's coordinator accepts connections at `address`; DistributedError after timeout_s."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(f"{who} found no coordinator at {address} within {timeout_s} s ({e}): start "
                                       "process 0 with the same --coordinator, or check the address") from None
            time.sleep(0.5)


def initialize_distributed(coordinator: str | None = None, num_processes=None, process_id=None,
                           timeout_s: int = 300) -> tuple[int, int]:
    """Join a multi-process run (`plan` says whether there is one) -> (process index, process count).

    Calls `jax.distributed.initialize` with the coordinator, the process count and this process's id,
    after choosing gloo for the CPU collectives; a one-process run (the default) calls nothing. Must
    come before any JAX computation. A second call, once joined, only returns the numbers.
    timeout_s: how long to wait for every process to join. A process other than 0 that finds no
    coordinator in that time gets a DistributedError; past that point JAX's own runtime ends a
    process whose peers do not all join, or one that dies later, with its fatal "Terminating process
    because the JAX distributed service detected fatal errors" (no Python exception to catch)."""
    import jax

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    p = plan(coordinator, num_processes, process_id)
    if p is None or p.num_processes == 1:
        return 0, 1
    where = f"at {p.coordinator}" if p.coordinator else "found by the cluster manager"
    who = f"process {p.process_id} of {p.num_processes}" if p.process_id is not None else "a process"
    if p.coordinator and p.process_id:         # JAX ends the process (no exception) if it cannot connect
        _wait_for_coordinator(p.coordinator, timeout_s, who)
    if not os.environ.get(COLLECTIVES_ENV):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    bind = None      # a coordinator on a loopback address listens there alone (JAX's default: every address)
    if p.coordinator and not os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") and _loopback(p.coordinator):
        bind = p.coordinator
    try:
        jax.distributed.initialize(p.coordinator, p.num_processes, p.process_id, initialization_timeout=int(timeout_s),
                                   coordinator_bind_address=bind)
    except Exception as e:  # noqa: BLE001 - JAX raises RuntimeError, ValueError or its runtime's own error
        text = " ".join(str(e).split())
        if "before any JAX" in text or "must be called before" in text:
            raise DistributedError("the multi-process run must be joined before any JAX computation: call "
                                   "initialize_distributed first") from e
        raise DistributedError(f"could not join the multi-process run {where} as {who} within {timeout_s} s: "
                               f"{text[:300]}") from e
    return jax.process_index(), jax.process_count()


def add_flags(parser):
    """--coordinator, --num_processes, --process_id on an argparse parser (strings; `plan` checks them)."""
    g = parser.add_argument_group("many processes (hosts); see backbones/distributed.py")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help=f"process 0's address and a free port, the same for every process; 'auto': found by the "
                        f"cluster manager (Slurm, Open MPI, Kubernetes, Cloud TPU); also {ENV['coordinator']}")
    g.add_argument("--num_processes", default=None, metavar="N",
                   help=f"how many processes take part (also {ENV['num_processes']})")
    g.add_argument("--process_id", default=None, metavar="I",
                   help=f"this process's id, 0..N-1; process 0 writes the outputs (also {ENV['process_id']})")
    return parser


def initialize_from_args(args, timeout_s: int = 300) -> tuple[int, int]:
    """`initialize_distributed` with the values of `add_flags`' flags."""
    return initialize_distributed(getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                                  getattr(args, "process_id", None), timeout_s=timeout_s)


def process_index() -> int:
    """This process's index, 0..process_count()-1 (0 before and without `initialize_distributed`,
    so a one-process run never starts a JAX backend to ask)."""
    import jax

    return jax.process_index() if jax.distributed.is_initialized() else 0


def process_count() -> int:
    import jax

    return jax.process_count() if jax.distributed.is_initialized() else 1


def is_primary() -> bool:
    """Process 0: the one that writes configs, summaries and metrics, and prints."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing to wait for in a one-process run)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def allgather_json(value: Any) -> list:
    """Every process's `value` (JSON-able), in process order; every process must call it."""
    if process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:len(data)] = data
    everyone = np.asarray(multihost_utils.process_allgather(padded))          # (P, max size)
    return [json.loads(bytes(everyone[p, :int(n)]).decode()) for p, n in enumerate(sizes)]


def process_rows(sharding, global_size: int) -> slice:
    """The rows (axis 0) of a (global_size, ...) batch placed with `sharding` that this process's
    devices hold: one block. ValueError if they are not one block (a mesh whose devices are not laid
    out process-major; `backbones.mesh.make_mesh` lays them out so)."""
    held = sorted({(s[0].indices(global_size)[:2]) for s in sharding.addressable_devices_indices_map(
        (global_size,)).values()})
    if not held:
        raise ValueError("none of this process's devices is in the mesh: a multi-process mesh takes every "
                         "process's devices (e.g. leave train.num_devices unset)")
    start, stop = held[0][0], held[0][1]
    for a, b in held[1:]:
        if a > stop:
            raise ValueError(f"this process's devices hold rows {held} of a batch of {global_size}, not one block: "
                             "lay the mesh out process-major (backbones.mesh.make_mesh)")
        stop = max(stop, b)
    return slice(start, stop)


def global_batch(local: dict, sharding, global_size: int) -> dict:
    """This process's rows of a batch (numpy, `process_rows` of each array) -> global jax.Arrays of
    `global_size` rows placed with `sharding` (jax.make_array_from_process_local_data)."""
    import jax

    rows = process_rows(sharding, global_size)
    out = {}
    for key, value in local.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != rows.stop - rows.start:
            raise ValueError(f"batch[{key!r}] has shape {value.shape}; this process holds rows {rows.start}.."
                             f"{rows.stop - 1} of the global batch of {global_size}")
        out[key] = jax.make_array_from_process_local_data(sharding, value, (global_size,) + value.shape[1:])
    return out


class ProcessRows:
    """This process's rows of each global batch that `order` draws, read from in-memory `arrays`.

        order = ArrayLoader({"index": np.arange(n)}, global_batch_size, seed=..., shuffle=True)
        loader = ProcessRows(arrays, order, NamedSharding(mesh, P("data")))
        local = next(loader)                     # {"image": (rows of this process, ...)} numpy
        batch = global_batch(local, loader.sharding, loader.global_size)

    `order` is the one-process run's loader over the example indices (any loader yielding
    {"index": (global_batch_size,) int}), so every step's global batch is that run's, row for row;
    `get_state` / `set_state` are `order`'s, the same whatever the number of processes (a
    checkpoint of one process count resumes under another)."""

    def __init__(self, arrays: dict, order, sharding):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.order = order
        self.sharding = sharding
        self.global_size = int(order.batch_size)
        self.rows = process_rows(sharding, self.global_size)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        idx = np.asarray(next(self.order)["index"])
        if len(idx) != self.global_size:
            raise ValueError(f"the order loader gave {len(idx)} indices for a global batch of {self.global_size}: "
                             "use drop_remainder=True")
        mine = idx[self.rows]
        return {k: v[mine] for k, v in self.arrays.items()}

    def get_state(self) -> dict:
        return self.order.get_state()

    def set_state(self, state: dict) -> None:
        self.order.set_state(state)


def host_arrays(tree) -> Any:
    """A pytree of jax.Arrays -> NumPy copies of their global values, on every process (a collective:
    every process calls it). Arrays this process holds whole (fully addressable or replicated) are
    copied locally; the others are gathered across processes."""
    import jax

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)

