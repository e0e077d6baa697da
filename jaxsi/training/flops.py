"""FLOP accounting: analytic decoder FLOPs, XLA cost analysis, matmul peak, MFU.

Analytic count (PaLM, Chowdhery et al. 2022, App. B): a training step
(forward + backward) costs per token

    6 · N_matmul + 12 · L · H · Dh · T

where N_matmul is the number of parameters that take part in matmuls
(attention and MLP projections, the unembedding and a value head; the input
embedding is a gather, norms are elementwise), L layers, H query heads of
width Dh and T the sequence length. The attention term counts the full T×T
score and value matmuls (no causal discount), as PaLM does. A forward pass
alone is one third of it.

``xla_flops`` reads the compiled program's own count
(``compiled.cost_analysis()['flops']``) — it includes everything XLA emits
(softmax, norms, optimizer) and the causal waste, so it is usually a little
higher than the analytic count; reporting both is the honest thing.

``measure_matmul_peak`` times a large f32 matmul on the local device as the
achievable peak; MFU = achieved FLOP/s / peak.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp


def matmul_params(config: Any) -> int:
  """N_matmul of a jaxsi ModelConfig (parameters used in matmuls per token)."""
  c = config
  d, h, kv, dh, f = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff
  per_layer = d * h * dh + 2 * d * kv * dh + h * dh * d + 3 * d * f
  n = c.n_layers * per_layer + d * c.vocab_size  # + unembedding (tied or not)
  if getattr(c, "value_head", False):
    n += d
  return int(n)


def train_flops_per_token(config: Any, *, seq_len: int) -> float:
  """6·N_matmul + 12·L·H·Dh·T training FLOPs per token (see module doc)."""
  c = config
  return float(6 * matmul_params(c) + 12 * c.n_layers * c.n_heads * c.head_dim * seq_len)


def train_step_flops(config: Any, *, batch_size: int, seq_len: int) -> float:
  """Analytic FLOPs of one forward+backward over a [batch_size, seq_len] batch."""
  return train_flops_per_token(config, seq_len=seq_len) * batch_size * seq_len


def forward_flops(config: Any, *, batch_size: int, seq_len: int) -> float:
  """Analytic FLOPs of a forward pass (one third of the training count)."""
  return train_step_flops(config, batch_size=batch_size, seq_len=seq_len) / 3.0


def xla_flops(fn: Callable, *args, **kwargs) -> Optional[float]:
  """FLOPs XLA reports for ``jax.jit(fn)(*args)`` (None if unavailable).

  ``fn`` may already be jitted. Only lowers and compiles; nothing runs.
  """
  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled_flops(compiled)


def compiled_flops(compiled: Any) -> Optional[float]:
  """``cost_analysis()['flops']`` of a compiled executable, or None."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  flops = float(cost["flops"])
  return flops if flops > 0 else None


def measure_matmul_peak(*, n: int = 2048, dtype: Any = jnp.float32,
                        repeats: int = 5, device: Optional[jax.Device] = None
                        ) -> float:
  """Achievable matmul throughput of this machine in GFLOP/s.

  Times ``A @ B`` for n×n matrices (2n³ FLOPs) after a warm-up, best of
  ``repeats`` (the best run is the least disturbed by other processes).

  Args:
    n: matrix size.
    dtype: element type (f32 matches the models' CPU dtype).
    repeats: timed runs.
    device: device to run on (default: the first device).

  Returns:
    GFLOP/s of the fastest run.
  """
  device = jax.devices()[0] if device is None else device
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(ka, (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(kb, (n, n), dtype), device)
  mm = jax.jit(jnp.matmul)
  mm(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    mm(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best / 1e9


def mfu(*, flops_per_step: float, step_time_s: float, peak_gflops: float) -> float:
  """Model FLOPs utilisation = (flops_per_step / step_time) / peak."""
  if step_time_s <= 0 or peak_gflops <= 0:
    raise ValueError(f"mfu: step_time_s={step_time_s}, peak_gflops={peak_gflops} must be > 0")
  return flops_per_step / step_time_s / (peak_gflops * 1e9)
