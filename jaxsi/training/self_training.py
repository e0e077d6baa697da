"""Warm start + rounds of rejection-sampling self-training (the quickstart).

The recipe of RFT (Yuan et al. 2023, "Scaling Relationship on Learning
Mathematical Reasoning with LLMs") and ReST-EM (Singh et al. 2023, "Beyond
Human Data"), itself the E/M view of STaR (Zelikman et al. 2022):

  0. supervised warm start on a small labeled set;
  for each round r:
  1. E-step: sample k completions per unlabeled problem with the current model;
  2. keep the completions the verifier accepts (binary reward r(x, y) = 1),
     at most ``max_per_prompt`` distinct ones per problem;
  3. M-step: fine-tune on labeled ∪ kept (from the current model, or from the
     base model when ``train_from='base'`` as ReST-EM prescribes);
  4. evaluate held-out pass@1 (greedy) and record the round.

Everything inside is jitted (sampler, update step); this module is the
plain-Python schedule around them.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.data import batching
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as model_config
from jaxsi.models import model as model_lib
from jaxsi.sampling import strategies
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import evaluation
from jaxsi.training import loops
from jaxsi.training import metrics as metrics_lib
from jaxsi.training import optimizer as optimizer_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as train_state_lib


def keep_verified(tasks: Sequence[Any], ro: loops.Rollout, *,
                  max_per_prompt: int) -> tuple[list[str], list[str], list[str]]:
  """Rejection sampling filter: distinct verified completions per problem.

  Args:
    tasks: the problems, ``ro.n`` samples each (contiguous).
    ro: the rollout.
    max_per_prompt: keep at most this many distinct correct completions.

  Returns:
    (prompts, completions, task ids) of the kept samples.
  """
  prompts, completions, ids = [], [], []
  for i, task in enumerate(tasks):
    seen = set()
    for j in range(i * ro.n, (i + 1) * ro.n):
      text = ro.texts[j]
      if ro.correct[j] and text not in seen and len(seen) < max_per_prompt:
        seen.add(text)
        prompts.append(task.prompt)
        completions.append(text)
        ids.append(f"{task.id}/kept{len(seen)}")
  return prompts, completions, ids


def run(
    *,
    workdir: str,
    task: str = "addition",
    task_format: Optional[dict] = None,
    difficulty: Sequence[int] = (1, 2, 3),
    n_labeled: int = 128,
    n_unlabeled: int = 2048,
    n_test: int = 256,
    model: str = "tiny",
    model_overrides: Optional[dict] = None,
    max_len: int = 32,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    warmup_steps: int = 20,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    warm_start_steps: int = 200,
    rounds: int = 3,
    steps_per_round: int = 200,
    samples_per_prompt: int = 4,
    temperature: float = 1.0,
    max_per_prompt: int = 1,
    train_from: str = "current",
    max_new_tokens: int = 8,
    rollout_batch: int = 512,
    seed: int = 0,
    control: bool = False,
    plot: bool = True,
) -> dict:
  """Runs warm start + self-training rounds and reports held-out accuracy.

  Args:
    workdir: output directory (metrics.jsonl, TensorBoard, results, plot,
      checkpoints).
    task: registered synthetic task name.
    task_format: format options of the task generator (e.g. ``reverse``).
    difficulty: difficulty levels mixed in every split.
    n_labeled: size of the labeled (supervised) warm-start set.
    n_unlabeled: problems used for self-training (answers only for the
      verifier; their reference solutions are never trained on).
    n_test: held-out problems.
    model: model preset name.
    model_overrides: ModelConfig overrides.
    max_len: padded training length.
    batch_size: training batch size.
    learning_rate, warmup_steps, weight_decay, max_grad_norm: AdamW settings
      (constant learning rate after warmup, restarted each round).
    warm_start_steps: supervised steps on the labeled set.
    rounds: self-training rounds.
    steps_per_round: fine-tuning steps per round.
    samples_per_prompt: k samples per unlabeled problem.
    temperature: sampling temperature of the E-step.
    max_per_prompt: distinct verified completions kept per problem.
    train_from: 'current' (continue) or 'base' (ReST-EM: restart from the
      warm-started model each round; data still accumulates from the latest
      round only).
    max_new_tokens: completion budget.
    rollout_batch: sampler rows per call.
    seed: global seed.
    control: also run the no-self-training control: the same number of
      fine-tuning steps per round on the labeled set only (separates the
      effect of the kept self-generated data from that of more steps).
    plot: write ``accuracy.png``.

  Returns:
    A dict with per-round accuracy and dataset sizes.
  """
  if train_from not in ("current", "base"):
    raise ValueError(f"train_from must be 'current' or 'base', got {train_from!r}")
  os.makedirs(workdir, exist_ok=True)
  t_start = time.time()
  fmt = dict(task_format or {})
  tokenizer = char_tokenizer.CharTokenizer()
  levels = list(difficulty)
  pool, test = tasks_lib.make_train_test(
      task, n_train=n_labeled + n_unlabeled, n_test=n_test, difficulty=levels,
      seed=seed, **fmt)
  labeled, unlabeled = pool[:n_labeled], pool[n_labeled:]

  cfg = model_config.get_config(model, vocab_size=tokenizer.vocab_size,
                                **(model_overrides or {}))
  rng = jax.random.key(seed)
  rng, init_rng = jax.random.split(rng)
  mdl, params = model_lib.init(cfg, init_rng)
  print(f"[jaxsi] model {model}: {model_lib.count_params(params):,} params; task {task}"
        f" difficulty {levels}; labeled {len(labeled)}, unlabeled {len(unlabeled)},"
        f" test {len(test)}", flush=True)

  def new_optimizer(total):
    return optimizer_lib.make_optimizer(
        learning_rate=learning_rate, schedule="constant",
        warmup_steps=warmup_steps, total_steps=max(total, warmup_steps + 1),
        weight_decay=weight_decay, max_grad_norm=max_grad_norm)

  objective = steps_lib.sft_objective(agg="token-mean")
  greedy = strategies.Greedy()
  sampling = strategies.Temperature(temperature=temperature)
  writer = metrics_lib.MetricWriter(workdir)
  history = {"round": [], "test_pass@1": [], "unlabeled_pass@1": [], "kept": [],
             "train_size": [], "seconds": []}
  if control:
    history["control_pass@1"] = []
  global_step = 0

  def fit(params, prompts, completions, ids, steps, tag, data_seed):
    nonlocal global_step
    arrays = batching.sft_arrays(tokenizer, prompts, completions, max_len=max_len,
                                 ids=ids)
    opt = new_optimizer(steps)
    update = steps_lib.make_update_step(model=mdl, optimizer=opt,
                                        objective=objective)
    # The update step donates its state: train on a copy so the caller's
    # params (e.g. the warm-started base kept for ReST-EM) stay valid.
    params = jax.tree.map(jnp.copy, params)
    state = train_state_lib.create_train_state(params, opt, jax.random.key(data_seed))
    it = batching.EpochIterator(len(prompts), min(batch_size, len(prompts)),
                                seed=data_seed)
    res = loops.train_sft(state=state, update_step=update, arrays=arrays,
                          iterator=it, num_steps=steps, writer=writer,
                          desc=tag, step_offset=global_step)
    global_step += steps
    if res.skipped_nonfinite:
      print(f"[jaxsi] {tag}: {res.skipped_nonfinite} non-finite steps skipped",
            flush=True)
    return res.state.params, res.last_metrics

  def test_accuracy(params, r):
    ro = loops.rollout(model=mdl, params=params, tokenizer=tokenizer, tasks=test,
                       rng=jax.random.key(10_000 + r), strategy=greedy, n=1,
                       max_new_tokens=max_new_tokens, batch_size=rollout_batch)
    return ro, evaluation.evaluate(loops.eval_records(test, ro), ks=(1,), maj_ks=())

  # 0. Warm start.
  params, m = fit(params, [t.prompt for t in labeled], [t.target for t in labeled],
                  [t.id for t in labeled], warm_start_steps, "warm_start", seed)
  base_params = control_params = params
  _, res = test_accuracy(params, 0)
  if control:
    history["control_pass@1"].append(res["overall"]["pass@1"])
  results_by_round = {"warm start": res}
  history["round"].append(0)
  history["test_pass@1"].append(res["overall"]["pass@1"])
  history["unlabeled_pass@1"].append(None)
  history["kept"].append(0)
  history["train_size"].append(len(labeled))
  history["seconds"].append(round(time.time() - t_start, 1))
  writer.write_scalars(global_step, {"eval/test_pass@1": res["overall"]["pass@1"]})
  print(f"[jaxsi] warm start: held-out pass@1 = {res['overall']['pass@1']:.3f}"
        f" (train loss {m.get('loss', float('nan')):.3f})", flush=True)

  for r in range(1, rounds + 1):
    # 1. E-step: sample k per unlabeled problem.
    ro = loops.rollout(model=mdl, params=params, tokenizer=tokenizer,
                       tasks=unlabeled, rng=jax.random.key(seed * 7919 + r),
                       strategy=sampling, n=samples_per_prompt,
                       max_new_tokens=max_new_tokens, batch_size=rollout_batch)
    # 2. Keep the verified ones.
    kp, kc, kid = keep_verified(unlabeled, ro, max_per_prompt=max_per_prompt)
    sample_acc = float(np.mean(ro.correct))
    # 3. M-step on labeled ∪ kept.
    prompts = [t.prompt for t in labeled] + kp
    completions = [t.target for t in labeled] + kc
    ids = [t.id for t in labeled] + kid
    start_params = base_params if train_from == "base" else params
    params, m = fit(start_params, prompts, completions, ids, steps_per_round,
                    f"round{r}", seed + r)
    if control:  # Same steps on the labeled set only.
      control_params, _ = fit(control_params, [t.prompt for t in labeled],
                              [t.target for t in labeled], [t.id for t in labeled],
                              steps_per_round, f"control{r}", seed + r)
      history["control_pass@1"].append(
          test_accuracy(control_params, r)[1]["overall"]["pass@1"])
    # 4. Evaluate.
    _, res = test_accuracy(params, r)
    results_by_round[f"round {r}"] = res
    history["round"].append(r)
    history["test_pass@1"].append(res["overall"]["pass@1"])
    history["unlabeled_pass@1"].append(sample_acc)
    history["kept"].append(len(kp))
    history["train_size"].append(len(prompts))
    history["seconds"].append(round(time.time() - t_start, 1))
    writer.write_scalars(global_step, {
        "eval/test_pass@1": res["overall"]["pass@1"],
        "rollout/sample_accuracy": sample_acc, "rollout/kept": len(kp),
        "rollout/tokens_per_s": ro.tokens_generated / max(ro.seconds, 1e-9)})
    print(f"[jaxsi] round {r}: sampled acc {sample_acc:.3f}, kept {len(kp)}"
          f"/{len(unlabeled)} problems, held-out pass@1 = "
          f"{res['overall']['pass@1']:.3f}", flush=True)

  writer.close()
  table = _history_table(history)
  print("\n" + table, flush=True)
  print("\nHeld-out pass@1 per difficulty (last round):", flush=True)
  print(evaluation.results_table(res), flush=True)
  summary = {"history": history,
             "results": {k: v for k, v in results_by_round.items()}}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=1, default=str)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  if plot:
    curves = {"round": history["round"], "held-out pass@1": history["test_pass@1"]}
    if control:
      curves["control: labeled only"] = history["control_pass@1"]
    evaluation.plot_curves(
        curves,
        os.path.join(workdir, "accuracy.png"), x="round",
        title=f"self-training on {task} (tiny model)", ylabel="pass@1")
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1)
  ckpt.save(global_step, {"params": params}, force=True)
  ckpt.close()
  print(f"[jaxsi] done in {time.time() - t_start:.0f}s; outputs in {workdir}",
        flush=True)
  return summary


def _history_table(h: dict) -> str:
  ctl = "control_pass@1" in h
  lines = ["| round | held-out pass@1 |" + (" control (labeled only) |" if ctl else "")
           + " sample acc (unlabeled) | kept | train size | time (s) |",
           "|---|---|" + ("---|" if ctl else "") + "---|---|---|---|"]
  for i, r in enumerate(h["round"]):
    sa = h["unlabeled_pass@1"][i]
    lines.append(
        f"| {'warm start' if r == 0 else r} | {h['test_pass@1'][i]:.3f} | "
        + (f"{h['control_pass@1'][i]:.3f} | " if ctl else "")
        + f"{'-' if sa is None else f'{sa:.3f}'} | {h['kept'][i]} | "
        f"{h['train_size'][i]} | {h['seconds'][i]} |")
  return "\n".join(lines)
