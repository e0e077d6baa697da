"""Dry run of an RL experiment: sharding plan, memory per device, compiled steps.

Without any weights, ``dry_run(...)``

1. builds the abstract model (``Model.abstract_params``; a LoRA model if
   ``lora_config``) and the abstract TrainState (``jax.eval_shape`` of
   ``create_train_state`` with the optimizer and the method's state);
2. derives every sharding from the logical-axis rules on the requested
   ``('data', 'fsdp', 'tensor')`` mesh (``jaxsi.partitioning``) and
   prints the plan (layer 0 stands for all layers, which share specs);
3. estimates the bytes each device holds: parameters, optimizer state, the
   frozen reference (a full copy for full fine-tuning; with LoRA only the zero
   adapters, the base is shared), the rollout KV cache;
4. with ``compile_steps``, lowers and compiles the three jitted steps of
   ``jaxsi.training.loop.Loop`` — rollout (``sampler.generate``), transform
   chain (``prepare``) and update (``train``) — on the abstract, sharded
   inputs, and adds XLA's temporary-buffer size of the largest one to the
   estimate.

It runs on the target hosts before the weights arrive (compiling needs the
mesh's devices), or on a CPU with ``--xla_force_host_platform_device_count``.

``run_experiment`` is the gin-bound entry of ``gin_configs/experiments/*.gin``:
``dry_run=True`` does the above, ``False`` loads the local checkpoint,
tokenizer and GSM8K files and runs the ``Loop``. ``python -m jaxsi.dry_run
--gin_file=... [--gin_bindings=...] [--nodry_run]`` is its command line (the
only part of this module that imports gin).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxsi import partitioning
from jaxsi.rewards import stages as reward_stages
from jaxsi.spec import (POLICY, POLICY_ENTROPY, POLICY_VALUES, REFERENCE,
                        ConfigurationError, Method)
from jaxsi.models import config as mcfg
from jaxsi.models import kv_cache as kv_lib
from jaxsi.models import lora as lora_lib
from jaxsi.models import model as model_lib
from jaxsi.sampling import rollouts
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.training import loop as loop_lib
from jaxsi.training import loop_steps
from jaxsi.training import train_state as train_state_lib

MiB = 2 ** 20
GiB = 2 ** 30


def _fmt_bytes(n: Optional[float]) -> str:
  if n is None:
    return "n/a"
  return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


def _per_device_bytes(sds, sharding) -> int:
  shape = (sharding.shard_shape(tuple(sds.shape)) if sharding is not None
           else sds.shape)
  return int(math.prod(shape)) * jnp.dtype(sds.dtype).itemsize


def tree_bytes_per_device(abstract: Any, shardings: Any) -> int:
  """Bytes one device holds of ``abstract`` (ShapeDtypeStructs) sharded as
  ``shardings`` (a matching tree of Shardings)."""
  leaves = jax.tree.leaves(abstract)
  shs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(
      x, jax.sharding.Sharding))
  if len(leaves) != len(shs):
    raise ValueError(f"{len(leaves)} arrays but {len(shs)} shardings")
  return sum(_per_device_bytes(a, s) for a, s in zip(leaves, shs)
             if hasattr(a, "shape") and not jax.dtypes.issubdtype(
                 a.dtype, jax.dtypes.prng_key))


def _key_name(k) -> Any:
  return getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))


def opt_state_shardings(opt_state: Any, param_shardings: Any, mesh) -> Any:
  """Shardings of an abstract optimizer state: every leaf whose key path ends
  with a parameter's path (Adam moments, also inside ``optax.masked`` /
  ``multi_transform`` states, where frozen entries are empty) and has its
  shape gets that parameter's sharding; the rest is replicated."""
  by_path = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(
      param_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  for path, sh in flat:
    by_path[tuple(_key_name(k) for k in path)] = sh
  depth = max((len(p) for p in by_path), default=0)
  rep = partitioning.replicated(mesh)

  def one(path, leaf):
    names = tuple(_key_name(k) for k in path)
    for d in range(min(depth, len(names)), 0, -1):
      sh = by_path.get(names[-d:])
      if sh is not None:
        return sh if len(sh.spec) <= len(getattr(leaf, "shape", ())) else rep
    return rep

  return jax.tree_util.tree_map_with_path(one, opt_state)


@dataclasses.dataclass(frozen=True)
class PlanRow:
  """One parameter of the sharding plan."""

  path: str
  shape: tuple
  dtype: str
  spec: str
  per_device_bytes: int


def sharding_plan(model: model_lib.Model, shardings: Any) -> list:
  """PlanRows of every parameter (in params order)."""
  abstract = model.abstract_params()
  rows = []
  flat, _ = jax.tree_util.tree_flatten_with_path(abstract)
  shs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(
      x, jax.sharding.Sharding))
  for (path, sds), sh in zip(flat, shs):
    name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    rows.append(PlanRow(name, tuple(sds.shape), jnp.dtype(sds.dtype).name,
                        str(tuple(sh.spec)), _per_device_bytes(sds, sh)))
  return rows


