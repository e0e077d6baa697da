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

from jaxsi.data import char_tokenizer
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.sampling import strategies
from jaxsi.sampling import test_time as tt
from jaxsi.training import rl_run

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
ALPHABET = "0123456789+="


def warm_start(*, seed: int, n_train: int = 2000, n_test: int = 256,
               sft_steps: int = 300, sft_lr: float = 3e-3, d_model: int = 64,
               layers: int = 2):
  """The bench's generator: a tiny decoder SFT'd on the labelled half of
  2-digit addition (answers reversed).

  Returns:
    ``(tokenizer, model, warm params, labeled, unlabeled, test)``.
  """
  tok = char_tokenizer.CharTokenizer(alphabet="0123456789+=")
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=[DIGITS], n_train=n_train, n_test=n_test,
      labeled_fraction=0.5, seed=seed, task_format={"reverse": True})
  d = d_model
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d,
                        n_layers=layers, n_heads=4, n_kv_heads=2,
                        head_dim=d // 4, d_ff=4 * d)
  model, params = mmodel.init(cfg, jax.random.key(seed))
  warm = rl_run.supervised(model=model, params=params, tokenizer=tok,
                           prompts=[t.prompt for t in labeled],
                           targets=[t.target for t in labeled],
                           steps=sft_steps, learning_rate=sft_lr, seed=seed)
  return tok, model, warm, labeled, unlabeled, test


def main(argv):
  del argv
  tok, model, warm, _, _, test = warm_start(
      seed=_SEED.value, n_train=_N_TRAIN.value, n_test=_N_TEST.value,
      sft_steps=_SFT_STEPS.value, sft_lr=_SFT_LR.value, d_model=_D_MODEL.value,
      layers=_LAYERS.value)
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
