"""Every shipped tokenizer's recipe still builds it: the config file and overrides of its registry command
(spae/pretrained/registry.json) resolve to the model, data and vocabulary its checkpoint was trained with
(config.json), and, where the checkpoint carries its whole training config (train_config.json, written at
export), to that config field for field. A change to a shared base config cannot silently change a recipe."""

import json
import os
import shlex

import pytest

from spae.tokenizer import checkpoint_model_config
from spae.training import model_config, resolve_config
from train.configs.spae_base import base_config
from train.trainlib import _json_tree, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "spae", "pretrained")
with open(os.path.join(PRETRAINED, "registry.json")) as f:
    REGISTRY = json.load(f)["tokenizers"]


def recipe(command: str):
    """The resolved training config of a `python -m train.spae --config F [--set a=b ...]` command."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "train.spae"], command
    path, sets = None, []
    for flag, value in zip(argv[3::2], argv[4::2]):
        if flag == "--config":
            path = os.path.join(ROOT, value)
        elif flag == "--set":
            sets.append(value)
    return resolve_config(load_config(path, sets, base=base_config))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_command_rebuilds_the_shipped_checkpoint(name):
    directory = os.path.join(PRETRAINED, name)
    cfg = recipe(REGISTRY[name]["command"])
    with open(os.path.join(directory, "config.json")) as f:
        meta = json.load(f)
    assert model_config(cfg) == checkpoint_model_config(directory)
    assert {k: cfg.data[k] for k in meta["data"]} == meta["data"]
    assert _json_tree(cfg.vocab) == meta["vocab"]
    assert bool(cfg.get("lqae", False)) == meta["lqae"]
    full = os.path.join(directory, "train_config.json")
    if os.path.exists(full):
        with open(full) as f:
            assert _json_tree(cfg) == json.load(f)


def test_the_default_is_a_shipped_tokenizer():
    with open(os.path.join(PRETRAINED, "registry.json")) as f:
        default = json.load(f)["default"]
    assert default in REGISTRY and os.path.isdir(os.path.join(PRETRAINED, default))
