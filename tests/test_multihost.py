"""Many processes on JAX's multi-controller runtime (backbones/distributed.py), on one machine:
processes on 127.0.0.1 with gloo CPU collectives, each with simulated CPU devices.

- train.spae: 2 processes x 2 devices give the parameters of 1 process x 4 devices (same global
  batches, row for row); 2 processes restore a checkpoint that 1 process wrote.
- eval.fewshot: 2 processes give the records and scores of 1.
- the flags: a partial or out-of-range setting is one `error:` line; the per-process rows of each
  batch join into the one-process batch.
Every subprocess runs under a timeout.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from backbones import distributed
from backbones.distributed import DistributedError, Plan, plan
from eval.fewshot import PARTIAL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "train/configs/spae_tiny.py")
# spae_tiny's every-loss config made smaller for the time it takes (the GAN and the perceptual net
# add compile time and test nothing here); 3 steps over 8-image batches, checkpoint at the end.
SETTINGS = ["train.steps=3", "train.log_every=1", "loss.gan=0", "loss.perceptual=0"]
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One compilation cache for every process this file starts: the model's many small initialisation
# programs, compiled by the first processes, are read back by the later ones (the trainer's
# restore run, the few-shot runs' tokenizer), which saves most of their time.
_CACHE = {}


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_"))}
    env.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0 "
                         "--xla_llvm_disable_expensive_passes=true")    # compile time is most of the time
    if "dir" in _CACHE:
        env.update(JAX_COMPILATION_CACHE_DIR=_CACHE["dir"], JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    _CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    _CACHE.clear()


def _start(args: list, devices: int, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE,
                            stderr=log, text=True)


def _launch(name: str, args: list, processes: int, devices: int, logdir: str) -> list:
    """Start `processes` copies of `python args...`, joined on a free 127.0.0.1 port when more than one;
    process i's stderr goes to logdir/<name>_i.err."""
    port = _free_port()
    procs = []
    for i in range(processes):
        flags = [] if processes == 1 else ["--coordinator", f"127.0.0.1:{port}", "--num_processes",
                                           str(processes), "--process_id", str(i)]
        log = open(os.path.join(logdir, f"{name}_{i}.err"), "w")
        procs.append((_start(args + flags, devices, log), log))
    return procs


def _finish(procs: list, deadline: float) -> list[str]:
    """Wait for every process (killing all at the deadline); -> their stdouts, less gloo's own
    "[Gloo] Rank ... connected" lines. Fails with the stderr tail of the first that did not exit 0."""
    outs, failed = [], None
    for proc, log in procs:
        try:
            out, _ = proc.communicate(timeout=max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            for p, _ in procs:
                p.kill()
            out, _ = proc.communicate()
            failed = failed or (log.name, "timed out")
        log.close()
        outs.append("".join(l for l in out.splitlines(True) if not l.startswith("[Gloo]")))
        if proc.returncode != 0 and failed is None:
            failed = (log.name, f"exit {proc.returncode}")
    if failed:
        with open(failed[0]) as f:
            tail = "".join(l for l in f if not l.startswith("[Gloo]"))[-3000:]
        pytest.fail(f"{failed[0]}: {failed[1]}\n{tail}")
    return outs


def _child_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _state(workdir: str, step: int = 3) -> dict:
    """{leaf path: array} of the trainer state saved at `step` (read whole onto this process's CPU)."""
    import jax
    import orbax.checkpoint as ocp
    from jax.sharding import SingleDeviceSharding

    path = os.path.join(workdir, "checkpoints", str(step), "state")
    ckpt = ocp.StandardCheckpointer()
    meta = ckpt.metadata(path)
    tree = getattr(getattr(meta, "item_metadata", meta), "tree", getattr(meta, "item_metadata", meta))
    cpu = SingleDeviceSharding(jax.devices("cpu")[0])
    state = ckpt.restore(path, jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), tree))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def _export(workdir: str) -> dict:
    from safetensors.numpy import load_file

    return load_file(os.path.join(workdir, "export", "params.safetensors"))


