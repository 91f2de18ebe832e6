"""Shared fixtures and markers.

- `smollm2`: the real frozen LLM, loaded once per test session.
- `@pytest.mark.fashion_mnist`: the test reads the real Fashion-MNIST files (Debian's
  dataset-fashion-mnist package, or FASHION_MNIST_DIR). Without them the test is skipped with the
  command that installs them; with LLMSIGHT_REQUIRE_DATA=1 (set by .ci/run) it fails instead, so
  that CI cannot pass on a machine that lacks the real images.
  An empty or partial FASHION_MNIST_DIR counts as missing (the four idx files are looked for).
  A test that reads the real files WITHOUT the marker fails with a message saying to add it (the
  reader is wrapped for the session: see `_guard_unmarked_reads`), so a new unmarked reader cannot
  pass here and then error on a machine without the data. Reads from a folder the test made itself
  (root=... or FASHION_MNIST_DIR set to a fake folder) are not real-data reads.
- `@pytest.mark.emoji`: the same for the emoji cache (`python -m visiondata.emoji_setup`).
- `@pytest.mark.tuxpaint`: the same for the Tux Paint stamps (Debian's tuxpaint-stamps-default,
  or TUXPAINT_STAMPS_DIR).
- `@pytest.mark.slow`: skipped unless LLMSIGHT_SLOW_TESTS=1, so that `make test` stays within its
  15 minutes on 2 cores. A slow test repeats, at a larger size, what a faster one in the suite
  already checks (each says which), or runs a whole notebook; run them all with
  `LLMSIGHT_SLOW_TESTS=1 make test`.
"""
import functools
import os

import pytest

# The data folder a real-data read resolves to, as the session started (before any monkeypatch).
_REAL_FMNIST_ROOT = os.environ.get("FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
_current_item = None          # the test being set up, run or torn down (pytest_runtest_protocol)
_original_resolve_root = {}   # module name -> its resolve_root before _guard_unmarked_reads wrapped it


def data_missing(module: str) -> str | None:
    """None when `visiondata.<module>`'s data is there (its resolve_root() succeeds, and for
    Fashion-MNIST the four idx files are in it); else the reader's message on what to install or run."""
    import importlib

    from visiondata.errors import MissingDataError

    mod = importlib.import_module(f"visiondata.{module}")
    try:
        root = _original_resolve_root.get(module, mod.resolve_root)()
        if module == "fashion_mnist":
            for stems in mod._FILES.values():
                for stem in stems:
                    mod._find(root, stem)
    except MissingDataError as e:
        return str(e)
    return None


_DATA_MARKERS = {name: (lambda name=name: data_missing(name)) for name in ("fashion_mnist", "emoji", "tuxpaint")}


def pytest_configure(config):
    config.addinivalue_line("markers", "fashion_mnist: reads the real Fashion-MNIST files (tests/conftest.py)")
    config.addinivalue_line("markers", "emoji: reads the emoji cache (tests/conftest.py: skipped without it, "
                                       "failed without it when LLMSIGHT_REQUIRE_DATA=1)")
    config.addinivalue_line("markers", "tuxpaint: reads the real Tux Paint stamps (same rule)")
    _guard_unmarked_reads()


def _guard_unmarked_reads():
    """Wrap visiondata.fashion_mnist.resolve_root (every real read goes through it) so that a test
    without @pytest.mark.fashion_mnist that reads the real folder fails, naming the marker."""
    from visiondata import fashion_mnist

    if "fashion_mnist" in _original_resolve_root:
        return
    original = _original_resolve_root["fashion_mnist"] = fashion_mnist.resolve_root

    @functools.wraps(original)
    def resolve_root(root=None):
        item = _current_item
        if item is not None and item.get_closest_marker("fashion_mnist") is None:
            target = root if root is not None else (os.environ.get(fashion_mnist.ENV_VAR) or fashion_mnist.DEFAULT_ROOT)
            if os.path.realpath(os.fspath(target)) == os.path.realpath(_REAL_FMNIST_ROOT):
                pytest.fail(f"{item.nodeid} reads the real Fashion-MNIST files without @pytest.mark.fashion_mnist "
                            "(tests/conftest.py): mark it, so that it skips where the data is missing", pytrace=False)
        return original(root)

    fashion_mnist.resolve_root = resolve_root


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _current_item
    _current_item = item
    try:
        yield
    finally:
        _current_item = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("slow") is not None and os.environ.get("LLMSIGHT_SLOW_TESTS", "") in ("", "0"):
        pytest.skip("slow: set LLMSIGHT_SLOW_TESTS=1 to run it")
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
