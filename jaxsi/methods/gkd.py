r"""GKD: generalised knowledge distillation on a mix of student and teacher samples.

Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning
from Self-Generated Mistakes" (arXiv:2306.13649), Algorithm 1 / Eq. (the GKD
objective)::

  L_GKD(θ) = (1 − λ) E_{(x,y) ~ (X, Y)}[D(p_T ‖ p_θ^S)(y | x)]
             + λ E_{x ~ X} E_{y ~ p_S(·|x)}[D(p_T ‖ p_θ^S)(y | x)]

with D the token-level generalised JSD_β summed over the sequence
(``distillation.generalized_jsd``: β = 0 forward KL, β = 1 reverse KL), no
gradient through the student's sampling. As in the paper's Algorithm 1 (and
TRL's ``GKDTrainer.training_step``), each step draws u ~ U[0, 1): the batch is
sampled by the student if u < λ, otherwise it is the off-policy batch.

Match to TRL (``trl.experimental.gkd.GKDTrainer``, read in the installed
TRL): ``lmbda`` = λ (student data fraction; TRL tests ``random.random() <=
lmbda``, this uses ``<``: equal except on a measure-zero draw), ``beta`` = β
(the same ``generalized_jsd_loss`` mixture convention, tested in
tests/transforms/test_distillation.py), ``seq_kd`` = the off-policy batch is
sampled by the teacher (TRL's default ``seq_kd=False`` uses the dataset's
fixed completions instead). Differences: (1) the off-policy batch here is
always teacher samples (``seq_kd=True``); ``seq_kd=False`` (dataset
completions inside the on-policy loop) is refused — the offline path for
fixed data is ``jaxsi.methods.logit_kd``. (2) TRL divides the summed JSD by
the number of completion tokens ('batchmean'); that is ``agg='token-mean'``
here (default). (3) The teacher distribution is its top-k per position
(``k``; k = V is TRL's full-vocabulary loss exactly, with the tail bucket of
``distillation.topk_jsd``), computed chunk by chunk by
``teacher_logits.teacher_topk`` so no [B, T, V] teacher array is alive. (4)
TRL's ``temperature`` divides the logits of both models; here the method's
sampling temperature (``RolloutSpec.temperature``) is the one the loop's
scorers and update use for both.

The teacher is the ``teacher`` role: a separate jaxsi model, a Hugging Face
checkpoint (``jaxsi.models.hf.load_pretrained``) or a frozen earlier
checkpoint, passed as ``roles={'teacher': (model, params)}`` (or ``(model,
params, tokenizer)``); the loop refuses a teacher whose vocabulary or
tokenizer differs from the student's before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Sequence, Union

import jax
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import rollouts
from jaxsi.transforms import distillation, teacher_logits
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]
TEACHER_SAMPLED_KEY = "gkd_teacher_sampled"   # metric: 1 if the teacher sampled


def on_policy_draw(rng, lmbda: float) -> bool:
  """Whether this step's batch is the student's (u < λ, u ~ U[0, 1) from rng)."""
  u = float(jax.random.uniform(jax.random.fold_in(rng, 0x6b64)))
  return u < lmbda


@dataclasses.dataclass(frozen=True)
class MixedSample(rollouts.Stage):
  """GKD's data mix: with probability λ the student samples, else the teacher.

  Attributes:
    spec: the rollout spec (both samplers use it).
    lmbda: λ, the student (on-policy) fraction, in [0, 1].
    teacher: the role that samples the off-policy batches.
  """

  spec: RolloutSpec = RolloutSpec(n=1)
  lmbda: float = 1.0
  teacher: str = spec_lib.TEACHER

  def __post_init__(self):
    if not 0.0 <= self.lmbda <= 1.0:
      raise ValueError(f"MixedSample: lmbda must be in [0, 1], got {self.lmbda!r}")

  def __call__(self, ctx, params, rng) -> rollouts.Batch:
    plain = rollouts.Sample(self.spec)
    student = on_policy_draw(rng, self.lmbda)
    if student:
      batch = plain(ctx, params, rng)
    else:
      model, t_params = ctx.role_model_params(self.teacher)
      tctx = copy.copy(ctx)   # the same prompts, rewards and budget; the
      tctx.model = model      # teacher's model samples
      batch = plain(tctx, t_params, rng)
    batch.metrics[TEACHER_SAMPLED_KEY] = 0.0 if student else 1.0
    return batch


def gkd(*, rollout: RolloutSpec = RolloutSpec(n=1, max_new_tokens=16,
                                              temperature=1.0),
        optim: OptimSpec = OptimSpec(),
        reward_fns: RewardFns = (reward_lib.correctness_reward,),
        lmbda: float = 1.0, beta: float = 0.5, seq_kd: bool = True,
        k: int = 64, tail: bool = True, row_chunk: int = 1,
        chunked: bool = True,
        agg: str = "token-mean", extra_transforms: Sequence[Any] = (),
        name: str = "gkd") -> base.Method:
  r"""GKD (module docstring): JSD_β(teacher ‖ student) on a λ-mix of samples.

  Args:
    rollout: samples per prompt / budget / temperature (both samplers).
    optim: epochs × minibatches.
    reward_fns: reward stages, logged only (GKD uses no reward).
    lmbda: λ, the probability a step's batch is student-sampled (1: fully
      on-policy; 0: supervised KD on teacher samples).
    beta: β of the generalised JSD (0 forward KL, 1 reverse KL).
    seq_kd: the off-policy batch is teacher-sampled; must be True (dataset
      completions: ``jaxsi.methods.logit_kd``).
    k: teacher ids kept per position (k = V: the full-vocabulary loss).
    tail: keep the "other tokens" bucket of ``distillation.topk_jsd``.
    row_chunk: rows per teacher-scoring chunk (divides the batch).
    chunked: compute the student side chunk by chunk over T from the hidden
      states (``topk_jsd(chunked=True)``: no [B, T, V] student logits alive;
      same loss and gradient up to float rounding). Default True: it costs
      no measurable step time at the synthetic vocabularies
      (experiments/chunked_kd_bench.py, docs/distillation.md); False is the
      full-logits path the earlier bench tables used.
    agg: aggregation of the per-token divergence.
    extra_transforms: transforms chained after the teacher scoring.
    name: method name.

  Returns:
    The Method (role ``teacher``: ``roles={'teacher': (model, params)}``).
  """
  if not seq_kd:
    raise ValueError(
        "gkd: seq_kd=False (TRL's fixed-dataset completions for the off-policy"
        " batch) is not supported in the on-policy loop; use seq_kd=True"
        " (teacher samples) or jaxsi.methods.logit_kd for fixed data")
  if not 0.0 <= lmbda <= 1.0:
    raise ValueError(f"gkd: lmbda must be in [0, 1], got {lmbda!r}")
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"gkd: beta must be in [0, 1], got {beta!r}")
  term = distillation.topk_jsd(beta=beta, tail=tail, agg=agg, chunked=chunked)
  obj = objective((1.0, term, "gkd"))   # carries the term's needs_logits
  transform = chain(teacher_logits.teacher_topk(
      k=k, scorer=f"{spec_lib.TEACHER}/logits", params=spec_lib.TEACHER,
      row_chunk=row_chunk))
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=transform, objective=obj, roles=(base.Role(base.TEACHER),),
      stage=lambda spec: MixedSample(spec, lmbda=float(lmbda)),
      extra_transforms=extra_transforms)


__all__ = ["gkd", "MixedSample", "on_policy_draw", "TEACHER_SAMPLED_KEY"]