def format_plan(rows: Sequence[PlanRow], n_layers: int) -> str:
  """The plan as text; only layer 0 of the identical layers is listed (a
  scanned model's ``layers.*`` rows hold all layers on their leading axis)."""
  lines = [f"{'parameter':44s} {'shape':>22s} {'dtype':>9s} {'spec':>34s} "
           f"{'per device':>11s}"]
  for r in rows:
    parts = r.path.split(".")
    if parts[0] == "layers" and parts[1].isdigit() and parts[1] != "0":
      continue
    name = r.path.replace("layers.0.", f"layers.[0..{n_layers - 1}].")
    lines.append(f"{name:44s} {str(r.shape):>22s} {r.dtype:>9s} "
                 f"{r.spec:>34s} {_fmt_bytes(r.per_device_bytes):>11s}")
  return "\n".join(lines)


def _batch_sharding(mesh, rules, size: int):
  """Batch sharding for a leading dim of ``size`` (replicated if it does not
  divide)."""
  if size % partitioning.batch_divisor(mesh, rules) == 0:
    return partitioning.data_sharding(mesh, rules)
  return partitioning.replicated(mesh)


def _shard_batch_tree(tree, mesh, rules, size: int):
  bsh = _batch_sharding(mesh, rules, size)
  rep = partitioning.replicated(mesh)
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(
          a.shape, a.dtype,
          sharding=bsh if a.ndim and a.shape[0] == size else rep), tree)


def _memory(compiled) -> Optional[dict]:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return {k: int(getattr(m, k, 0) or 0) for k in (
      "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
      "alias_size_in_bytes", "generated_code_size_in_bytes")}


