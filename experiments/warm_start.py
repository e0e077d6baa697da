r"""The CPU-sized SFT warm start shared by the test-time benches.

A tiny decoder SFT'd on the labelled half of D-digit addition (answers least
significant digit first, ``rl_run.split_tasks``), as in
``experiments/test_time_bench.py`` and ``experiments/deepening_bench.py``:
``seed`` fixes the task split, the init and the SFT batches.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax

from jaxsi.data import char_tokenizer
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import rl_run


@dataclasses.dataclass
class WarmStart:
  """A warm-started model and its tasks.

  Attributes:
    tokenizer: the character tokenizer.
    model: the static Model.
    params: the SFT params.
    labeled, unlabeled, test: the task split (SFT on ``labeled``).
    seconds: wall time of the SFT.
  """

  tokenizer: Any
  model: Any
  params: Any
  labeled: Sequence[Any]
  unlabeled: Sequence[Any]
  test: Sequence[Any]
  seconds: float


def addition(*, digits: int = 2, n_train: int = 2000, n_test: int = 256,
             sft_steps: int = 300, sft_lr: float = 3e-3, d_model: int = 64,
             layers: int = 2, seed: int = 0,
             alphabet: Optional[str] = "0123456789+=") -> WarmStart:
  """SFT warm start on ``digits``-digit addition.

  Args:
    digits: addition difficulty.
    n_train: training problems (half labelled).
    n_test: held-out problems.
    sft_steps: SFT steps (``rl_run.supervised``).
    sft_lr: SFT learning rate.
    d_model: model width (4 heads of d_model // 4, d_ff = 4 d_model).
    layers: decoder layers.
    seed: split, init and SFT seed.
    alphabet: the tokenizer's alphabet (None: ``CharTokenizer``'s default,
      needed for text such as a " wait " trigger).

  Returns:
    The WarmStart.
  """
  tok = char_tokenizer.CharTokenizer(alphabet=alphabet)
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=[digits], n_train=n_train, n_test=n_test,
      labeled_fraction=0.5, seed=seed, task_format={"reverse": True})
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d_model,
                        n_layers=layers, n_heads=4, n_kv_heads=2,
                        head_dim=d_model // 4, d_ff=4 * d_model)
  model, params = mmodel.init(cfg, jax.random.key(seed))
  t0 = time.perf_counter()
  warm = rl_run.supervised(model=model, params=params, tokenizer=tok,
                           prompts=[t.prompt for t in labeled],
                           targets=[t.target for t in labeled],
                           steps=sft_steps, learning_rate=sft_lr, seed=seed)
  return WarmStart(tokenizer=tok, model=model, params=warm, labeled=labeled,
                   unlabeled=unlabeled, test=test,
                   seconds=time.perf_counter() - t0)
