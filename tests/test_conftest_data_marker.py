"""The fashion_mnist marker (tests/conftest.py): skip without the real files, fail under CI's flag."""
from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
TEST = """
import pytest

@pytest.mark.fashion_mnist
def test_reads_real_images():
    pass

def test_needs_nothing():
    pass
"""


def _run(pytester, monkeypatch, tmp_path, present: bool, require: str):
    root = tmp_path / "fm"
    if present:
        root.mkdir()
    monkeypatch.setenv("FASHION_MNIST_DIR", str(root))
    monkeypatch.setenv("LLMSIGHT_REQUIRE_DATA", require)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TEST)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")


def test_missing_data_skips_with_the_install_command(pytester, monkeypatch, tmp_path):
    result = _run(pytester, monkeypatch, tmp_path, present=False, require="")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*apt-get install dataset-fashion-mnist*"])


def test_missing_data_fails_when_required(pytester, monkeypatch, tmp_path):
    result = _run(pytester, monkeypatch, tmp_path, present=False, require="1")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*LLMSIGHT_REQUIRE_DATA=1*"])


def test_present_data_runs_the_test(pytester, monkeypatch, tmp_path):
    result = _run(pytester, monkeypatch, tmp_path, present=True, require="1")
    result.assert_outcomes(passed=2)
