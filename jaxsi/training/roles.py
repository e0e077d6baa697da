r"""The roles of a Loop run: named parameter sets, trained or frozen, placed.

``build_roles`` turns the methods' declared roles (``spec.Role``) and the
run's ``roles={name: params | (model, params) | (model, params, tokenizer) |
'other_role'}`` into what the loop holds:

* one ``TrainState`` per *trained* role (its own optimizer state), created
  jitted — donating the caller's params unless ``copy_params`` — and, with a
  mesh, on the shardings the logical-axis rules give;
* one parameter pytree per *frozen* role: given params, or for a
  ``spec.FROM_INITIAL`` role (the KL reference) a real copy of the trained
  role's initial params — except for a LoRA policy, whose frozen base *is*
  the reference (derived inside the jitted step; ``lora_reference``), which
  needs ``lora.freeze_base`` on the optimizer;
* aliases: a string value shares another role's live weights (the policy as
  its own judge).

Every need is checked before any work: a role a method or reward stage reads
and the run does not give, a value head the model lacks, a batch that the
minibatches or the mesh's batch shards do not divide, a role model whose
vocabulary or tokenizer differs from the trained role's
(:class:`~jaxsi.spec.ConfigurationError`, naming method and role).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import jax

from jaxsi import partitioning
from jaxsi import spec as spec_lib
from jaxsi.models import lora as lora_lib
from jaxsi.rewards import stages as reward_stages
from jaxsi.training import placement
from jaxsi.training import train_state as train_state_lib
from jaxsi.training.role_checks import check_tokenizer, check_vocab


@dataclasses.dataclass
class RoleSet:
  """What ``build_roles`` returns (the Loop keeps these as attributes).

  Attributes:
    trained: trained role names, in schedule order (the first is the policy).
    models: role name -> static Model.
    aliases: role name -> the role whose live weights it shares.
    frozen: frozen role name -> params (placed).
    states: trained role name -> TrainState (placed).
    param_shardings: role name -> param shardings (empty without a mesh).
    state_shardings: trained role name -> TrainState shardings (mesh only).
    lora_reference: trained role name -> True when its reference is the
      frozen LoRA base.
  """
  trained: tuple
  models: dict
  aliases: dict
  frozen: dict
  states: dict
  param_shardings: dict
  state_shardings: dict
  lora_reference: dict


def build_roles(*, methods: Sequence[spec_lib.Method], model: Any, params: Any,
                given: Mapping[str, Any], tokenizer: Any, optimizer: Any,
                prompts_per_step: int, seed: int, mesh: Any = None,
                rules: Optional[Sequence] = None, copy_params: bool = True
                ) -> RoleSet:
  """Validates the methods' needs and builds every role's params/state.

  Args:
    methods: the schedule's Methods (each trains ``method.train``).
    model: the static Model of the first trained role.
    params: its initial params.
    given: the run's ``roles=`` mapping (see the module docstring).
    tokenizer: the trained role's tokenizer (a role's own tokenizer must
      match it).
    optimizer: the optax transformation every trained role gets a state of.
    prompts_per_step: R prompts per rollout batch (B = R·n).
    seed: seeds the TrainStates' PRNG keys.
    mesh: a device mesh, or None (single device).
    rules: logical-axis rules (default ``partitioning.DEFAULT_RULES``).
    copy_params: train a copy (the caller's params stay valid); False
      donates them to the state creation.

  Raises:
    ConfigurationError: a need the run does not meet (names both).
  """
  given = dict(given)
  rules = tuple(partitioning.DEFAULT_RULES if rules is None else rules)
  trained = []
  for m in methods:
    if m.train not in trained:
      trained.append(m.train)
  trained = tuple(trained)
  first = trained[0]
  models = {first: model}
  initial = {first: params}
  aliases = {}
  frozen_src = {}
  for name, value in given.items():
    if isinstance(value, str):
      aliases[name] = value
    elif isinstance(value, tuple) and len(value) in (2, 3):
      if len(value) == 3:   # (model, params, the role's own tokenizer)
        check_tokenizer(name, value[2], tokenizer)
      models[name], frozen_src[name] = value[:2]
    else:
      models.setdefault(name, model)
      frozen_src[name] = value
  for name, mdl in models.items():
    check_vocab(name, mdl, model, first)
  for name in trained[1:]:
    if name not in frozen_src:
      raise spec_lib.ConfigurationError(
          f"the schedule trains role {name!r} but the run gives no initial"
          f" params for it (pass roles={{{name!r}: params}})")
    initial[name] = frozen_src.pop(name)
  for alias, target in aliases.items():
    if target not in trained and target not in frozen_src and target not in aliases:
      raise spec_lib.ConfigurationError(
          f"role {alias!r} shares role {target!r}, which the run does not have")
  # Validate every method's needs against what the run provides.
  lora_reference = {}
  b = prompts_per_step
  for m in methods:
    role_model = models[m.train]
    if m.value_head and not role_model.config.value_head:
      raise spec_lib.ConfigurationError(
          f"method {m.name!r} trains a value head but the model of role"
          f" {m.train!r} has none (build it with ModelConfig.value_head=True)")
    size = b * m.n
    if size % m.minibatches:
      raise spec_lib.ConfigurationError(
          f"method {m.name!r}: batch {size} (= {b} prompts × n={m.n}) is not"
          f" divisible by minibatches={m.minibatches}")
    needed = [(r.name, r) for r in m.roles]
    # A stage's role the method also lists (e.g. FROM_INITIAL) is checked as listed.
    needed += [(name, m.role(name)) for name in
               reward_stages.stage_roles(reward_stages.as_stages(m.rewards))]
    for name, role in needed:
      if name in trained or name in frozen_src or name in aliases:
        continue
      if role is not None and role.source == spec_lib.FROM_INITIAL:
        continue
      raise spec_lib.ConfigurationError(
          f"method {m.name!r} needs role {name!r}, which this run does not"
          f" provide (roles given: {sorted(set(given) | set(trained))});"
          f" pass roles={{{name!r}: (model, params)}} or a launcher that"
          f" builds it")
  param_shardings = {}
  if mesh is not None:
    div = partitioning.batch_divisor(mesh, rules)
    for m in methods:
      if (b * m.n) % div:
        raise spec_lib.ConfigurationError(
            f"method {m.name!r}: batch {b * m.n} (= {b} prompts × n={m.n}) is"
            f" not a multiple of the {div} batch shards of mesh"
            f" {dict(mesh.shape)}")
    for name, mdl in models.items():
      param_shardings[name] = partitioning.param_shardings(
          mdl, mesh=mesh, rules=rules)
  # Frozen roles: given ones, then FROM_INITIAL copies of the trained role.
  frozen = {}
  for name, value in frozen_src.items():
    sh = param_shardings.get(name)
    if mesh is not None:
      value = jax.device_put(placement.as_global(value, sh), sh)
    frozen[name] = value
  for m in methods:
    for role in m.roles:
      if (role.source != spec_lib.FROM_INITIAL or role.name in frozen
          or role.name in trained or role.name in aliases):
        continue
      base_model = models[m.train]
      if isinstance(base_model, lora_lib.LoraModel):
        if not lora_lib.is_base_frozen(optimizer, initial[m.train]):
          raise spec_lib.ConfigurationError(
              f"method {m.name!r} uses the LoRA base as its {role.name!r}"
              " role: wrap the optimizer with lora.freeze_base(...) so the"
              f" base stays exactly frozen (or pass roles={{{role.name!r}: params}})")
        lora_reference[m.train] = True
        continue
      sh = param_shardings.get(m.train)
      src = initial[m.train]
      if mesh is not None:
        src = placement.as_global(src, sh)
      # A real copy: the trained params are donated to the update step.
      frozen[role.name] = placement.copy(src, sh)
      models.setdefault(role.name, base_model)
  # Trained roles: one TrainState each (own optimizer state).
  states = {}
  state_shardings = {}
  donate = () if copy_params else (0,)
  for name in trained:
    method = next(m for m in methods if m.train == name)
    mdl = models[name]
    p = initial[name]

    def create(p, method=method):
      return train_state_lib.create_train_state(
          p, optimizer, jax.random.key(seed),
          method_state=method.transform.init())

    if mesh is None:
      states[name] = jax.jit(create, donate_argnums=donate)(p)
    else:
      p = placement.as_global(p, param_shardings[name])
      shardings = partitioning.state_shardings(
          jax.eval_shape(create, p), optimizer=optimizer,
          logical_axes=mdl.logical_axes(), mesh=mesh, rules=rules)
      state_shardings[name] = shardings
      states[name] = jax.jit(create, out_shardings=shardings,
                                  donate_argnums=donate)(p)
  return RoleSet(trained=trained, models=models, aliases=aliases, frozen=frozen,
                 states=states, param_shardings=param_shardings,
                 state_shardings=state_shardings, lora_reference=lora_reference)
