"""jaxsi.transforms: composable trajectory transforms and objective terms.

Trajectory transforms are optax-style ``(init, update)`` pairs over
``(traj, state, ctx)``; objective terms map ``(outputs, traj)`` to
``(scalar, metrics)``. See ``docs/architecture.md`` and ``docs/parity.md``.
"""

from jaxsi.transforms import advantages
from jaxsi.transforms import aggregation
from jaxsi.transforms import base
from jaxsi.transforms import distillation
from jaxsi.transforms import downsampling
from jaxsi.transforms import filters
from jaxsi.transforms import importance
from jaxsi.transforms import kl
from jaxsi.transforms import policy_losses
from jaxsi.transforms import preference
from jaxsi.transforms import regularizers
from jaxsi.transforms import rescoring
from jaxsi.transforms import rewards
from jaxsi.transforms import spans
from jaxsi.transforms import sft
from jaxsi.transforms import turns
from jaxsi.transforms import value

# API.
from jaxsi.transforms.base import (Context, EmptyState, ModelOutputs,
                                   TrajectoryTransform, chain, objective,
                                   stateless)
# Advantage estimators.
from jaxsi.transforms.gae import gae_advantages
from jaxsi.transforms.advantages import (group_advantages,
                                         grpo_passk_advantages,
                                         passk_analytic_advantages,
                                         reinforce_pp_advantages,
                                         reinforce_pp_baseline_advantages,
                                         remax_advantages, rloo_advantages,
                                         trl_group_advantages,
                                         verl_group_advantages)
# Reward shaping.
from jaxsi.transforms.rewards import (compose_rewards, kl_in_reward,
                                      overlong_penalty, progress_bonus,
                                      score_at_eos, shape_turn_rewards)
# Filters, masks, weights, re-scoring.
from jaxsi.transforms.filters import (drop_zero_variance_groups,
                                      high_entropy_token_mask,
                                      mask_truncated_completions,
                                      off_policy_sequence_mask,
                                      threshold_filter, top_k_per_group)
from jaxsi.transforms.importance import importance_weights, old_logprobs
from jaxsi.transforms.rescoring import (ref_logprobs, rescore,
                                        score_logprobs, teacher_logprobs)
from jaxsi.transforms.spans import (drop_zero_advantage_groups,
                                    span_advantages, verdict_span_ids)
from jaxsi.transforms.downsampling import (d3s, d3s_sample_selection,
                                           d3s_token_selection)
# Objective terms.
from jaxsi.transforms.aggregation import aggregate, aggregate_trajectory
from jaxsi.transforms.policy_losses import cispo, gmpo, pg_clip, reinforce, sapo
from jaxsi.transforms.kl import kl_estimate, kl_penalty
from jaxsi.transforms.regularizers import entropy_bonus
from jaxsi.transforms.sft import dft, nll
from jaxsi.transforms.unpaired_preference import kto
from jaxsi.transforms.preference import cpo, dpo, halves_pairing, orpo
from jaxsi.transforms.distillation import (generalized_jsd, sampled_reverse_kl,
                                           token_divergence, topk_distillation)
from jaxsi.transforms.value import value_loss
# Multi-turn (per-turn rewards, advantages, KL).
from jaxsi.transforms.turns import (pooled_turn_advantages, repeat_penalty,
                                    require_reward, restrict_loss_to_turns,
                                    score_bonus, turn_advantages,
                                    turn_discount, turn_kl_penalty)
