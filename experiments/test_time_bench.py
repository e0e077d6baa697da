r"""Bench: test-time selection at equal tokens on the SFT warm start (CPU-sized).

SFT a tiny decoder on the labelled half of 2-digit addition (answers least
significant digit first), draw N = ``--n`` samples per held-out problem in
one batched generation, and compare the selectors of
``jaxsi.sampling.test_time`` (first sample = random choice, self-consistency,
self-certainty best-of-N and Borda voting, likelihood best-of-N, the oracle
pass@k) for every k in ``--ks``, with the tokens generated per problem.
Writes a markdown table and a PNG of accuracy versus tokens.

Command::

  python experiments/test_time_bench.py --n=16 --ks=1,2,4,8,16 --out=/tmp/tt.md

Numbers from a loaded machine are not results: report ``uptime`` with them.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import jax

from jaxsi.sampling import strategies
from jaxsi.sampling import test_time as tt

import _warm_start  # pylint: disable=g-bad-import-order  (sibling module)

_N = flags.DEFINE_integer("n", 16, "Samples per problem (one generation).")
_KS = flags.DEFINE_list("ks", ["1", "2", "4", "8", "16"], "Budgets k <= n.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 256, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_SEED = flags.DEFINE_integer("seed", 0, "Data / model / sampling seed.")
_OUT = flags.DEFINE_string("out", "/tmp/test_time_bench.md", "Markdown output"
                           " (the PNG and JSON go next to it).")

DIGITS = 2
MAX_NEW = DIGITS + 2


def main(argv):
  del argv
  ws = _warm_start.addition_warm_start(
      seed=_SEED.value, digits=(DIGITS,), n_train=_N_TRAIN.value,
      n_test=_N_TEST.value, sft_steps=_SFT_STEPS.value, sft_lr=_SFT_LR.value,
      d_model=_D_MODEL.value, layers=_LAYERS.value)
  tok, model, warm, test = ws.tokenizer, ws.model, ws.params, ws.test
  cands = tt.generate(model, warm, tok, test, n=_N.value, max_new_tokens=MAX_NEW,
                      strategy=strategies.Sampling(temperature=_TEMPERATURE.value),
                      rng=jax.random.key(_SEED.value + 11),
                      score_temperature=_TEMPERATURE.value)
  ks = [int(k) for k in _KS.value if int(k) <= _N.value]
  rows = tt.sweep(cands, ks=ks)
  text = (f"Held-out {DIGITS}-digit addition, {len(test)} problems, N = {_N.value}"
          f" samples at T = {_TEMPERATURE.value} in one generation"
          f" ({cands.seconds:.1f}s incl. scoring).\n\n" + tt.markdown(rows))
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  tt.plot(rows, _OUT.value + ".png", title=f"addition d={DIGITS}")
  with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)


if __name__ == "__main__":
  app.run(main)
