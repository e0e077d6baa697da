"""Decode throughput: the cached sampler vs a naive no-cache decode loop.

For each model preset, samples ``--new_tokens`` tokens for ``--batch`` prompts of
``--prompt_len`` tokens twice:

* ``cached``: ``jaxsi.sampling.sample`` (prefill + ``lax.while_loop`` decode
  over the functional KV cache), with ``stop_ids=()`` so every row decodes the
  full budget;
* ``naive``: one jitted ``fori_loop`` that re-runs the full uncached forward
  pass over the whole padded ``[B, prompt_len + new_tokens]`` buffer at every
  step and reads the logits of the last written column.

Both use greedy decoding, so their tokens must agree (checked, up to float
near-ties). Times exclude compilation (reported separately: the cached
sampler's first call minus a warm call, the naive loop's AOT compile) and are
the median of ``--repeats`` warm runs (``--naive_repeats`` for the naive loop,
which is slow).

Example::

  python benchmarks/sampler.py --presets tiny,small --batch 64 \
      --prompt_len 32 --new_tokens 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.sampling import buckets
from jaxsi.sampling import sampler
from jaxsi.sampling import strategies
from jaxsi.trajectory import positions_from_mask


def _naive_decode(model, gen_length: int):
  """A jitted full-recompute greedy decoder over a padded token buffer."""

  @jax.jit
  def decode(params, prompt_tokens, prompt_mask):
    b, p = prompt_tokens.shape
    tokens = jnp.concatenate(
        [prompt_tokens, jnp.zeros((b, gen_length), jnp.int32)], axis=1)
    mask = jnp.concatenate([prompt_mask, jnp.zeros((b, gen_length), bool)], 1)

    def body(step, carry):
      tokens, mask = carry
      hidden, _ = model.apply(params, tokens, positions_from_mask(mask),
                              input_mask=mask, return_hidden=True)
      last = jax.lax.dynamic_index_in_dim(hidden, p + step - 1, axis=1,
                                          keepdims=False)
      nxt = jnp.argmax(model.logits(params, last), axis=-1).astype(jnp.int32)
      tokens = jax.lax.dynamic_update_index_in_dim(tokens, nxt, p + step, axis=1)
      mask = jax.lax.dynamic_update_index_in_dim(
          mask, jnp.ones((b,), bool), p + step, axis=1)
      return tokens, mask

    tokens, _ = jax.lax.fori_loop(0, gen_length, body, (tokens, mask))
    return tokens[:, p:]

  return decode


def _median_time(fn, repeats: int):
  """(median seconds of ``repeats`` runs, last output)."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def _timed(fn, repeats: int):
  """(first-call seconds incl. compile, median of ``repeats`` later runs, out)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  return (first,) + _median_time(fn, repeats)


def run(preset: str, *, batch: int, prompt_len: int, new_tokens: int,
        repeats: int, naive_repeats: int, seed: int):
  """Benchmarks one preset; returns table rows."""
  cfg = mcfg.get_config(preset)
  model, params = mmodel.init(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  # Prompts of varied length up to prompt_len (left-padded to prompt_len).
  lengths = rng.integers(prompt_len // 2, prompt_len + 1, size=batch)
  lengths[0] = prompt_len
  prompts = [rng.integers(1, cfg.vocab_size, size=int(n)).tolist()
             for n in lengths]

  def cached():
    return sampler.sample(
        model, params, prompts, rng=jax.random.key(seed),
        strategy=strategies.Greedy(), max_new_tokens=new_tokens, stop_ids=(),
        prompt_buckets=(prompt_len,)).tokens

  tokens, mask = buckets.left_pad(prompts, length=prompt_len, pad_id=0)
  t0 = time.perf_counter()
  naive_fn = _naive_decode(model, new_tokens).lower(params, tokens, mask).compile()
  n_compile = time.perf_counter() - t0

  def naive():
    return naive_fn(params, tokens, mask)

  rows = []
  c_first, c_time, c_out = _timed(cached, repeats)
  n_time, n_out = _median_time(naive, naive_repeats)
  agree = float(np.mean(np.asarray(c_out)[:, prompt_len:] == np.asarray(n_out)))
  total = batch * new_tokens
  for name, compile_s, t in (("cached", c_first - c_time, c_time),
                             ("naive", n_compile, n_time)):
    rows.append(dict(preset=preset, params=mcfg.num_params(cfg), method=name,
                     compile_s=compile_s, run_s=t, tok_s=total / t,
                     speedup=n_time / t, agree=agree))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default="tiny,small")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--naive_repeats", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  print(f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({jax.device_count()} device(s)); batch={args.batch} "
        f"prompt_len={args.prompt_len} new_tokens={args.new_tokens}")
  header = (f"{'preset':<8} {'params':>9} {'method':<7} {'compile s':>9} "
            f"{'run s':>8} {'tokens/s':>10} {'vs naive':>8} {'agree':>6}")
  print(header)
  print("-" * len(header))
  for preset in args.presets.split(","):
    for row in run(preset.strip(), batch=args.batch, prompt_len=args.prompt_len,
                   new_tokens=args.new_tokens, repeats=args.repeats,
                   naive_repeats=args.naive_repeats, seed=args.seed):
      print(f"{row['preset']:<8} {row['params']:>9,} {row['method']:<7} "
            f"{row['compile_s']:>9.2f} {row['run_s']:>8.3f} {row['tok_s']:>10.0f} "
            f"{row['speedup']:>7.1f}x {row['agree']:>6.3f}", flush=True)


if __name__ == "__main__":
  main()
