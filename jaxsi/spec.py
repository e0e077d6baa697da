r"""The loop contract: role names, shared rollout/optimisation specs, ``Method``.

A leaf module (no other jaxsi import): ``jaxsi.methods`` builds these values,
``jaxsi.training.loop`` runs them, and neither imports the other. DESIGN.md
"One loop: roles, stages, schedule"::

    Method = rollout stage(s) → reward stage(s) → transform chain
             → objective on one trained role → update

* **Roles** are named parameter sets. The run holds one ``TrainState`` per
  trained role and one frozen parameter pytree per frozen role; stages and
  transforms reach them by name (``Context.params[name]``). A method lists
  the roles it needs beyond the one it trains (:class:`Role`); the loop
  refuses a method whose roles the run does not provide, naming both.
* **Stages.** ``rollout`` is a rollout stage (``jaxsi.sampling.rollouts``:
  plain sampling, refill until a predicate holds, hinted resampling,
  multi-turn episodes); ``rewards`` are reward stages
  (``jaxsi.rewards.stages``: host functions over the whole batch with group
  and prompt ids, or device scorers reading a role's parameters). Plain
  ``fn(tasks, completions)`` reward functions are accepted and wrapped.
* **Shared specs.** :class:`RolloutSpec` (samples per prompt, budget,
  temperature) and :class:`OptimSpec` (epochs × minibatches) are the
  settings every method shares, so a factory takes only its own math and a
  variant is a gin binding of these specs.

Self-training in rounds is data too: :class:`RoundsMethod` (rollout stage,
reward stages, a selection transform, the M-step objective, where it starts
from), run by ``jaxsi.training.rounds.run_rounds``; each schedule refuses the
other's methods.

The Trajectory field conventions stay in ``jaxsi/trajectory.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

# ------------------------------------------------------------- role names
POLICY = "policy"            # the trained policy (the default trained role)
REFERENCE = "reference"      # frozen KL reference (initial policy, or LoRA base)
TEACHER = "teacher"          # a separate or privileged-context teacher
JUDGE = "judge"              # writes judgments parsed into rewards
REWARD_MODEL = "reward_model"  # a learned (outcome or process) reward model
CHALLENGER = "challenger"    # self-play: proposes tasks
SOLVER = "solver"            # self-play: solves them

# Scorer names in ``Context.scorers`` (forward passes the loop provides).
POLICY_VALUES = "policy_values"    # log-probs + value head
POLICY_ENTROPY = "policy_entropy"  # log-probs + per-token entropy
POLICY_LOGITS = "policy_logits"    # log-probs + full f32[B, T, V] logits (top-k teachers)

# Trajectory extras written by rollout stages.
GUIDED_KEY = "guided"              # bool[B]: a hinted resample (Guide)
HINT_LOGPROBS_KEY = "hint_logprobs"  # f32[B, T]: its log-probs under the hint

# Where a frozen role's parameters come from.
FROM_INITIAL = "initial"   # a frozen copy of the trained role's initial params
FROM_RUN = "run"           # supplied by the run (``roles={name: (model, params)}``)


@dataclasses.dataclass(frozen=True)
class Role:
  """A role a method reads (besides the role it trains).

  Attributes:
    name: the role name (``REFERENCE``, ``TEACHER``, ``JUDGE`` …).
    source: ``FROM_INITIAL`` (a frozen copy of the trained role at the start
      of the run — with a LoRA policy, the frozen base itself, no copy) or
      ``FROM_RUN`` (the run must pass the role's model and parameters).
    trained: the role is trained by another phase of the schedule (it then
      has its own optimizer state; self-play).
  """

  name: str
  source: str = FROM_RUN
  trained: bool = False

  def __post_init__(self):
    if self.source not in (FROM_INITIAL, FROM_RUN):
      raise ValueError(f"Role {self.name!r}: source must be {FROM_INITIAL!r} or"
                       f" {FROM_RUN!r}, got {self.source!r}")


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
  """How many samples, how long, how random (shared by every method).

  Attributes:
    n: samples per prompt (group size G).
    max_new_tokens: completion budget per sample (per model turn).
    temperature: sampling temperature; scorers use the same one.
    strategy: a sampling strategy (``jaxsi.sampling.strategies``) overriding
      plain temperature sampling (its ``temperature`` is then the one used).
  """

  n: int = 8
  max_new_tokens: int = 16
  temperature: float = 1.0
  strategy: Any = None

  def __post_init__(self):
    if int(self.n) != self.n or self.n < 1:
      raise ValueError(f"RolloutSpec: n must be an integer >= 1, got {self.n!r}")
    if int(self.max_new_tokens) != self.max_new_tokens or self.max_new_tokens < 1:
      raise ValueError("RolloutSpec: max_new_tokens must be an integer >= 1, got"
                       f" {self.max_new_tokens!r}")
    if not self.temperature >= 0:
      raise ValueError(f"RolloutSpec: temperature must be >= 0, got {self.temperature!r}")

  @property
  def scoring_temperature(self) -> float:
    """Temperature the sampler divides logits by (scorers use the same)."""
    if self.strategy is not None:
      return float(getattr(self.strategy, "temperature", 1.0))
    return float(self.temperature) if self.temperature > 0 else 1.0


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """Optimisation passes over each rollout batch (shared by every method).

  Attributes:
    epochs: passes over the batch.
    minibatches: minibatches per pass, each one optimizer step (the batch
      size must be divisible by it).
  """

  epochs: int = 1
  minibatches: int = 1

  def __post_init__(self):
    for name in ("epochs", "minibatches"):
      v = getattr(self, name)
      if int(v) != v or v < 1:
        raise ValueError(f"OptimSpec: {name} must be an integer >= 1, got {v!r}")

  @property
  def updates_per_batch(self) -> int:
    return self.epochs * self.minibatches


@dataclasses.dataclass(frozen=True)
class Method:
  """An on-policy method as data: what to sample, score, transform, optimise.

  Attributes:
    name: method name (logging, errors).
    rollout: the rollout stage (``jaxsi.sampling.rollouts``); its ``spec``
      is the :class:`RolloutSpec`.
    rewards: reward stages or plain ``fn(tasks, completions)`` functions;
      their columns are concatenated into ``traj.rewards`` f32[B, K]. A
      rollout stage that grades its own samples (multi-turn episodes) uses
      them itself.
    transform: the trajectory transform chain, run jitted after the rewards.
    objective: the objective term minimised by the update.
    optim: epochs × minibatches.
    roles: roles the method reads besides ``train`` (:class:`Role`).
    train: the role the update trains.
    value_head: the trained model needs a value head (PPO).
    with_entropy: compute per-token entropy in the update's forward pass.
  """

  name: str
  rollout: Any
  rewards: Tuple[Callable, ...]
  transform: Any
  objective: Callable
  optim: OptimSpec = OptimSpec()
  roles: Tuple[Role, ...] = ()
  train: str = POLICY
  value_head: bool = False
  with_entropy: bool = True

  def __post_init__(self):
    if callable(self.rewards) and not isinstance(self.rewards, (tuple, list)):
      object.__setattr__(self, "rewards", (self.rewards,))
    object.__setattr__(self, "rewards", tuple(self.rewards))
    object.__setattr__(self, "roles", tuple(self.roles))
    if not self.rewards:
      raise ValueError(f"Method {self.name}: give at least one reward stage")
    if getattr(self.rollout, "spec", None) is None:
      raise ValueError(f"Method {self.name}: rollout must be a rollout stage with"
                       f" a RolloutSpec, got {type(self.rollout).__name__}")
    names = [r.name for r in self.roles]
    if self.train in names:
      raise ValueError(f"Method {self.name}: the trained role {self.train!r} is"
                       " also listed in roles")
    if len(set(names)) != len(names):
      raise ValueError(f"Method {self.name}: duplicate roles {names}")

  # Shorthands for the rollout spec (what the loop and the launchers read).
  @property
  def spec(self) -> RolloutSpec:
    return self.rollout.spec

  @property
  def n(self) -> int:
    return int(self.rollout.spec.n)

  @property
  def max_new_tokens(self) -> int:
    return int(self.rollout.spec.max_new_tokens)

  @property
  def temperature(self) -> float:
    return self.rollout.spec.scoring_temperature

  @property
  def epochs(self) -> int:
    return self.optim.epochs

  @property
  def minibatches(self) -> int:
    return self.optim.minibatches

  @property
  def updates_per_batch(self) -> int:
    return self.optim.updates_per_batch

  def role(self, name: str) -> Optional[Role]:
    """The :class:`Role` named ``name``, or None."""
    return next((r for r in self.roles if r.name == name), None)

  def needs(self, name: str) -> bool:
    """Whether the method reads role ``name``."""
    return self.role(name) is not None


class ConfigurationError(ValueError):
  """A method whose needs the run does not meet (raised before any work)."""


# ------------------------------------------------------------ rounds methods
TRAIN_FROM = ("base", "current")     # where a round's M-step starts
REFERENCE_FROM = ("previous", "base")  # a pairwise M-step's frozen reference
SFT = "sft"                          # the supervised M-step objective


def is_transform(x: Any) -> bool:
  """Whether ``x`` is an ``(init, update)`` trajectory transform (duck-typed:
  this leaf module does not import ``jaxsi.transforms``)."""
  return callable(getattr(x, "init", None)) and callable(getattr(x, "update", None))


@dataclasses.dataclass(frozen=True)
class RoundsMethod:
  """A self-training method as data: a schedule of generate → store → filter → fit.

  The schedule (``jaxsi.training.rounds.run_rounds``) runs, every round r ≥ 1,
  over the pieces of the on-policy loop: the rollout stage ``rollout``
  (``jaxsi.sampling.rollouts``, with its :class:`RolloutSpec`) and the reward
  stages ``rewards`` (``jaxsi.rewards.stages``) generate each chunk of
  problems from the round's model; the chunk's Trajectory is stored; the
  selection runs over the round's candidates; ``fit`` trains the next model
  from ``train_from``. Methods never import ``jaxsi.training``: whatever they
  call (sampling, scoring, fitting, pools, the store) comes through the
  round context handed to their callbacks.

  Attributes:
    name: method name.
    select: the filter. Either a trajectory transform (``jaxsi.transforms``
      ``(init, update)``: a filter sets ``valid``, a pair builder writes
      ``pair_ids``), run over the round's stored trajectories — the kept rows
      are the SFT examples, the ``pair_ids`` links the preference pairs — or
      ``fn(records, plan, ctx) -> (examples, pairs, metrics)`` over the
      round's JSON records.
    rollout: the rollout stage of the default E-step (None: ``sample_chunk``
      must be given). A run has one completion budget: the schedule sets
      its ``spec.max_new_tokens`` to ``RoundsConfig.max_new_tokens``.
    rewards: reward stages or ``fn(tasks, completions)`` functions (default:
      the task's verifier, ``rewards.reward_fn.correctness_reward``); a row
      is ``correct`` iff its first column is ≥ 1.
    sample_chunk: ``fn(ctx, tasks, plan) -> records`` replacing the default
      E-step (STaR's rationalisation, voting across models); it samples
      through ``ctx.sample`` / ``ctx.rollout``, which use the same stages.
    plan: ``fn(ctx, tasks) -> dict`` run once per round before sampling
      (e.g. B-STaR's choice of temperature and threshold), or None.
    problems: ``fn(round, unlabeled) -> tasks`` of a round (default: all).
    warm_start: ``fn(labeled) -> examples`` of round 0 (default: prompt →
      target of each labeled task).
    objective: the M-step: ``'sft'`` on the selected examples, or a pairwise
      term of ``fit.preference`` (``'dpo'``, ``'orpo'``, ``'cpo'``) on the
      selected pairs.
    objective_settings: keyword settings of that term (e.g. ``beta``).
    reference: a pairwise M-step's frozen reference: ``'previous'`` (the
      round's generating model, i.e. the previous iterate — iterative DPO) or
      ``'base'`` (the warm start).
    train_from: ``'base'`` (restart from the warm start every round) or
      ``'current'`` (continue from the previous round).
    accumulate: train on the selected data of rounds 1..r (else round r's).
    include_labeled: add the labeled warm-start examples to every SFT M-step.
    steps_growth: round r's M-step runs ``steps · growth^(r-1)`` steps.
    after_round: ``fn(ctx, store) -> metrics`` after the M-step (V-STaR's
      verifier; must be resumable itself), or None.
    evaluate: ``fn(ctx, test) -> metrics`` extra evaluation, or None.
  """

  name: str
  select: Any
  rollout: Any = None
  rewards: Tuple[Any, ...] = ()
  sample_chunk: Optional[Callable[..., list]] = None
  plan: Optional[Callable[..., dict]] = None
  problems: Optional[Callable[[int, Any], Any]] = None
  warm_start: Optional[Callable[[Any], list]] = None
  objective: str = SFT
  objective_settings: Any = dataclasses.field(default_factory=dict)
  reference: str = "previous"
  train_from: str = "current"
  accumulate: bool = False
  include_labeled: bool = True
  steps_growth: float = 1.0
  after_round: Optional[Callable[..., dict]] = None
  evaluate: Optional[Callable[..., dict]] = None

  def __post_init__(self):
    if callable(self.rewards) and not isinstance(self.rewards, (tuple, list)):
      object.__setattr__(self, "rewards", (self.rewards,))
    object.__setattr__(self, "rewards", tuple(self.rewards))
    object.__setattr__(self, "objective_settings", dict(self.objective_settings or {}))
    if self.train_from not in TRAIN_FROM:
      raise ValueError(f"RoundsMethod {self.name}: train_from must be 'base' or"
                       f" 'current', got {self.train_from!r}")
    if self.reference not in REFERENCE_FROM:
      raise ValueError(f"RoundsMethod {self.name}: reference must be one of"
                       f" {REFERENCE_FROM}, got {self.reference!r}")
    if self.steps_growth <= 0:
      raise ValueError(f"RoundsMethod {self.name}: steps_growth must be > 0")
    if self.sample_chunk is None and getattr(self.rollout, "spec", None) is None:
      raise ValueError(f"RoundsMethod {self.name}: give a rollout stage with a"
                       " RolloutSpec or a sample_chunk function")
    if not (callable(self.select) or is_transform(self.select)):
      raise ValueError(f"RoundsMethod {self.name}: select must be a trajectory"
                       " transform or fn(records, plan, ctx)")

  @property
  def pairwise(self) -> bool:
    """Whether the M-step trains on preference pairs (not SFT)."""
    return self.objective != SFT

  @property
  def select_is_transform(self) -> bool:
    return is_transform(self.select)
