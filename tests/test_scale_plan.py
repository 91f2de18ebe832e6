"""eval.scale_plan: per-device bytes from abstract shapes and the sharding rules, checked against
hand counts; the CLI on Llama-3-8B over model=8 with an SPAE train step (compiled, never run)."""
import os
import re
import subprocess
import sys

from backbones.llm import config as llm_config
from eval import scale_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _by_name(rows):
    return {r["name"]: r for r in rows}


def test_tiny_llm_weights_equal_a_hand_count():
    cfg = llm_config.tiny()                      # V=256 D=32 L=2 H=4 K=2 E=8 F=64, tied, float32
    V, D, L, H, K, E, F = 256, 32, 2, 4, 2, 8, 64
    w = _by_name(scale_plan.llm_weights(cfg, scale_plan.abstract_mesh(1, 2), "float32"))
    assert w["embed"]["total"] == V * D * 4 and w["embed"]["per_device"] == V * D * 4 // 2
    assert w["wq"]["per_device"] == L * D * H * E * 4 // 2
    assert w["wk"]["per_device"] == L * D * K * E * 4 // 2
    assert w["w_down"]["per_device"] == L * F * D * 4 // 2
    assert w["attn_norm"]["per_device"] == w["attn_norm"]["total"] == L * D * 4
    assert "head" not in w                        # tied: the table is the head
    w4 = _by_name(scale_plan.llm_weights(cfg, scale_plan.abstract_mesh(1, 4), "bfloat16"))
    assert w4["wk"]["per_device"] == L * D * K * E * 2            # K=2 on model=4 stays whole
    assert w4["embed"]["per_device"] == V * D * 2 // 4


def test_kv_cache_and_codebook_equal_a_hand_count():
    cfg = llm_config.tiny()
    kv = scale_plan.kv_cache(cfg, scale_plan.abstract_mesh(2, 2), batch=4, slots=16, dtype="float32")
    k = 2 * 4 * 16 * 2 * 8 * 4                   # (L, B, S, K, E) float32
    assert kv["total"] == 2 * k + 4 * 16 and kv["per_device"] == 2 * k // 4 + 4 * 16 // 2
    p = scale_plan.plan(cfg, (1, 4), spae=os.path.join(ROOT, "train/configs/spae_tiny.py"), codebook_rows=510,
                        kv_batch=0, step=False)
    rows = {r["item"].split(" (")[0]: r for r in p["rows"]}
    assert rows["SPAE codebook"]["total"] == 510 * 32 * 4
    assert rows["SPAE codebook"]["per_device"] == 128 * 32 * 4    # 510 rows padded to 512, split 4 ways
    assert rows["SPAE batch"]["total"] == 8 * 16 * 16 * 1 + 2 * 8 * 8 * 4     # images + sem_ids/prob (k=8)
    assert p["per_device"] == sum(r["per_device"] for r in p["rows"])


def test_llama3_8b_weights_split_eight_ways_except_the_norms():
    p = scale_plan.plan("llama3-8b", (1, 8), kv_batch=0)
    assert p["dtype"] == "bfloat16"
    w = _by_name(p["weights"])
    n_params = sum(r["total"] for r in p["weights"]) // 2
    assert n_params == 8_030_261_248                 # Llama-3-8B's published count
    norms = sum(r["total"] for n, r in w.items() if n.endswith("norm"))
    assert p["per_device"] == (2 * n_params - norms) // 8 + norms


def test_cli_llama3_8b_with_an_spae_step_on_model_8(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "eval.scale_plan", "--llm", "llama3-8b", "--mesh", "data=1,model=8",
                           "--spae", "train/configs/spae_photos64.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"LLM weights \(8\.03 B params, bf16\)\s+16\.06 GB\s+2\.01 GB", out), out
    step = re.search(r"SPAE step temporaries.*?-\s+([\d.]+) (GB|MB)", out)
    assert step and float(step.group(1)) > 0, out
    verdict = re.search(r"verdict: fits 8 devices of 16 GB: (yes|no) \(([\d.]+) GB per device", out)
    assert verdict, out
    assert verdict.group(1) == ("yes" if float(verdict.group(2)) <= 16 else "no")


def test_bad_llm_name_is_one_error_line():
    proc = subprocess.run([sys.executable, "-m", "eval.scale_plan", "--llm", "llama9-1t"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 2 and proc.stderr.startswith("error: --llm 'llama9-1t' is neither")
