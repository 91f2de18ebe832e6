"""A small, exactly resumable batch loader over in-memory numpy arrays, shardable by host.

    from visiondata import pipeline
    loader = pipeline.ArrayLoader({"image": x, "label": y}, batch_size=128, seed=0,
                                  shard_index=jax.process_index(), shard_count=jax.process_count())
    batch = next(loader)              # {"image": (128, ...), "label": (128,)} numpy arrays
    state = loader.get_state()        # small JSON-able dict: store it with the checkpoint
    loader.set_state(state)           # the next batch is exactly the one that followed `state`

Order. Epoch e uses the permutation of all N examples drawn from
`np.random.default_rng([seed, e])` (identity when shuffle=False), so any (seed, epoch) gives
the same order on every machine and after every restart. Host k of K takes positions
k, k+K, k+2K, ... of that order after trimming it to a multiple of K (so hosts see disjoint
examples and the same number of batches); `batch_size` is the per-host batch, and the global
batch over hosts is batch_size * shard_count. A batch is ready for
`train.trainlib.shard_batch(batch, mesh)` (its leading axis splits over the local devices).

Epochs. By default the loader repeats forever (num_epochs=None), for trainers that count
steps; pass num_epochs=1 for a single pass (evaluation). With drop_remainder=True (default)
every batch has batch_size examples and the last partial batch of an epoch is skipped; with
False it is yielded smaller. `steps_per_epoch` says how many batches an epoch has.

Why not grain. grain 0.2.18 is installed and works, but for arrays already in memory it adds
worker processes (which need absl flags parsed and warn about leaked shared memory) and a
larger checkpoint state, while the whole job here is an index permutation. This loader's state
is seven integers (its position plus the settings it checks on resume), resuming is exact by
construction, and it needs nothing beyond numpy.
"""

from __future__ import annotations

import numpy as np


class ArrayLoader:
    def __init__(self, arrays: dict, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_remainder: bool = True, shard_index: int = 0, shard_count: int = 1,
                 num_epochs: int | None = None):
        if not isinstance(arrays, dict) or not arrays:
            raise ValueError("arrays must be a non-empty dict of name -> numpy array")
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all arrays must have the same length along axis 0; got {lengths}")
        if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if not (0 <= shard_index < shard_count):
            raise ValueError(f"need 0 <= shard_index < shard_count; got {shard_index}, {shard_count}")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be None (forever) or >= 1; got {num_epochs}")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.n = next(iter(lengths.values()))
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self.shard_index, self.shard_count = int(shard_index), int(shard_count)
        self.num_epochs = num_epochs
        self.per_shard = self.n // self.shard_count
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.n} examples over {self.shard_count} shard(s) give {self.per_shard} per shard, "
                f"fewer than batch_size={self.batch_size} with drop_remainder=True: no batch can be made"
            )
        self._epoch, self._step = 0, 0
        self._order_epoch, self._order = -1, None

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch on this shard."""
        full, rest = divmod(self.per_shard, self.batch_size)
        return full if self.drop_remainder or rest == 0 else full + 1

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Example indices this shard visits in `epoch`, in order: int64 (per_shard,)."""
        if self.shuffle:
            perm = np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)
        else:
            perm = np.arange(self.n)
        return perm[: self.per_shard * self.shard_count][self.shard_index:: self.shard_count]

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._step >= self.steps_per_epoch:
            self._epoch, self._step = self._epoch + 1, 0
        if self.num_epochs is not None and self._epoch >= self.num_epochs:
            raise StopIteration
        if self._order_epoch != self._epoch:
            self._order, self._order_epoch = self.epoch_order(self._epoch), self._epoch
        idx = self._order[self._step * self.batch_size: (self._step + 1) * self.batch_size]
        self._step += 1
        return {k: v[idx] for k, v in self.arrays.items()}

    @property
    def epoch(self) -> int:
        """The epoch the next batch comes from."""
        return self._epoch + (1 if self._step >= self.steps_per_epoch else 0)

    def get_state(self) -> dict:
        """JSON-able state; `set_state` of it makes the next batch the one that would follow now."""
        return {"epoch": self._epoch, "step": self._step, "seed": self.seed, "n": self.n,
                "batch_size": self.batch_size, "shard_index": self.shard_index, "shard_count": self.shard_count}

    def set_state(self, state: dict) -> None:
        """Resume from `get_state()`; the data size, batch size, seed and sharding must match."""
        try:
            epoch, step = int(state["epoch"]), int(state["step"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an ArrayLoader state (need 'epoch' and 'step'): {state!r}") from e
        for key in ("seed", "n", "batch_size", "shard_index", "shard_count"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"loader state was saved with {key}={state[key]} but this loader has "
                    f"{key}={getattr(self, key)}; resume with the same data and settings"
                )
        if epoch < 0 or not 0 <= step <= self.steps_per_epoch:
            raise ValueError(f"state out of range: epoch={epoch}, step={step} (steps_per_epoch={self.steps_per_epoch})")
        self._epoch, self._step = epoch, step
