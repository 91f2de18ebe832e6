"""Run a notebook's code cells in order, in one namespace, and store their outputs in the file.

    python notebooks/execute.py notebooks/tour.ipynb            # refresh the stored outputs
    python notebooks/execute.py notebooks/tour.ipynb --check    # run only (tests/test_notebooks.py)

What `jupyter nbconvert --execute` does, without a Jupyter install: printed text becomes a stream
output and every open matplotlib figure a PNG. A cell's last expression is not displayed: print it.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import sys


def execute(path: str, write: bool = True) -> list[str]:
    """Runs the code cells of `path`; returns what each printed. Rewrites the file if `write`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        nb = json.load(f)
    namespace, printed, count = {"__name__": "__notebook__"}, [], 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        count += 1
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            exec(compile("".join(cell["source"]), f"{path}[cell {i}]", "exec"), namespace)
        outputs = []
        if text.getvalue():
            outputs.append({"output_type": "stream", "name": "stdout", "text": text.getvalue().splitlines(keepends=True)})
        for num in plt.get_fignums():
            png = io.BytesIO()
            plt.figure(num).savefig(png, format="png", dpi=72, bbox_inches="tight")
            outputs.append({"output_type": "display_data", "metadata": {},
                            "data": {"image/png": base64.b64encode(png.getvalue()).decode(), "text/plain": ["<Figure>"]}})
        plt.close("all")
        cell["outputs"], cell["execution_count"] = outputs, count
        printed.append(text.getvalue())
    if write:
        with open(path, "w") as f:
            json.dump(nb, f, indent=1)
            f.write("\n")
    return printed


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook")
    ap.add_argument("--check", action="store_true", help="run the cells without rewriting the file")
    args = ap.parse_args(argv)
    for text in execute(args.notebook, write=not args.check):
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
