"""Every code cell of every notebook runs, in order, in one namespace (notebooks/execute.py)."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_run(path):
    spec = importlib.util.spec_from_file_location("nb_execute", ROOT / "notebooks" / "execute.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    printed = "".join(runner.execute(str(path), write=False))
    assert "truth" in printed and "LLM says" in printed        # the in-context cell ran to its end
    assert "Tags:" in printed                                   # and the LENS cell
    assert "bpp" in printed and "WebP" in printed              # and the real-photo SPAE cell