def _loader_state(workdir: str, step: int = 3) -> dict:
    with open(os.path.join(workdir, "checkpoints", str(step), "extra", "metadata")) as f:
        return json.load(f)["loader"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny trainer three ways: 1 process x 4 devices and 2 processes x 2 devices side by side,
    then 2 processes resuming (nothing left to train: restore and export) in a copy of the
    one-process workdir. -> {name: (workdir, seconds)}."""
    base = str(tmp_path_factory.mktemp("multihost"))
    out = {"one": os.path.join(base, "one"), "two": os.path.join(base, "two"), "resumed": os.path.join(base, "resumed")}
    cmd = lambda w: ["-m", "train.spae", "--config", TINY, "--workdir", w] + [a for s in SETTINGS for a in ("--set", s)]
    t0, c0 = time.time(), _child_cpu()
    one = _launch("one", cmd(out["one"]), 1, 4, base)
    two = _launch("two", cmd(out["two"]), 2, 2, base)
    deadline = time.time() + TIMEOUT
    outs = {"one": _finish(one, deadline), "two": _finish(two, deadline)}
    t1, c1 = time.time(), _child_cpu()
    shutil.copytree(out["one"], out["resumed"], ignore=shutil.ignore_patterns("export"))
    outs["resumed"] = _finish(_launch("resumed", cmd(out["resumed"]), 2, 2, base), time.time() + TIMEOUT)
    print(f"multihost trainer runs: side by side {t1 - t0:.0f} s ({c1 - c0:.0f} s CPU), "
          f"2-process restore {time.time() - t1:.0f} s ({_child_cpu() - c1:.0f} s CPU)")
    return out, outs


@pytest.mark.fashion_mnist
def test_two_processes_train_the_one_process_parameters(runs):
    dirs, outs = runs
    a, b = _state(dirs["one"]), _state(dirs["two"])
    assert a.keys() == b.keys() and len(a) > 100
    # The gradient all-reduce adds the four devices' parts in another order over gloo than within one
    # process, so the arrays agree to float rounding, not bit for bit: 2e-5 is 2% of what one Adam
    # step at the config's learning rate (1e-3) moves a parameter; one wrong image in any batch of
    # the three steps moves them by more.
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=2e-5, err_msg=k)
    print(f"2 x 2 vs 1 x 4 devices: {len(a)} arrays, largest difference "
          f"{max(float(np.abs(b[k] - a[k]).max(initial=0)) for k in a):.2g}")
    assert _loader_state(dirs["one"]) == _loader_state(dirs["two"])        # the same place in the data
    log = lambda w: [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
    m1, m2 = log(dirs["one"]), log(dirs["two"])
    assert [r["step"] for r in m2] == [1, 2, 3]                             # written once, by process 0
    for r1, r2 in zip(m1, m2):
        np.testing.assert_allclose(r2["loss"], r1["loss"], rtol=1e-5)
    # process 0 prints the last metrics; process 1 prints nothing
    assert json.loads(outs["two"][0].strip().splitlines()[-1])["step"] == 3 and outs["two"][1].strip() == ""
    for name in ("config.json", "export/params.safetensors"):
        assert os.path.isfile(os.path.join(dirs["two"], name))
    assert not [n for n in os.listdir(dirs["two"]) if n.endswith((".tmp", ".tmp.npz"))]
    e1, e2 = _export(dirs["one"]), _export(dirs["two"])
    assert e1.keys() == e2.keys()
    for k in e1:
        np.testing.assert_allclose(e2[k], e1[k], rtol=1e-5, atol=2e-5, err_msg=k)


@pytest.mark.fashion_mnist
def test_two_processes_restore_a_one_process_checkpoint(runs):
    dirs, outs = runs
    with open(os.path.join(os.path.dirname(dirs["one"]), "resumed_0.err")) as f:
        assert "resumed from step 3" in f.read()
    e1, e2 = _export(dirs["one"]), _export(dirs["resumed"])       # the restored arrays, exported
    assert e1.keys() == e2.keys()
    for k in e1:
        np.testing.assert_array_equal(e2[k], e1[k], err_msg=k)


FEWSHOT_DRIVER = textwrap.dedent('''
    """eval.fewshot's command line with a stand-in LLM: its label scores are a hash of the whole
    prompt, so any episode scored with the wrong supports, query or labels gets other scores."""
    import sys, zlib
    import numpy as np
    from eval import fewshot

    class HashLLM:
        def encode(self, text):
            return [ord(c) for c in text]

        def score_batch(self, prefix, queries, cands):
            key = lambda *parts: zlib.crc32(np.asarray(sum(map(list, parts), []), np.int64).tobytes())
            return np.array([[-(key(prefix, q, c) % 10007) / 1000.0 for c in cands] for q in queries])

    fewshot.main(sys.argv[1:], llm=HashLLM())
''')


@pytest.mark.fashion_mnist
def test_two_processes_score_the_one_process_fewshot(runs, tmp_path):
    from visiondata import episodes as episodes_mod

    labels = np.repeat(np.arange(10), 6)     # indices 0..59 of the Fashion-MNIST test split, fake labels
    eps = episodes_mod.sample(labels, ways=3, shots=2, queries=2, n_episodes=5, seed=0)
    csv = tmp_path / "eps.csv"
    episodes_mod.write_csv(csv, eps, dataset="fashion_mnist", split="test")
    driver = tmp_path / "driver.py"
    driver.write_text(FEWSHOT_DRIVER)
    tokenizer = os.path.join(runs[0]["one"], "export")           # the random coder reads its vocabulary
    cmd = lambda out: [str(driver), "--method", "random", "--tokenizer", tokenizer, "--episodes", str(csv),
                       "--out", out, "--no-open-ended", "--calibrate", "orders"]
    # 2 devices a process, as the trainer's two-process run had: its compiled programs serve these
    one = _launch("one", cmd(str(tmp_path / "one")), 1, 2, str(tmp_path))
    two = _launch("two", cmd(str(tmp_path / "two")), 2, 2, str(tmp_path))
    deadline = time.time() + TIMEOUT
    c0 = _child_cpu()
    _finish(one, deadline)
    outs = _finish(two, deadline)
    print(f"multihost few-shot runs: {_child_cpu() - c0:.0f} s CPU")
    read = lambda d: [json.loads(l) for l in open(tmp_path / d / "results.jsonl")]
    r1, r2 = read("one"), read("two")
    assert len(r1) == 5 * 3 * 2 and r1 == r2           # every record, log-probs included, in episode order
    assert len({tuple(r["log_probs"]) for r in r1}) == len(r1)     # the stand-in scores differ per query
    s1, s2 = (json.load(open(tmp_path / d / "summary.json")) for d in ("one", "two"))
    assert (s1["processes"], s2["processes"]) == (1, 2)
    for key in ("seconds", "command", "processes"):
        s1.pop(key), s2.pop(key)
    assert s1 == s2
    assert "accuracy" in outs[0] and outs[1].strip() == ""       # process 0 reports, process 1 is silent
    assert not (tmp_path / "two" / PARTIAL).exists()


# ----------------------------------------------------------------------------- flags, in process


def test_plan_reads_flags_then_the_environment():
    assert plan(environ={}) is None                                          # one process: no initialize
    assert plan("10.0.0.1:1234", 2, 1, environ={}) == Plan("10.0.0.1:1234", 2, 1)
    env = {"JAX_COORDINATOR_ADDRESS": "h:99", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert plan(environ=env) == Plan("h:99", 4, 3)
    assert plan(process_id="0", environ=env) == Plan("h:99", 4, 0)           # a flag wins over its variable
    assert plan("auto", environ={}) == Plan(None, None, None)                # left to JAX's cluster detection
    assert plan(environ={"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}) == Plan(None, None, None)
    assert plan(environ={"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None


@pytest.mark.parametrize("given, env, message", [
    (("127.0.0.1:1234", None, None), {}, "not --num_processes or --process_id"),
    ((None, "2", "0"), {}, "not --coordinator"),
    (("127.0.0.1:1234", "2", "2"), {}, "--process_id 2 is out of range for --num_processes 2"),
    ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "5"},
     "JAX_PROCESS_ID 5 is out of range for JAX_NUM_PROCESSES 2"),
    (("127.0.0.1", "2", "0"), {}, "must be HOST:PORT"),
    (("127.0.0.1:1234", "two", "0"), {}, "--num_processes 'two' must be a whole number >= 1"),
    (("127.0.0.1:1234", "2", "-1"), {}, "--process_id '-1' must be a whole number >= 0"),
])
def test_plan_refuses_partial_or_out_of_range_settings(given, env, message):
    with pytest.raises(DistributedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(*given, environ=env)


@pytest.mark.parametrize("module, argv", [
    ("train.spae", ["--config", TINY, "--workdir", "{tmp}/w"]),
    ("eval.fewshot", ["--method", "random", "--episodes", "{tmp}/none.csv", "--out", "{tmp}/o"]),
])
@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "127.0.0.1:1234", "--num_processes", "2"], "error: a multi-process run needs"),
    (["--coordinator", "127.0.0.1:1234", "--num_processes", "2", "--process_id", "2"],
     "error: --process_id 2 is out of range for --num_processes 2"),
])
def test_bad_flags_are_one_error_line(module, argv, flags, message, tmp_path, capsys, monkeypatch):
    import importlib

    for name in distributed.ENV.values():
        monkeypatch.delenv(name, raising=False)
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as e:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv] + flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not os.path.exists(tmp_path / "w")                    # refused before any work


def test_a_process_without_its_coordinator_is_one_error():
    port = _free_port()           # nothing listens there
    with pytest.raises(DistributedError, match=f"process 1 of 2 found no coordinator at 127.0.0.1:{port}"):
        distributed.initialize_distributed(f"127.0.0.1:{port}", 2, 1, timeout_s=1)


class _Rows:
    """A stand-in sharding: each process's devices hold given row blocks of a batch."""

    def __init__(self, blocks):
        self.blocks = blocks

    def addressable_devices_indices_map(self, shape):
        return {f"d{i}": (slice(a, b),) for i, (a, b) in enumerate(self.blocks)}


def test_process_rows_join_into_the_one_process_batches():
    from visiondata.pipeline import ArrayLoader

    n, size = 50, 8
    arrays = {"image": np.arange(n * 3).reshape(n, 3), "label": np.arange(n) % 7}
    single = ArrayLoader(arrays, size, seed=3)
    # 2 processes x 2 devices, 2 rows each: process 0 holds rows 0..3, process 1 rows 4..7
    parts = [distributed.ProcessRows(arrays, ArrayLoader({"index": np.arange(n)}, size, seed=3), _Rows(blocks))
             for blocks in ([(0, 2), (2, 4)], [(4, 6), (6, 8)])]
    for step in range(15):                               # across an epoch boundary (6 batches an epoch)
        want = next(single)
        got = [next(p) for p in parts]
        for key in arrays:
            np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key], err_msg=f"step {step}")
        assert parts[0].get_state() == parts[1].get_state() == single.get_state()
    resumed = distributed.ProcessRows(arrays, ArrayLoader({"index": np.arange(n)}, size, seed=3), _Rows([(4, 8)]))
    resumed.set_state(single.get_state())               # a one-process checkpoint's position
    np.testing.assert_array_equal(next(resumed)["image"], next(single)["image"][4:])
    with pytest.raises(ValueError, match="not one block"):
        distributed.process_rows(_Rows([(0, 2), (4, 6)]), size)
