"""Shared fixtures and markers.

- `smollm2`: the real frozen LLM, loaded once per test session.
- `@pytest.mark.fashion_mnist`: the test reads the real Fashion-MNIST files (Debian's
  dataset-fashion-mnist package, or FASHION_MNIST_DIR). Without them the test is skipped with the
  command that installs them; with LLMSIGHT_REQUIRE_DATA=1 (set by .ci/run) it fails instead, so
  that CI cannot pass on a machine that lacks the real images.
"""
import os

import pytest

FASHION_MNIST_MISSING = ("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist, "
                         "or set FASHION_MNIST_DIR=<a directory with the four idx files>")


def fashion_mnist_present() -> bool:
    from visiondata import fashion_mnist

    return os.path.isdir(os.environ.get(fashion_mnist.ENV_VAR) or fashion_mnist.DEFAULT_ROOT)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("fashion_mnist") is None or fashion_mnist_present():
        return
    if os.environ.get("LLMSIGHT_REQUIRE_DATA") == "1":
        pytest.fail(FASHION_MNIST_MISSING + " (LLMSIGHT_REQUIRE_DATA=1: real images are required here)",
                    pytrace=False)
    pytest.skip(FASHION_MNIST_MISSING)


@pytest.fixture(scope="session")
def smollm2():
    from backbones import load_llm

    return load_llm("smollm2-135m")
