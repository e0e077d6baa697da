"""Shared tiny set-up for the RL loop and method tests (one compile per shape).

A 1-layer, d=32 decoder with a value head (so every method, PPO included,
shares one sampler compilation), a 19-token character vocabulary, 1-digit
addition prompts and an easy reward ("the completion starts with a digit",
≈ 50% at random init, so groups have reward variance).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.models import model as mmodel
from jaxsi.training import optimizer as opt_lib

N = 4                # samples per prompt
PROMPTS = 4          # prompts per step  (B = 16)
MAX_NEW = 3


def first_is_digit(tasks, completions):
  """1.0 when the completion starts with a digit."""
  del tasks
  return np.asarray([1.0 if c[:1].isdigit() else 0.0 for c in completions],
                    np.float32)


def starts_with_one(tasks, completions):
  """1.0 when the completion starts with '1' (rare at random init)."""
  del tasks
  return np.asarray([1.0 if c.startswith("1") else 0.0 for c in completions],
                    np.float32)


@functools.lru_cache(maxsize=None)
def setup():
  """(tokenizer, model, params, tasks, optimizer), built once per process."""
  tok = char_tokenizer.CharTokenizer(alphabet="0123456789+=")
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32,
                        n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                        d_ff=64, value_head=True)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tasks = tasks_lib.make_tasks("addition", 16, difficulty=1, seed=0)
  opt = opt_lib.make_optimizer(learning_rate=1e-2, schedule="constant",
                               max_grad_norm=1.0)
  return tok, model, params, tasks, opt


def perturbed(params, scale: float = 0.05, seed: int = 1):
  """A different parameter set near ``params`` (reference / teacher)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [
      x + scale * jax.random.normal(k, x.shape, x.dtype)
      for x, k in zip(leaves, keys)])


@functools.lru_cache(maxsize=None)
def _logprobs_jit(model):
  return jax.jit(lambda p, tok, pos, mask: logprobs_lib.token_logprobs(
      model, p, tok, pos, input_mask=mask)[0])


def policy_logprobs(model, params, traj) -> np.ndarray:
  """f64[B, T] log-probs of ``traj`` under ``params`` (temperature 1)."""
  out = _logprobs_jit(model)(params, traj.tokens, traj.positions,
                             traj.input_mask)
  return np.asarray(out, np.float64)


def host_params(params):
  """A host copy (the trainer donates its state)."""
  return jax.tree.map(lambda x: np.array(x, copy=True), params)


# ------------------------------------------------- numpy reference pieces
def group_std_adv(r: np.ndarray, n: int, *, scale: bool, eps: float = 1e-4):
  g = r.reshape(-1, n)
  mean = g.mean(axis=1, keepdims=True)
  adv = g - mean
  if scale:
    std = g.std(axis=1, ddof=1, keepdims=True)
    adv = adv / (std + eps)
  return adv.reshape(-1)


def zero_variance_rows(r: np.ndarray, n: int) -> np.ndarray:
  g = r.reshape(-1, n)
  return np.repeat(g.max(axis=1) == g.min(axis=1), n)


def agg(loss_bt, mask, mode, *, max_len=None):
  """Reference aggregation over rows that have ``mask`` (valid rows)."""
  m = mask.astype(np.float64)
  rows = m.any(axis=1)
  nseq = max(rows.sum(), 1)
  if mode == "token-mean":
    return (loss_bt * m).sum() / max(m.sum(), 1)
  if mode == "seq-mean-token-mean":
    return ((loss_bt * m).sum(1) / np.maximum(m.sum(1), 1)).sum() / nseq
  if mode == "seq-mean-token-sum-norm":
    return (loss_bt * m).sum() / (nseq * max_len)
  raise ValueError(mode)


def ppo_clip(ratio, adv, lo, hi):
  return np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - lo, 1 + hi))


@functools.lru_cache(maxsize=None)
def _logits_jit(model):
  return jax.jit(lambda p, traj: logprobs_lib.score_fn(model, with_logits=True)(
      p, traj).logits)


def policy_logits(model, params, traj) -> np.ndarray:
  """f64[B, T, V] logits of ``traj`` under ``params`` ([b, t] predicts token t)."""
  return np.asarray(_logits_jit(model)(params, traj), np.float64)
