"""The libraries (backbones, visiondata, spae, lens) never import the trainers or evaluators above them."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("backbones", "visiondata", "spae", "lens")
ABOVE = ("train", "eval")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):   # every import, also those inside functions
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_libraries_import_nothing_from_train_or_eval():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for lib in LIBRARIES for p in sorted((ROOT / lib).rglob("*.py"))
           for line, mod in imported_modules(p) if mod.split(".")[0] in ABOVE]
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from train.trainlib import Config\n    import eval.flops\n")
    assert [m for _, m in imported_modules(f)] == ["train.trainlib", "eval.flops"]
