"""jaxsi.rewards: answer extraction, verifiers, majority vote and host-side rewards."""

from jaxsi.rewards import answers
from jaxsi.rewards import expression
from jaxsi.rewards import reward_fn
from jaxsi.rewards import verifiers
from jaxsi.rewards import voting
from jaxsi.rewards.answers import (ANSWER_MARKER, extract_answer, extract_boxed,
                                   extract_last_number, extract_marked,
                                   format_answer, parse_number, reverse_digits,
                                   split_steps, step_spans, strip_special)
from jaxsi.rewards.reward_fn import (CombinedReward, RewardFn, as_components,
                                     combine, correctness_reward, fill_failed,
                                     format_reward, has_answer_format,
                                     reward_names, safe_rewards, weighted_sum,
                                     with_names)
from jaxsi.rewards.verifiers import (canonical_answer, check_countdown,
                                     exact_match, get_verifier, numeric_match,
                                     register_verifier, step_correctness,
                                     verify_task)
from jaxsi.rewards.voting import majority_vote
from jaxsi.rewards import math_verify_reward
