"""The fashion_mnist marker (tests/conftest.py): skip without the real files, fail under CI's flag, and
fail a test that reads the real files without the marker."""
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
FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"]


def _run(pytester, monkeypatch, tmp_path, present: bool, require: str, test: str = TEST, files=FILES):
    root = tmp_path / "fm"
    if present:
        root.mkdir(parents=True)
        for name in files:                          # two blank images with label 0, as idx files
            shape = (2, 28, 28) if "images" in name else (2,)
            head = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
            (root / name).write_bytes(head + bytes(2 * 28 * 28 if "images" in name else 2))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(root))
    monkeypatch.setenv("LLMSIGHT_REQUIRE_DATA", require)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")


def test_missing_data_skips_with_the_install_command(pytester, monkeypatch, tmp_path):
    result = _run(pytester, monkeypatch, tmp_path, present=False, require="")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*apt-get install dataset-fashion-mnist*"])


def test_an_empty_data_folder_counts_as_missing(pytester, monkeypatch, tmp_path):
    """FASHION_MNIST_DIR naming an empty (or partial) folder: skipped, naming the missing file."""
    result = _run(pytester, monkeypatch, tmp_path, present=True, require="", files=FILES[:3])
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*t10k-labels-idx1-ubyte.gz not found*"])


def test_missing_data_fails_when_required(pytester, monkeypatch, tmp_path):
    result = _run(pytester, monkeypatch, tmp_path, present=False, require="1")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*LLMSIGHT_REQUIRE_DATA=1*"])


def test_present_data_runs_the_test(pytester, monkeypatch, tmp_path):
    result = _run(pytester, monkeypatch, tmp_path, present=True, require="1")
    result.assert_outcomes(passed=2)


UNMARKED = """
import pytest
from visiondata import fashion_mnist

@pytest.fixture
def images():
    return fashion_mnist.load("test")

def test_unmarked_direct_read():
    fashion_mnist.load("test")

def test_unmarked_read_through_a_fixture(images):
    pass

@pytest.mark.fashion_mnist
def test_marked_read(images):
    pass

def test_own_fake_folder_is_not_the_real_data(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        fashion_mnist.load("test")
"""


def test_an_unmarked_reader_fails_naming_the_marker(pytester, monkeypatch, tmp_path):
    """With or without the data, a test that reads the real files (itself or through a fixture) and lacks
    the marker fails with a message that says to add it; a marked one and a fake-folder one do not."""
    for present, outcomes in ((False, dict(passed=1, failed=1, errors=1, skipped=1)),
                              (True, dict(passed=2, failed=1, errors=1))):
        result = _run(pytester, monkeypatch, tmp_path / str(present), present=present, require="", test=UNMARKED)
        result.assert_outcomes(**outcomes)
        result.stdout.fnmatch_lines(["*ERROR at setup of test_unmarked_read_through_a_fixture*",
                                     "*test_unmarked_read_through_a_fixture reads the real Fashion-MNIST*",
                                     "*test_unmarked_direct_read reads the real Fashion-MNIST files without "
                                     "@pytest.mark.fashion_mnist*"])
