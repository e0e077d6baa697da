"""A host-only stand-in for the round context of the judging methods' tests.

``FakeCtx.sample`` answers every task from a rule on its prompt and
``FakeCtx.continue_samples`` from a per-call rule, so the grouping of k
judgments, the cache reuse and the meta-judge's position swap are checked
by hand without a model (the end-to-end tests run the real context).
"""

import types

import jax

from jaxsi.data import char_tokenizer


class FakeSamples:
  """Samples with a 'KV cache' (``caches`` / ``cache_params`` markers)."""

  def __init__(self, texts):
    self.texts = list(texts)
    self.caches, self.cache_params = ["cache"], "params"


class FakeCtx:
  """``sample``: ``answer(prompt, m)`` for the m-th of n samples of each task;
  ``continue_samples``: ``cont(j, i)`` for call j, sample i (asserts the cache
  is there, then drops it like the real context)."""

  def __init__(self, answer=None, cont=None, max_new_tokens=4, rollout_batch=256):
    self.rng = jax.random.key(0)
    self.generated = []
    self.sample_calls, self.cont_calls = [], []
    self.answer = answer or (lambda prompt, m: str(m + 1))
    self.cont = cont
    self.config = types.SimpleNamespace(max_new_tokens=max_new_tokens, seed=0,
                                         rollout_batch=rollout_batch)
    self.tokenizer = char_tokenizer.CharTokenizer()

  def sample(self, tasks, *, n=1, temperature=0.0, strategy=None, params=None, rng=None,
             **kw):
    del params, rng, kw
    self.sample_calls.append((len(tasks), n, temperature, type(strategy).__name__))
    out = types.SimpleNamespace(texts=[self.answer(t.prompt, m) for t in tasks
                                       for m in range(n)], n=n)
    self.generated.append(out)
    return out

  def continue_samples(self, samples, suffix, *, params=None, strategy=None, rng=None):
    del params, rng
    assert samples.caches == ["cache"], "the caches must be restored for every call"
    j = len(self.cont_calls)
    self.cont_calls.append((suffix, type(strategy).__name__))
    samples.caches = samples.cache_params = None
    return [self.cont(j, i) for i in range(len(samples.texts))]
