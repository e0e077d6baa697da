r"""The ``reward_model`` role of an RL run: trained on the warm start's own ranked samples.

Self-motivated Learning (Feng et al. 2024, "Improving Language Model
Reasoning with Self-motivated Learning", arXiv:2404.07017, §3): the model
generates several rationales per question of a dataset *with answers*;
their rank comes from the correctness of the answer each leads to; a reward
model is trained on those ranks (pairwise), and RL (PPO) then optimises the
generator against it. Here, for ``rl_run.run`` (the only new code is the
glue; every piece is ``training.reward_model``):

1. ``n`` samples per labelled problem (the warm start's split, whose answers
   are known) from the warm-started policy (``test_time.generate``);
2. ranked by the verifier: correct ≻ wrong pairs of one problem
   (``reward_model.training_data('bradley_terry')``; ``'pointwise'``:
   regression on the 0/1 grade);
3. the RM (the policy's backbone, a fresh value head: ``reward_model
   .init_from``) is trained by ``fit`` (``reward_model.train``) and saved in
   ``workdir/reward_model`` (a resumed run loads it).

:func:`heldout_report` measures reward hacking: the RM's mean score of a
policy's samples of held-out problems against their verifier accuracy, and
the RM's within-problem pair accuracy (correct vs wrong samples of one
problem, ties ½: ``self_training_common.pair_ranking_accuracy``).

GK: the paper ranks rationales by answer correctness into pairs and trains
a pairwise ranking RM (checked against the abstract and the seed catalog,
``catalog_03.md`` [26]; the paper's exact pair construction, e.g. pairs
between several correct rationales ranked by other cues, is not checked and
not implemented: only correct ≻ wrong).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np

from jaxsi.methods import self_training_common as common
from jaxsi.sampling import strategies
from jaxsi.sampling import test_time
from jaxsi.training import reward_model as rm


@dataclasses.dataclass(frozen=True)
class RewardModelSpec:
  """How the run's reward model is trained (gin: ``rl_run.run.reward_model``).

  Attributes:
    kind: ``'bradley_terry'`` (pairs, Self-motivated Learning) or
      ``'pointwise'`` (regression on the grade).
    problems: labelled problems sampled for its data (at most; the
      labelled split's first ones).
    n: samples per problem.
    temperature: their sampling temperature.
    steps, learning_rate, batch_size: the RM's fit.
    max_pairs_per_problem: BT pairs per problem.
  """

  kind: str = "bradley_terry"
  problems: int = 512
  n: int = 8
  temperature: float = 1.0
  steps: int = 300
  learning_rate: float = 1e-3
  batch_size: int = 64
  max_pairs_per_problem: int = 4

  def __post_init__(self):
    where = "rl_run.run.reward_model"
    if self.kind not in rm.KINDS:
      raise ValueError(f"{where}.kind must be one of {rm.KINDS}, got {self.kind!r}")
    for name in ("problems", "n", "steps", "batch_size", "max_pairs_per_problem"):
      v = getattr(self, name)
      if int(v) != v or v < 1:
        raise ValueError(f"{where}.{name} must be an integer >= 1, got {v!r}")
    if self.kind == "bradley_terry" and self.n < 2:
      raise ValueError(f"{where}.n must be >= 2 for Bradley-Terry pairs, got {self.n}")
    if not self.temperature > 0 or not self.learning_rate > 0:
      raise ValueError(f"{where}: temperature and learning_rate must be > 0, got"
                       f" {self.temperature!r}, {self.learning_rate!r}")


def build(spec: RewardModelSpec, *, model: Any, params: Any, tokenizer: Any,
          tasks: Sequence[Any], max_new_tokens: int, seed: int, directory: str
          ) -> tuple[Any, Any, dict]:
  """``(rm model, rm params, info)``: loaded from ``directory`` or trained there.

  Args:
    spec: the training settings.
    model, params: the warm-started generator (samples and RM backbone).
    tokenizer: the tokenizer.
    tasks: labelled problems (their verifier ranks the samples).
    max_new_tokens: the sample budget (the run's).
    seed: sampling, head init and fit seed.
    directory: where the RM is saved (``reward_model.save``).

  Returns:
    The RM, its params and ``info`` (samples, their accuracy, pairs or
    rows, final loss, whether it was restored).

  Raises:
    ValueError: no tasks, or (BT) no problem with both a correct and a wrong
      sample (``reward_model.training_data``).
  """
  if os.path.exists(os.path.join(directory, rm.META_FILE)):
    rm_model, rm_params, info = rm.load(directory)
    return rm_model, rm_params, dict(info.get("train", {}), restored=True)
  tasks = list(tasks)[:spec.problems]
  if not tasks:
    raise ValueError("reward_model_role.build: no labelled problems to sample")
  cands = test_time.generate(model, params, tokenizer, tasks, n=spec.n,
                             max_new_tokens=max_new_tokens,
                             strategy=strategies.Sampling(temperature=spec.temperature),
                             rng=jax.random.key(seed + 101), scores=())
  records = rm.records_from_candidates(cands)
  data = rm.training_data(spec.kind, tokenizer, records,
                          max_len=rm.max_length(tokenizer, records),
                          max_pairs_per_problem=spec.max_pairs_per_problem)
  rm_model, rm_init = rm.init_from(model, params, jax.random.key(seed + 202))
  res = rm.train(model=rm_model, params=rm_init, kind=spec.kind, data=data,
                 steps=spec.steps, learning_rate=spec.learning_rate,
                 batch_size=spec.batch_size, seed=seed, desc=f"rm-{spec.kind}")
  info = dict(kind=spec.kind, samples=len(records),
              sample_accuracy=float(np.mean([r["correct"] for r in records])),
              train_items=len(data),
              final_loss=float(res.metrics.get("loss", float("nan"))))
  rm.save(directory, rm_model, res.params, kind=spec.kind, meta={"train": info})
  return rm_model, res.params, dict(info, restored=False)


def heldout_report(*, rm_model: Any, rm_params: Any, model: Any, params: Any,
                   tokenizer: Any, tasks: Sequence[Any], n: int, max_new_tokens: int,
                   temperature: float, seed: int) -> dict:
  """Reward hacking on held-out problems: ``n`` policy samples each, scored.

  Returns:
    ``{'rm_mean', 'verifier_accuracy', 'rm_pair_accuracy'}``: the RM's mean
    score, the samples' verifier accuracy and the RM's within-problem pair
    accuracy (NaN without a problem having both grades).
  """
  cands = test_time.generate(model, params, tokenizer, list(tasks), n=int(n),
                             max_new_tokens=max_new_tokens,
                             strategy=strategies.Sampling(temperature=temperature),
                             rng=jax.random.key(seed + 303), scores=())
  rm.fill_scores(cands, rm_model, rm_params, tokenizer, name="rm")
  s = np.asarray(cands.scores["rm"], np.float64)
  correct = np.asarray(cands.correct) >= 1.0
  return dict(rm_mean=float(np.nanmean(s)), verifier_accuracy=float(correct.mean()),
              rm_pair_accuracy=float(common.pair_ranking_accuracy(
                  s.reshape(-1), correct.reshape(-1), int(n))))


__all__ = ["RewardModelSpec", "build", "heldout_report"]