def dry_run(*, model_config: mcfg.ModelConfig, method: Method, optimizer,
            prompts_per_step: int, prompt_len: int,
            data: int = -1, fsdp: int = 1, tensor: int = 1,
            lora_config: Optional[lora_lib.LoraConfig] = None,
            rules: Optional[Sequence] = None, compile_steps: bool = True,
            devices: Optional[Sequence[Any]] = None,
            stop_ids: Sequence[int] = (0,),
            compiler_options: Optional[tuple] = None,
            log: Callable[[str], None] = print) -> dict:
  """Plans (and optionally compiles) an RL run without weights.

  Args:
    model_config: the ModelConfig (e.g. ``get_config('qwen2.5-0.5b')``).
    method: the Method (e.g. ``jaxsi.methods.grpo.grpo(...)``).
    optimizer: the optax optimizer (wrapped in ``lora.freeze_base`` when
      ``lora_config`` is given).
    prompts_per_step: R prompts per rollout (B = R·n sequences).
    prompt_len: prompt bucket P (tokens).
    data, fsdp, tensor: mesh axis sizes (one may be -1).
    lora_config: train LoRA adapters on a frozen base instead.
    rules: logical-axis rules (default ``partitioning.DEFAULT_RULES``).
    compile_steps: lower and compile rollout, prepare and update.
    devices: devices of the mesh (default all).
    stop_ids: stop ids baked into the compiled sampler.
    compiler_options: XLA options as (name, value) pairs (e.g.
      ``loop.FAST_COMPILE`` for a quick check; memory figures then describe
      the less optimised program).
    log: printer for the report.

  Returns:
    A dict: ``plan`` (PlanRows), ``memory`` (bytes per device: params,
    opt_state, reference, kv_cache, xla_temp, total), ``compiled``
    ({step: {seconds, memory}}), ``mesh`` (axis sizes), ``batch``.
  """
  if isinstance(method.rollout, rollouts.Episodes):
    raise ConfigurationError(
        f"dry_run.dry_run: method {method.name!r} samples multi-turn episodes"
        " (rollouts.Episodes), but the dry run plans and compiles one"
        " single-turn rollout; run it for real (run_experiment without"
        " dry_run, or rl_run.run: MAIN = @rl_run.run), which trains episodes")
  rules = tuple(partitioning.DEFAULT_RULES if rules is None else rules)
  try:
    mesh = partitioning.make_mesh(data=data, fsdp=fsdp, tensor=tensor,
                                  devices=devices)
  except ValueError as e:
    raise ValueError(f"{e}. Run on the target hosts, change the mesh, or "
                     "rehearse on fake CPU devices (python -m jaxsi.dry_run "
                     "--cpu_devices=N)") from e
  if lora_config is not None:
    model = lora_lib.build(model_config, lora_config)
    optimizer = lora_lib.freeze_base(optimizer)
  else:
    model = model_lib.build(model_config)
  c = model_config
  n = method.n
  b = prompts_per_step * n
  g = int(method.max_new_tokens)
  if b % method.minibatches:
    raise ValueError(f"dry_run: B = {b} is not divisible by minibatches "
                     f"{method.minibatches}")

  psh = partitioning.param_shardings(model, mesh=mesh, rules=rules)
  params_abs = partitioning.with_shardings(model.abstract_params(), psh)
  key_abs = jax.eval_shape(lambda: jax.random.key(0))
  state_abs = jax.eval_shape(
      lambda p, k: train_state_lib.create_train_state(
          p, optimizer, k, method_state=method.transform.init()),
      params_abs, key_abs)
  rep = partitioning.replicated(mesh)
  ssh = train_state_lib.TrainState(
      params=psh,
      opt_state=opt_state_shardings(state_abs.opt_state, psh, mesh),
      step=rep, rng=rep,
      method_state=jax.tree.map(lambda _: rep, state_abs.method_state))
  state_abs = partitioning.with_shardings(state_abs, ssh)

  plan = sharding_plan(model, psh)
  params_bytes = sum(r.per_device_bytes for r in plan)
  opt_bytes = tree_bytes_per_device(state_abs.opt_state, ssh.opt_state)
  if not method.needs(REFERENCE):
    ref_bytes = 0
  elif lora_config is not None:  # zero adapters; the base arrays are shared
    ref_bytes = sum(r.per_device_bytes for r in plan if r.path.endswith(
        "lora_b"))
  else:
    ref_bytes = params_bytes
  cache_shape = (c.n_layers, b, prompt_len + g, c.n_kv_heads, c.head_dim)
  cache_spec = partitioning.logical_to_spec(
      kv_lib.cache_logical_axes().k, rules, shape=cache_shape, mesh=mesh)
  cache_sds = jax.ShapeDtypeStruct(cache_shape, jnp.dtype(c.dtype))
  kv_bytes = 2 * _per_device_bytes(cache_sds, NamedSharding(mesh, cache_spec))

  log(f"== dry run: {mcfg.describe(c)}"
      + (f" + LoRA r={lora_config.rank} on {list(lora_config.targets)}"
         if lora_config is not None else ""))
  log(f"mesh {dict(mesh.shape)} ({mesh.size} devices: "
      f"{mesh.devices.flat[0].platform}); rollout R={prompts_per_step} x "
      f"n={n} = B={b}, P={prompt_len}, G={g}; {method.epochs} epoch(s) x "
      f"{method.minibatches} minibatch(es)")
  log(format_plan(plan, c.n_layers))

  compiled = {}
  if compile_steps:
    rsh = _batch_sharding(mesh, rules, prompts_per_step)
    i32 = jnp.int32
    prompts = jax.ShapeDtypeStruct((prompts_per_step, prompt_len), i32,
                                   sharding=rsh)
    pmask = jax.ShapeDtypeStruct((prompts_per_step, prompt_len), bool,
                                 sharding=rsh)
    per_row = jax.ShapeDtypeStruct((prompts_per_step,), bool, sharding=rsh)
    ids = jax.ShapeDtypeStruct((prompts_per_step,), i32, sharding=rsh)
    key_sh = jax.ShapeDtypeStruct(key_abs.shape, key_abs.dtype, sharding=rep)
    gen_kwargs = dict(strategy=rollouts.strategy_of(method.spec), n=n, gen_length=g,
                      stop_ids=tuple(int(s) for s in stop_ids), pad_id=0)

    def gen_fn(params, tokens, mask, rng, max_new, valid, prompt_ids):
      return sampler_lib.generate(model, params, tokens, mask, rng=rng,
                                  max_new_tokens=max_new, valid=valid,
                                  prompt_ids=prompt_ids, **gen_kwargs)

    gen_args = (params_abs, prompts, pmask, key_sh,
                jax.ShapeDtypeStruct((), i32, sharding=rep), per_row, ids)
    t0 = time.perf_counter()
    gen_c = jax.jit(gen_fn, compiler_options=dict(compiler_options or ()) or
                    None).lower(*gen_args).compile()
    compiled["rollout"] = dict(seconds=time.perf_counter() - t0,
                               memory=_memory(gen_c))
    traj_abs, _ = jax.eval_shape(gen_fn, *gen_args)
    k = len(method.rollout.reward_names(reward_stages.stage_names(
        reward_stages.as_stages(method.rewards))))
    traj_abs = traj_abs.replace(rewards=jax.ShapeDtypeStruct((b, k),
                                                             jnp.float32))
    traj_abs = _shard_batch_tree(traj_abs, mesh, rules, b)

    t = method.temperature
    scorers = [(POLICY, loop_steps.score_fn(model, t)),  # pylint: disable=protected-access
               (POLICY_ENTROPY, loop_steps.score_fn(model, t, with_entropy=True))]  # pylint: disable=protected-access
    if c.value_head:
      scorers.append((POLICY_VALUES, loop_steps.score_fn(model, t, with_values=True)))  # pylint: disable=protected-access
    # LoRA: the reference is derived from the live params inside the step
    # (frozen base, zero adapters), as in the Loop; no second copy.
    lora_ref = lora_config is not None and method.needs(REFERENCE)
    aux = {REFERENCE: params_abs} if method.needs(REFERENCE) and not lora_ref else {}
    method_state = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
        state_abs.method_state)
    step_abs = jax.ShapeDtypeStruct((), i32, sharding=rep)
    prep_args = (params_abs, aux, traj_abs, method_state, key_sh, step_abs)
    prep_kwargs = dict(transform=method.transform, scorers=tuple(scorers),
                       lora_reference=lora_ref)
    opts = None if compiler_options is None else tuple(compiler_options)
    prepare = loop_steps.prepare_jit(opts)  # pylint: disable=protected-access
    t0 = time.perf_counter()
    prep_c = prepare.lower(*prep_args, **prep_kwargs).compile()
    compiled["prepare"] = dict(seconds=time.perf_counter() - t0,
                               memory=_memory(prep_c))
    prepared, _, _ = jax.eval_shape(
        functools.partial(loop_steps._prepare_fn, **prep_kwargs), *prep_args)  # pylint: disable=protected-access
    prepared = _shard_batch_tree(prepared, mesh, rules, b)

    perm = jax.ShapeDtypeStruct(
        (method.epochs * method.minibatches, b // method.minibatches), i32,
        sharding=rep)
    train = loop_steps.sharded_train_fn(model, optimizer, method, ssh, mesh, opts,  # pylint: disable=protected-access
                                     rules=rules, batch_size=b)
    t0 = time.perf_counter()
    train_c = train.lower(state_abs, prepared, perm).compile()
    compiled["update"] = dict(seconds=time.perf_counter() - t0,
                              memory=_memory(train_c))

  temps = [v["memory"]["temp_size_in_bytes"] for v in compiled.values()
           if v["memory"] is not None]
  xla_temp = max(temps) if temps else None
  resident = params_bytes + opt_bytes + ref_bytes
  total = resident + (xla_temp if xla_temp is not None else kv_bytes)
  memory = dict(params=params_bytes, opt_state=opt_bytes, reference=ref_bytes,
                kv_cache=kv_bytes, xla_temp=xla_temp, total=total)
  log("estimated memory per device:")
  log(f"  params        {_fmt_bytes(params_bytes)}")
  log(f"  optimizer     {_fmt_bytes(opt_bytes)}")
  log(f"  reference     {_fmt_bytes(ref_bytes)}"
      + ("  (LoRA: base shared)" if lora_config is not None and
         method.needs(REFERENCE) else ""))
  log(f"  rollout cache {_fmt_bytes(kv_bytes)}  ([L,B,P+G,Hkv,Dh] k and v, "
      f"spec {tuple(cache_spec)})")
  for name, v in compiled.items():
    mem = v["memory"] or {}
    log(f"  compiled {name:8s} in {v['seconds']:.1f}s: XLA temp "
        f"{_fmt_bytes(mem.get('temp_size_in_bytes'))}, args "
        f"{_fmt_bytes(mem.get('argument_size_in_bytes'))}")
  basis = ("resident + largest XLA temp" if xla_temp is not None
           else "resident + rollout cache; activations not included "
                "(compile for XLA's figure)")
  log(f"  total         {_fmt_bytes(total)}  ({basis})")
  return dict(plan=plan, memory=memory, compiled=compiled,
              mesh=dict(mesh.shape), batch=b)


plan_and_compile = dry_run  # alias: run_experiment's flag shadows the name


# ------------------------------------------------------------- experiment
def run_experiment(*, method: Method, optimizer, mesh: Mapping[str, int],
                   prompts_per_step: int, prompt_len: int,
                   model_preset: Optional[str] = None,
                   model_overrides: Optional[Mapping[str, Any]] = None,
                   hf_checkpoint: Optional[str] = None,
                   tokenizer_path: Optional[str] = None,
                   data_path: Optional[str] = None,
                   dataset: str = "gsm8k", split: str = "train",
                   use_chat_template: bool = True,
                   system_prompt: Optional[str] = None,
                   eos_token: Optional[str] = None,
                   lora_config: Optional[lora_lib.LoraConfig] = None,
                   num_steps: int = 100, seed: int = 0,
                   workdir: Optional[str] = None, checkpoint_every: int = 0,
                   limit: Optional[int] = None, dry_run: bool = False,
                   compile_steps: bool = True,
                   compiler_options: Optional[tuple] = None,
                   log: Callable[[str], None] = print) -> Any:
  """An RL experiment on a local HF checkpoint and GSM8K/MATH files.

  Args:
    method: the Method.
    optimizer: the optax optimizer.
    mesh: ``{'data': .., 'fsdp': .., 'tensor': ..}`` axis sizes.
    prompts_per_step: R prompts per rollout.
    prompt_len: prompt bucket (longer prompts raise in the trainer).
    model_preset: a ``jaxsi.models.config`` preset, used when
      ``hf_checkpoint/config.json`` is absent (a dry run needs no files).
    model_overrides: ModelConfig fields to override.
    hf_checkpoint: local HF directory (config.json + safetensors).
    tokenizer_path: tokenizer directory (default ``hf_checkpoint``).
    data_path: GSM8K (or MATH) file or directory.
    dataset: 'gsm8k' or 'math'.
    split: data split.
    use_chat_template: render prompts with the tokenizer's chat template.
    system_prompt: optional system message.
    eos_token: stop token override (e.g. ``'<|im_end|>'``).
    lora_config: train LoRA adapters (reference = base, not copied).
    num_steps: RL iterations.
    seed: run seed.
    workdir: metrics and checkpoints.
    checkpoint_every: checkpoint interval (iterations).
    limit: use the first ``limit`` tasks.
    dry_run: plan/compile without weights (see ``dry_run``) and return its
      report instead of training.
    compile_steps: with ``dry_run``, also compile the steps.
    compiler_options: XLA options, (name, value) pairs (dry run and trainer).
    log: printer.

  Returns:
    The dry-run report, or the finished ``Loop``.
  """
  from jaxsi.models import hf  # pylint: disable=g-import-not-at-top
  from jaxsi.training import arguments as A  # pylint: disable=g-import-not-at-top
  A.check("dry_run.run_experiment", locals(), dict(
      prompts_per_step=A.integer(1), prompt_len=A.integer(1),
      use_chat_template=A.flag(), num_steps=A.integer(0), seed=A.integer(0),
      checkpoint_every=A.integer(0), limit=A.integer(1), dry_run=A.flag(),
      compile_steps=A.flag()))
  A.check("dry_run.run_experiment.mesh", dict(mesh or {}), dict(
      data=A.integer(-1), fsdp=A.integer(-1), tensor=A.integer(-1)))
  if dataset not in ("gsm8k", "math"):
    raise A.ArgumentError(f"dry_run.run_experiment.dataset = {dataset!r}: expected"
                          " 'gsm8k' or 'math'")
  overrides = dict(model_overrides or {})
  if hf_checkpoint is not None and os.path.isfile(
      os.path.join(hf_checkpoint, "config.json")):
    config = hf.config_from_hf(hf.read_hf_config(hf_checkpoint), **overrides)
  elif model_preset is not None:
    config = mcfg.get_config(model_preset, **overrides)
  elif hf_checkpoint is not None:
    hf.read_hf_config(hf_checkpoint)  # raises: says what to put where
  else:
    raise ValueError("run_experiment: set model_preset or hf_checkpoint")
  mesh_sizes = {**dict(data=-1, fsdp=1, tensor=1), **dict(mesh)}
  if dry_run:
    return plan_and_compile(
        model_config=config, method=method, optimizer=optimizer,
        prompts_per_step=prompts_per_step, prompt_len=prompt_len,
        lora_config=lora_config, compile_steps=compile_steps,
        compiler_options=compiler_options, log=log, **mesh_sizes)

  from jaxsi.data import hf_tokenizer  # pylint: disable=g-import-not-at-top
  from jaxsi.data import math_datasets  # pylint: disable=g-import-not-at-top
  if hf_checkpoint is None or data_path is None:
    raise ValueError("run_experiment: a real run needs hf_checkpoint and "
                     "data_path (local files; nothing is downloaded)")
  tokenizer = hf_tokenizer.load_tokenizer(tokenizer_path or hf_checkpoint,
                                          eos_token=eos_token)
  chat = tokenizer.template if use_chat_template else None
  loader = {"gsm8k": math_datasets.load_gsm8k,
            "math": math_datasets.load_math}[dataset]
  tasks = loader(data_path, split=split, chat_template=chat,
                 system_prompt=system_prompt, limit=limit)
  device_mesh = partitioning.make_mesh(**mesh_sizes)
  model, params = hf.load_pretrained(hf_checkpoint, mesh=device_mesh,
                                     **overrides)
  if lora_config is not None:
    model = lora_lib.build(model.config, lora_config)
    adapters = model.init_adapters(jax.random.key(seed))
    adapters = jax.device_put(adapters, lora_lib.adapter_params(
        partitioning.param_shardings(model, mesh=device_mesh)))
    params = lora_lib.add_adapters(params, adapters)
    optimizer = lora_lib.freeze_base(optimizer)
  log(f"{len(tasks)} {dataset} tasks; {mcfg.describe(model.config)}; "
      f"tokenizer {tokenizer}")
  trainer = loop_lib.Loop(
      model=model, params=params, method=method, tokenizer=tokenizer,
      tasks=tasks, optimizer=optimizer, prompts_per_step=prompts_per_step,
      seed=seed, workdir=workdir, checkpoint_every=checkpoint_every,
      console=True, compiler_options=compiler_options, mesh=device_mesh,
      copy_params=False)
  trainer.run(num_steps)
  return trainer


def main(argv: Sequence[str]) -> None:
  """``python -m jaxsi.dry_run --gin_file=... [--gin_bindings=...]``."""
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags_ = flags.FLAGS
  if flags_.cpu_devices:  # before anything initialises the JAX backend
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count="
                               f"{flags_.cpu_devices}").strip()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  gin.add_config_file_search_path(repo)
  gin.add_config_file_search_path(os.path.join(repo, "gin_configs"))
  gin.parse_config_files_and_bindings(flags_.gin_file, flags_.gin_bindings)
  from jaxsi import dry_run as lib  # pylint: disable=g-import-not-at-top
  # As ``python -m``, this file is ``__main__``; gin registered the module.
  fn = gin.get_configurable(lib.run_experiment)
  fn(dry_run=flags_.dry_run)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_multi_string("gin_file", [], "gin config files")
  flags.DEFINE_multi_string("gin_bindings", [], "gin bindings")
  flags.DEFINE_bool("dry_run", True, "plan, estimate memory and compile "
                    "without weights (--nodry_run trains)")
  flags.DEFINE_integer("cpu_devices", 0, "if > 0, plan on this many fake CPU "
                       "devices (rehearse a GPU/TPU mesh on a workstation)")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
