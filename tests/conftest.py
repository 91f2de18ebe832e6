"""Shared fixtures and markers.

- `smollm2`: the real frozen LLM, loaded once per test session.
- `@pytest.mark.fashion_mnist`: the test reads the real Fashion-MNIST files (Debian's
  dataset-fashion-mnist package, or FASHION_MNIST_DIR). Without them the test is skipped with the
  command that installs them; with LLMSIGHT_REQUIRE_DATA=1 (set by .ci/run) it fails instead, so
  that CI cannot pass on a machine that lacks the real images.
- `@pytest.mark.emoji`: the same for the emoji cache (`python -m visiondata.emoji_setup`).
- `@pytest.mark.tuxpaint`: the same for the Tux Paint stamps (Debian's tuxpaint-stamps-default,
  or TUXPAINT_STAMPS_DIR).
"""
import os

import pytest


def data_missing(module: str) -> str | None:
    """None when `visiondata.<module>`'s data is there (its resolve_root() succeeds); else the reader's
    message on what to install or run."""
    import importlib

    from visiondata.errors import MissingDataError

    try:
        importlib.import_module(f"visiondata.{module}").resolve_root()
    except MissingDataError as e:
        return str(e)
    return None


_DATA_MARKERS = {name: (lambda name=name: data_missing(name)) for name in ("fashion_mnist", "emoji", "tuxpaint")}


def pytest_configure(config):
    config.addinivalue_line("markers", "emoji: reads the emoji cache (tests/conftest.py: skipped without it, "
                                       "failed without it when LLMSIGHT_REQUIRE_DATA=1)")
    config.addinivalue_line("markers", "tuxpaint: reads the real Tux Paint stamps (same rule)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for marker, missing_fn in _DATA_MARKERS.items():
        if item.get_closest_marker(marker) is None or (missing := missing_fn()) is None:
            continue
        if os.environ.get("LLMSIGHT_REQUIRE_DATA") == "1":
            pytest.fail(missing + " (LLMSIGHT_REQUIRE_DATA=1: real images are required here)", pytrace=False)
        pytest.skip(missing)


@pytest.fixture(scope="session")
def smollm2():
    from backbones import load_llm

    return load_llm("smollm2-135m")
