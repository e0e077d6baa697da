"""jaxsi.methods: one small module per paper or family, each a factory.

The on-policy RL family (METHODS.md §2) and the multi-turn family (§3) are
exported here: each factory returns a :class:`jaxsi.spec.Method` (rollout
stage + reward stages + transform chain + objective + the shared rollout /
optimisation specs + the roles it reads) that ``jaxsi.training.loop.Loop``
runs; ``METHODS`` maps their names to the factories and
``get_method(name, **overrides)`` builds one.
Rejection-sampling self-training methods (STaR, ReST-EM, ...) live in their
own modules of this package and are imported from there.
"""

from jaxsi.methods.base import (Method, guided_old_logprobs, make_method,
                                policy_values)
from jaxsi.methods.d3s import d3s
from jaxsi.methods.grpo import dapo, dr_grpo, grpo
from jaxsi.methods.guide import answer_hint, guide
from jaxsi.methods.kdrl import kdrl
# Privileged-context self-distillation (issue #17 A): OPSD, Skill-SD.
from jaxsi.methods.opsd import opsd, skill_sd
from jaxsi.methods.pi_distill import pi_distill
from jaxsi.methods.gkd import gkd
from jaxsi.methods.nft import nft
from jaxsi.methods.policy_variants import cispo, gspo
from jaxsi.methods.ppo import multi_turn_ppo, ppo
from jaxsi.methods.reinforce import reinforce_pp, rloo
from jaxsi.methods.spoc import spoc
# Label-free RL (issue #16): the model's own agreement or confidence is the
# reward (TTRL, SRT, Co-Reward, Intuitor, EM-RL/EM-FT, RLSC, sharpening RL).
from jaxsi.methods.confidence_rl import em_ft, em_rl, intuitor, rlsc, sharpening_rl
from jaxsi.methods.majority_vote import co_reward, srt, ttrl
# Multi-turn self-correction (METHODS.md §3): Methods whose rollout stage is
# rollouts.Episodes (registry: MULTI_TURN_METHODS).
from jaxsi.methods.critique_grpo import critique_grpo
from jaxsi.methods.reflect_retry import reflect_retry
from jaxsi.methods.score import episode_method, is_multi_turn, score, two_turn_grpo
from jaxsi.methods.ufo import ufo
# Rejection-sampling self-training (METHODS.md §1): factories return a
# jaxsi.spec.RoundsMethod run by jaxsi.training.rounds.run_rounds. Imported as
# modules (``methods.star.star``) so the package attribute stays the module.
from jaxsi.methods import bstar as _bstar
from jaxsi.methods import easy_to_hard as _easy_to_hard
from jaxsi.methods import rest_em as _rest_em
from jaxsi.methods import rft as _rft
from jaxsi.methods import sharpening as _sharpening
from jaxsi.methods import star as _star
from jaxsi.methods import vstar as _vstar
# Preference rounds (issue #15, METHODS.md §4): iterative DPO on verifier pairs,
# DNO's margin-filtered pairs, ScPO's vote-margin-weighted pairs (no labels).
# online_dpo (a Loop Method, jaxsi.methods.iterative_dpo) is not in METHODS:
# it refuses optim.minibatches > 1 (a random split separates a pair's rows).
from jaxsi.methods import dno as _dno
from jaxsi.methods import iterative_dpo as _iterative_dpo
from jaxsi.methods import scpo as _scpo

METHODS = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "dapo": dapo,
    "rloo": rloo,
    "reinforce_pp": reinforce_pp,
    "gspo": gspo,
    "cispo": cispo,
    "ppo": ppo,
    "nft": nft,
    "d3s": d3s,
    "guide": guide,
    "kdrl": kdrl,
    "opsd": opsd,
    "skill_sd": skill_sd,
    "pi_distill": pi_distill,
    "gkd": gkd,
    "spoc": spoc,
    "ttrl": ttrl,
    "srt": srt,
    "co_reward": co_reward,
    "intuitor": intuitor,
    "em_rl": em_rl,
    "em_ft": em_ft,
    "rlsc": rlsc,
    "sharpening_rl": sharpening_rl,
}

MULTI_TURN_METHODS = {
    "score": score,
    "ufo": ufo,
    "reflect_retry": reflect_retry,
    "critique_grpo": critique_grpo,
    "two_turn_grpo": two_turn_grpo,
    "multi_turn_ppo": multi_turn_ppo,
}

