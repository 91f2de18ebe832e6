"""Shared fixtures and markers.

- `smollm2`: the real frozen LLM, loaded once per test session.
- `@pytest.mark.fashion_mnist`: the test reads the real Fashion-MNIST files (Debian's
  dataset-fashion-mnist package, or FASHION_MNIST_DIR). Without them the test is skipped with the
  command that installs them; with LLMSIGHT_REQUIRE_DATA=1 (set by .ci/run) it fails instead, so
  that CI cannot pass on a machine that lacks the real images.
"""
import os

import pytest


def fashion_mnist_missing() -> str | None:
    """None when the real Fashion-MNIST directory is there; else the reader's message on what to install."""
    from visiondata import fashion_mnist
    from visiondata.errors import MissingDataError

    try:
        fashion_mnist.resolve_root()
    except MissingDataError as e:
        return str(e)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("fashion_mnist") is None or (missing := fashion_mnist_missing()) is None:
        return
    if os.environ.get("LLMSIGHT_REQUIRE_DATA") == "1":
        pytest.fail(missing + " (LLMSIGHT_REQUIRE_DATA=1: real images are required here)", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="session")
def smollm2():
    from backbones import load_llm

    return load_llm("smollm2-135m")
