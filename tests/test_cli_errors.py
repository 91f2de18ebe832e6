"""Command lines report bad input as one line `error: <what is wrong>; <what to do>` and exit status 2
(backbones.cli_errors); --debug or LLMSIGHT_DEBUG=1 lets the exception through with its traceback.

Each case runs a module's `main([...])` in-process with input that fails before any large model loads.
"""
import ast
import importlib
import json
from pathlib import Path

import pytest

from backbones.cli_errors import UserError, add_debug_flag, cli_main, user_errors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bad(tmp_path, monkeypatch):
    """A folder of bad inputs: an empty dir, a plain file where a folder is expected, an empty episode CSV,
    a bench JSON without the asked-for step time."""
    monkeypatch.setenv("LLMSIGHT_DEBUG", "0")          # restored afterwards, whatever --debug sets
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "episodes.csv").write_text("episode,role,dataset,split,index,label,class_name\n")
    (tmp_path / "bench.json").write_text(json.dumps({
        "device": "cpu:cpu x1", "dtype": "float32", "jax": "0", "matmul_n": 8, "matmul_peak_gflops": 1.0,
        "quantizer": [], "steps": [{"config": "other.py", "step_s": 1.0}]}))
    return tmp_path


# (module, argv with {t} for the bad-input folder, environment, a substring naming what is wrong)
CASES = {
    "report-no-runs": ("eval.report", ["--runs", "{t}/empty", "--out", "{t}/rep"], {}, "no summary.json under {t}/empty"),
    "fewshot-missing-csv": ("eval.fewshot", ["--method", "spae", "--episodes", "{t}/nope.csv", "--out", "{t}/o"], {},
                            "{t}/nope.csv"),
    "fewshot-empty-csv": ("eval.fewshot", ["--method", "random", "--episodes", "{t}/episodes.csv", "--out", "{t}/o"],
                          {}, "holds no episodes"),
    "fewshot_vqa-size": ("eval.fewshot_vqa", ["--method", "spae", "--size", "0", "--out", "{t}/o"], {}, "size must be"),
    "spae_eval-no-checkpoint": ("eval.spae_eval", ["--checkpoint", "{t}/nockpt"], {}, "{t}/nockpt"),
    "spae_pictures-no-checkpoint": ("eval.spae_pictures", ["--checkpoint", "{t}/nockpt"], {}, "{t}/nockpt"),
    "spae_generate-no-tokenizer": ("eval.spae_generate", ["--tokenizer", "{t}/nockpt"], {}, "{t}/nockpt"),
    "contrastive-no-clip": ("eval.contrastive", ["--clip", "{t}/nockpt"], {}, "{t}/nockpt"),
    "bench_spae-missing-timings": ("eval.bench_spae", ["--timings", "{t}/nope.json"], {}, "{t}/nope.json"),
    "bench_spae-timings-lack-config": ("eval.bench_spae", ["--timings", "{t}/bench.json", "--config", "mine.py"], {},
                                       "no step time for ['mine.py']"),
    "headtohead-out-is-a-file": ("eval.headtohead", ["--out", "{t}/afile"], {}, "{t}/afile"),
    "episodes-bad-dataset": ("visiondata.episodes", ["--dataset", "nosuch", "--out", "{t}/e.csv"], {}, "'nosuch'"),
    "episodes-zero-ways": ("visiondata.episodes", ["--dataset", "scenes", "--num-scenes", "50", "--ways", "0",
                                                   "--out", "{t}/e.csv"], {}, "ways"),
    "episodes-too-many-ways": ("visiondata.episodes", ["--dataset", "scenes", "--num-scenes", "50", "--ways", "99",
                                                       "--out", "{t}/e.csv"], {}, "99-way"),
    "preview-bad-style": ("visiondata.preview", ["--dataset", "emoji", "--style", "nosuch", "--out", "{t}/p.png"], {},
                          "'nosuch'"),
    "preview-out-in-missing-dir": ("visiondata.preview", ["--dataset", "scenes", "--n", "1", "--out",
                                                          "{t}/nodir/p.png"], {}, "{t}/nodir/p.png"),
    "emoji_setup-cache-is-a-file": ("visiondata.emoji_setup", [], {"LLMSIGHT_CACHE": "{t}/afile"}, "{t}/afile"),
    "build_vocab-out-is-a-file": ("lens.build_vocab", ["--out", "{t}/afile"], {}, "{t}/afile"),
    "imagenet_build-no-timm": ("backbones.vision.imagenet_build", ["--timm-info", "{t}/nodir", "--out", "{t}/ib"], {},
                               "{t}/nodir"),
}