SELF_TRAINING_METHODS = {
    "star": _star.star,
    "rft": _rft.rft,
    "rest_em": _rest_em.rest_em,
    "bstar": _bstar.bstar,
    "vstar": _vstar.vstar,
    "sharpening": _sharpening.sharpening,
    "easy_to_hard": _easy_to_hard.easy_to_hard,
    "iterative_dpo": _iterative_dpo.iterative_dpo,
    "dno": _dno.dno,
    "scpo": _scpo.scpo,
}


def get_method(name: str, **overrides) -> Method:
  """Builds method ``name`` with keyword overrides of its factory defaults."""
  if name in MULTI_TURN_METHODS:
    return MULTI_TURN_METHODS[name](**overrides)
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; available: "
                     f"{sorted(METHODS) + sorted(MULTI_TURN_METHODS)}")
  return METHODS[name](**overrides)

# Self-rewarding (METHODS.md §4, issue 15): the model judges its own samples.
from jaxsi.methods import self_rewarding as _self_rewarding  # pylint: disable=g-import-not-at-top,wrong-import-position
SELF_TRAINING_METHODS["self_rewarding"] = _self_rewarding.self_rewarding

# EVOLVE / RLRF (issue 15): answer + self-judge + refine rounds, DPO on
# direct and refinement pairs. SPCT is a GRPO reward on task "judge"
# (methods/spct.py, spct.gin), not a method of its own.
from jaxsi.methods import evolve as _evolve  # pylint: disable=g-import-not-at-top,wrong-import-position
SELF_TRAINING_METHODS["evolve"] = _evolve.evolve
SELF_TRAINING_METHODS["rlrf"] = _evolve.rlrf

# SPO (Swamy et al. 2024, arXiv:2401.04056, issue 15): the reward is each
# sample's win rate in its group under a pairwise preference (the verifier as
# a perfect rater, or the model as a pairwise judge); GRPO's update.
# Imported as a module (``methods.spo.spo``) so the package attribute stays the module.
from jaxsi.methods import spo as _spo  # pylint: disable=g-import-not-at-top,wrong-import-position
METHODS["spo"] = _spo.spo

# Self-motivated Learning (Feng et al. 2024, arXiv:2404.07017, issue 15): PPO +
# KL against a reward model trained on the warm start's verifier-ranked samples
# (rl_run.run trains the 'reward_model' role first). Its reward stage
# (training.reward_model.RewardModelScorer) comes from the run's gin file, so it
# is not in METHODS (get_method would build it without a reward).
from jaxsi.methods import self_motivated as _self_motivated  # pylint: disable=g-import-not-at-top,wrong-import-position

# T-REG (issue 15, arXiv:2412.02685): iterative DPO + token-level reward
# regularisation from contrastive prompting; online_treg (a Loop Method,
# gin_configs/methods/online_treg.gin) is not in METHODS, as online_dpo.
from jaxsi.methods import treg as _treg  # pylint: disable=g-import-not-at-top,wrong-import-position
SELF_TRAINING_METHODS["treg"] = _treg.treg

# Temporal Self-Rewarding (issue 15, arXiv:2508.06026): rejected from the initial
# model (pool round 0), chosen guided by a temporary future model.
from jaxsi.methods import temporal_self_rewarding as _temporal_self_rewarding  # pylint: disable=g-import-not-at-top,wrong-import-position
SELF_TRAINING_METHODS["temporal_self_rewarding"] = _temporal_self_rewarding.temporal_self_rewarding

# Meta-Rewarding (issue 15): actor + judge + meta-judge, DPO on actor and
# judge pairs.
from jaxsi.methods import meta_rewarding as _meta_rewarding  # pylint: disable=g-import-not-at-top,wrong-import-position
SELF_TRAINING_METHODS["meta_rewarding"] = _meta_rewarding.meta_rewarding

# Self-Rationalization (issue 15): a judge trained by DPO on its own
# (rationale, score) judgments curated against the gold score.
from jaxsi.methods import self_rationalization as _self_rationalization  # pylint: disable=g-import-not-at-top,wrong-import-position
SELF_TRAINING_METHODS["self_rationalization"] = _self_rationalization.self_rationalization

# Tailored learning (issue 17): the teacher corrects the student's own mistakes.
from jaxsi.methods import tailored as _tailored  # pylint: disable=g-import-not-at-top,wrong-import-position
SELF_TRAINING_METHODS["tailored"] = _tailored.tailored

# MiniLLM (issue 17; TRL MiniLLMTrainer): reverse-KL advantage + single-step KL to a teacher.
from jaxsi.methods import minillm as _minillm  # pylint: disable=g-import-not-at-top,wrong-import-position
METHODS["minillm"] = _minillm.minillm
minillm = _minillm.minillm
