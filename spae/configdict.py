"""`Config`: a dict whose keys are also attributes, the type of every experiment config.

It lives in a library (not in `train/`) because library code reads configs too (the SPAE train
step); `train.trainlib` re-exports it.
"""
from __future__ import annotations

import copy


class Config(dict):
    """A dict whose keys are also attributes (nested dicts become Configs)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __setitem__(self, key, value):
        if isinstance(value, dict) and not isinstance(value, Config):
            value = Config(value)
        super().__setitem__(key, value)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"config has no field {name!r}; fields: {sorted(self.keys())}") from None

    def __setattr__(self, name, value):
        self[name] = value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}