def _run(case, t, monkeypatch, extra=()):
    module, argv, env, _ = CASES[case]
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(t=t))
    return importlib.import_module(module).main([a.format(t=t) for a in argv] + list(extra))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_and_exit_2(case, bad, monkeypatch, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _run(case, bad, monkeypatch)
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert CASES[case][3].format(t=bad) in err[0], err
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("case", CASES)
def test_llmsight_debug_lets_the_exception_through(case, bad, monkeypatch):
    monkeypatch.setenv("LLMSIGHT_DEBUG", "1")
    with pytest.raises((OSError, ValueError, UserError)) as e:
        _run(case, bad, monkeypatch)
    assert CASES[case][3].format(t=bad) in str(e.value)


@pytest.mark.parametrize("case", ["report-no-runs", "episodes-bad-dataset", "spae_eval-no-checkpoint"])
def test_debug_flag_lets_the_exception_through(case, bad, monkeypatch):
    with pytest.raises((OSError, ValueError, UserError)):
        _run(case, bad, monkeypatch, extra=["--debug"])


# ----------------------------------------------------------------------------- the wrapper itself


def _toy(exc):
    import argparse

    @cli_main
    def main(argv=None):
        p = add_debug_flag(argparse.ArgumentParser(prog="toy"))
        p.add_argument("--n", type=int, default=1)
        p.parse_args(argv)
        raise exc
        return 0

    return main


class _RepoError(RuntimeError, UserError):
    pass


@pytest.mark.parametrize("exc, line", [
    (ValueError("--n must be >= 1; got 0\nsecond line"), "error: --n must be >= 1; got 0"),
    (FileNotFoundError(2, "No such file or directory", "x.png"), "error: [Errno 2] No such file or directory: 'x.png'"),
    (_RepoError("checkpoint step 3 is damaged; delete it"), "error: checkpoint step 3 is damaged; delete it"),
    (SystemExit("no episodes in x.csv"), "error: no episodes in x.csv"),
    (SystemExit("error: already prefixed"), "error: already prefixed"),
    (ValueError(""), "error: ValueError"),
])
def test_wrapper_turns_errors_into_one_line(exc, line, monkeypatch, capsys):
    monkeypatch.setenv("LLMSIGHT_DEBUG", "0")
    with pytest.raises(SystemExit) as e:
        _toy(exc)([])
    assert e.value.code == 2 and capsys.readouterr().err == line + "\n"


def test_wrapper_leaves_other_exits_and_bugs_alone(monkeypatch, capsys):
    monkeypatch.setenv("LLMSIGHT_DEBUG", "0")
    with pytest.raises(SystemExit) as e:
        _toy(SystemExit(0))([])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:                # argparse's usage error: its own message, status 2
        _toy(ValueError("unreached"))(["--n", "x"])
    assert e.value.code == 2 and "invalid int value" in capsys.readouterr().err
    with pytest.raises(KeyError):                      # a bug, not bad input: the traceback shows
        _toy(KeyError("k"))([])


def test_debug_flag_sets_the_environment_for_the_run(monkeypatch):
    monkeypatch.setenv("LLMSIGHT_DEBUG", "0")
    with pytest.raises(ValueError, match="boom"):
        _toy(ValueError("boom"))(["--debug"])
    import os

    assert os.environ["LLMSIGHT_DEBUG"] == "1"         # child processes see it too (monkeypatch restores it)
    with pytest.raises(KeyError), user_errors(also=(KeyError,)):
        raise KeyError("still raised: debug is on")


def test_trainlib_user_errors_is_the_shared_one(monkeypatch, capsys):
    from train import trainlib

    monkeypatch.setenv("LLMSIGHT_DEBUG", "0")
    for exc in (trainlib.ConfigError("bad field x"), trainlib.CheckpointError("bad step")):
        with pytest.raises(SystemExit) as e, trainlib.user_errors():
            raise exc
        assert e.value.code == 2 and capsys.readouterr().err == f"error: {exc}\n"


# ----------------------------------------------------------------------------- every main uses it


PACKAGES = ("eval", "visiondata", "lens", "backbones", "spae", "train", "llmsight")
# Mains with their own one-line handler (a try/except printing `error: ...`, exit 2, --debug).
OWN_HANDLER = {"lens/__main__.py", "llmsight/cli.py"}


def _names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
           {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _mains():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name == "main":
                    yield path.relative_to(ROOT).as_posix(), node, path.read_text()


def test_every_main_reports_errors_through_the_wrapper():
    seen, bad = set(), []
    for rel, fn, src in _mains():
        seen.add(rel)
        if rel in OWN_HANDLER:
            continue
        decorated = any("cli_main" in _names(d) for d in fn.decorator_list)
        wrapped = any(isinstance(w, ast.With) and any("user_errors" in _names(i.context_expr) for i in w.items)
                      for w in ast.walk(fn))
        if not (decorated or wrapped):
            bad.append(f"{rel}: main is neither @cli_main nor inside `with user_errors()`")
        if not any(s in src for s in ("add_debug_flag(", "parse_train_args(", '"--debug"')):
            bad.append(f"{rel}: main has no --debug (backbones.cli_errors.add_debug_flag)")
    assert not bad, "\n".join(bad)
    assert {"eval/fewshot.py", "visiondata/episodes.py", "train/spae.py"} <= seen   # the scan finds mains
    for rel in OWN_HANDLER:
        src = (ROOT / rel).read_text()
        assert rel in seen and 'print(f"error: ' in src and "return 2" in src and '"--debug"' in src, rel
