"""benchmarks/roofline.py: hand-computed analytic counts and bounds, and the
1-and-2-layer extrapolation against a full-depth compile."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import roofline  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top,wrong-import-position

W = roofline.Workload(prompts=2, n=2, prompt_len=4, gen_len=4, minibatches=2)


def test_analytic_tiny_by_hand():
  cfg = mcfg.get_config("tiny")  # V=64 D=128 L=4 H=4 Hkv=2 Dh=32 F=384, f32
  a = roofline.analytic(cfg, W)
  # N_matmul = 4·(128·128 + 2·128·64 + 128·128 + 3·128·384) + 128·64 = 794,624.
  # decode: B=4 rows × (2·N_matmul + 4·L·H·Dh·1·S) with S = 8.
  assert a["decode"]["flops"] == 4 * (2 * 794_624 + 4 * 4 * 4 * 32 * 8)
  # bytes: 795,776 f32 params + k and v of [L=4, B=4, S=8, Hkv=2, Dh=32] f32.
  assert a["params_bytes"] == 795_776 * 4
  assert a["kv_cache_bytes"] == 2 * 4 * 4 * 8 * 2 * 32 * 4
  assert a["decode"]["bytes"] == 3_183_104 + 65_536
  # Floors: W + A(n) with A(n) = 2·L·n·D f32 activations (+ the KV written).
  w_bytes, act = 795_776 * 4, lambda n: 2 * 4 * n * 128 * 4
  assert a["rescore"]["bytes"] == w_bytes + act(4 * 8)
  assert a["prefill"]["bytes"] == w_bytes + act(2 * 4) + 2 * 4 * 8 * 2 * 32 * 4
  assert a["update"]["bytes"] == 10 * w_bytes + 2 * act(2 * 8)
  # prefill: R=2 rows × (2·N·P + 4·L·H·Dh·P·S).
  assert a["prefill"]["flops"] == 2 * (2 * 794_624 * 4 + 4 * 4 * 4 * 32 * 4 * 8)
  # update: 3 × forward over one minibatch of B/2 = 2 rows of S = 8.
  assert a["update"]["flops"] == 3 * 2 * (2 * 794_624 * 8 + 4 * 4 * 4 * 32 * 64)
  assert roofline.iteration_counts(W) == {
      "prefill": 1, "decode": 4, "rescore": 1, "update": 2}


def test_bounds_by_hand():
  chip = dict(flops=1e15, hbm=1e12)
  b = roofline.bounds(2e12, 1e9, chip)  # 2 ms compute vs 1 ms memory
  assert b["bound"] == "compute" and b["t_s"] == pytest.approx(2e-3)
  assert b["mfu_bound"] == pytest.approx(1.0) and b["intensity"] == 2000
  b = roofline.bounds(1e12, 4e9, chip)  # 1 ms compute vs 4 ms memory
  assert b["bound"] == "memory" and b["t_s"] == pytest.approx(4e-3)
  assert b["mfu_bound"] == pytest.approx(0.25)


def test_layer_extrapolation_matches_full_compile():
  cfg = mcfg.get_config("tiny", n_layers=3)
  steps = ("decode", "rescore")
  extrapolated = roofline.xla_costs(cfg, W, steps=steps, log=lambda s: None)
  exact = roofline.xla_costs(cfg, W, exact=True, steps=steps, log=lambda s: None)
  for step in steps:
    assert extrapolated[step]["flops"] == pytest.approx(exact[step]["flops"],
                                                        rel=1e-4)
    assert extrapolated[step]["bytes"] == pytest.approx(exact[step]["bytes"],
                                                        rel=0.05)
  # XLA counts what the analytic model counts, plus norms/softmax/RoPE.
  a = roofline.analytic(cfg, W)
  assert 1.0 <= exact["rescore"]["flops"] / a["rescore"]["flops"] < 1.2
