r"""The SFT warm start the label-free and test-time benches share.

One tiny decoder (``tiny`` config, GQA 4/2 heads, d_ff = 4·d) on the
character tokenizer ``0123456789+=``, SFT on the labelled half of an
addition split (answers least-significant digit first,
``rl_run.split_tasks`` with ``task_format={"reverse": True}``). The benches
used to repeat these ~12 lines; they import this as a sibling module (the
scripts run as ``python experiments/NAME.py``, so ``experiments/`` is on
``sys.path``).

Everything is deterministic in ``seed``: the split, the init and the SFT
batches.
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

ALPHABET = "0123456789+="


@dataclasses.dataclass
class WarmStart:
  """A warm-started tiny model with its data split.

  Attributes:
    tokenizer, config, model: the char tokenizer, model config and module.
    init: the random-init params; params: after SFT on ``labeled``.
    labeled, unlabeled, test: the disjoint task lists of ``split_tasks``.
    max_new_tokens: answer digits (+ carry) + EOS for the largest level.
    seconds: wall time of the SFT.
  """

  tokenizer: Any
  config: Any
  model: Any
  init: Any
  params: Any
  labeled: list
  unlabeled: list
  test: list
  max_new_tokens: int
  seconds: float


def addition_warm_start(*, seed: int, digits: Sequence[int] = (2,),
                        n_train: int = 2000, n_test: int = 256,
                        sft_steps: int = 300, sft_lr: float = 3e-3,
                        d_model: int = 64, layers: int = 2,
                        labeled_fraction: float = 0.5,
                        alphabet: Optional[str] = ALPHABET) -> WarmStart:
  """Splits ``digits``-digit additions and SFTs a tiny model on the labels.

  Args:
    seed: data, init and SFT seed.
    digits: difficulty levels (digits per operand), drawn uniformly per task.
    n_train, n_test: training (labelled + unlabelled) and held-out problems.
    sft_steps, sft_lr: the warm start's SFT steps and learning rate.
    d_model, layers: model width (a multiple of 4) and decoder layers.
    labeled_fraction: the labelled share of the training problems.
    alphabet: the tokenizer's alphabet (None: ``CharTokenizer``'s full
      default, needed for text such as a " wait " trigger).

  Returns:
    The :class:`WarmStart`.
  """
  digits = [int(x) for x in digits]
  if not digits or min(digits) < 1:
    raise ValueError(f"addition_warm_start: digits must be non-empty levels"
                     f" >= 1, got {digits!r}")
  if d_model % 4:
    raise ValueError(f"addition_warm_start: d_model must be a multiple of 4"
                     f" (4 heads), got {d_model}")
  tok = char_tokenizer.CharTokenizer(alphabet=alphabet)
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=digits, n_train=n_train, n_test=n_test,
      labeled_fraction=labeled_fraction, seed=seed,
      task_format={"reverse": True})
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d_model,
                        n_layers=layers, n_heads=4, n_kv_heads=2,
                        head_dim=d_model // 4, d_ff=4 * d_model)
  model, init = mmodel.init(cfg, jax.random.key(seed))
  t0 = time.perf_counter()
  params = rl_run.supervised(model=model, params=init, tokenizer=tok,
                             prompts=[t.prompt for t in labeled],
                             targets=[t.target for t in labeled],
                             steps=sft_steps, learning_rate=sft_lr, seed=seed)
  return WarmStart(tokenizer=tok, config=cfg, model=model, init=init,
                   params=params, labeled=labeled, unlabeled=unlabeled,
                   test=test, max_new_tokens=max(digits) + 2,
                   seconds=time.perf_counter() - t0)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof = 1; 0 for one value)."""
  vals = [float(v) for v in values]
  if not vals:
    raise ValueError("mean_std: no values")
  m = sum(vals) / len(vals)
  if len(vals) == 1:
    return m, 0.0
  var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
  return m, var ** 0.5


def fmt_ms(values: Sequence[float], fmt: str = "{:.3f}") -> str:
  """``mean ± std`` of ``values`` (see :func:`mean_std`)."""
  m, s = mean_std(values)
  return f"{fmt.format(m)} ± {fmt.format(s)}"
