r"""Self-correction in miniature: SCoRe vs SFT on correction traces vs two-turn GRPO.

The claim of SCoRe (Kumar et al. 2024, arXiv:2409.12917, Table 1/2): multi-turn
RL with a stage-I initialisation and a progress bonus gives a *positive*
self-correction gap Δ(t1, t2) = acc(turn 2) − acc(turn 1), while supervised
fine-tuning on correction traces (STaR / Pair-SFT) leaves it ≈ 0 (the model
learns not to change its first answer).

Set-up (all CPU-sized, one command)::

  python experiments/self_correction_bench.py --out=/tmp/self_correction.md

* Task (``--task``): reversed-digit addition (``--digits``, default 2), where
  checking an answer costs as much as finding it, or ``pair_sum`` (which two
  of ``--digits`` listed digits sum to the target), where checking is one
  addition and finding is a search; character tokenizer, a 2-layer d=64
  decoder.
* Format: ``a+b=`` → attempt 1 → injected ``" try again="`` → attempt 2.
* Warm start (shared): SFT on single-turn answers and two-turn transcripts
  (attempt 1 = the target or a one-digit corruption of it, attempt 2 = the
  target; loss on correct attempts only), so the format is known.
* Methods, each from the warm start, the same RL problems (unlabelled, only
  the verifier) and the same number of episodes:
  - ``sft_traces``: SFT on the warm model's own turn-1 samples paired with the
    correct turn 2 (Pair-SFT-style correction traces, loss on turn 2);
  - ``pair_sft``: Pair-SFT from the warm model's own samples only (a wrong
    sample paired with a correct sample of the same problem; no gold
    answers);
  - ``star_traces``: SFT on the warm model's own two-attempt episodes that
    fixed a wrong first attempt (STaR-style, loss on turn 2);
  - ``grpo_r2`` / ``grpo_sum``: plain two-turn GRPO with R = r2 / r1 + r2;
  - ``grpo``: single-turn GRPO on attempt 1; ``critique_grpo`` /
    ``critique_grpo_ctx``: Critique-GRPO (a verifier critique after a wrong
    attempt, the refinement joins the group; trained off-policy as an answer
    to the bare question — the paper — or in its critique context). These
    target attempt-1 accuracy (the Critique-GRPO paper's claim: refinements
    help the single-turn policy beyond GRPO);
  - ``ppo_score``: SCoRe's stage-II reward (progress bonus on attempt 2)
    optimised by PPO with GAE across the attempts and a value head
    (``methods.multi_turn_ppo``), no stage I;
  - ``score``: SCoRe stage I (r2, strong KL on turn 1) then stage II
    (r1 + r2 + α(r2 − r1), per-turn returns), advantages scaled by the group
    std (``--score_scale``); ``score_raw``: the same with the paper's raw
    returns.
* Defaults (docs/self_correction.md has the measured table): 800 warm-start
  steps, 120 RL iterations × 16 prompts × 4 episodes, lr 2e-4, α = 10,
  β1 = 0.01, stage-I β2 = 0.5; ≈15 min on 2 shared CPU cores.
* Evaluation: held-out problems, greedy, both attempts always played;
  turn-1 / turn-2 accuracy, Δ(t1,t2), wrong→right and right→wrong rates.

Writes ``--out`` (markdown table) and ``<out>.json`` (numbers, settings and a
few example episodes per method).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import methods as methods_lib
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import strategies
from jaxsi.training import evaluate as evaluate_lib
from jaxsi.training import fit as fit_lib
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib

_METHODS = flags.DEFINE_list(
    "methods", ["sft_traces", "grpo_r2", "grpo_sum", "score", "score_raw"],
    "Methods to compare (the warm start is always reported).")
_TASK = flags.DEFINE_enum(
    "task", "addition", ["addition", "pair_sum"],
    "addition: reversed-digit addition (checking an answer costs as much as "
    "finding it); pair_sum: which two listed digits sum to the target (checking "
    "is one addition, finding is a search over pairs).")
_DIGITS = flags.DEFINE_integer("digits", None, "Operand digits (addition, "
                               "default 2) or list length (pair_sum, default 6).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Training problems.")
_N_TEST = flags.DEFINE_integer("n_test", 200, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 800, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_SFT_FRACTION = flags.DEFINE_float(
    "sft_fraction", 0.5, "Fraction of the training problems with labels for "
    "the warm start (the rest is the unlabelled RL pool).")
_WRONG_FRACTION = flags.DEFINE_float(
    "wrong_fraction", 0.5, "Warm start: fraction of two-turn transcripts whose "
    "first attempt is a corrupted answer.")
_RL_STEPS = flags.DEFINE_integer("rl_steps", 120, "RL iterations per method "
                                 "(SCoRe: split between stage I and II).")
_STAGE1_FRACTION = flags.DEFINE_float("stage1_fraction", 0.3,
                                      "SCoRe: fraction of iterations in stage I.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 4, "Episodes per prompt.")
_LR = flags.DEFINE_float("lr", 2e-4, "RL / correction-SFT learning rate.")
_ALPHA = flags.DEFINE_float("alpha", 10.0, "SCoRe progress-bonus α.")
_KL_BASE = flags.DEFINE_float("kl_base", 0.01, "SCoRe β1.")
_KL_FIRST = flags.DEFINE_float("kl_first", 0.5, "SCoRe stage-I β2 (turn 1).")
_BONUS_TO_FIRST = flags.DEFINE_bool(
    "bonus_to_first", True, "SCoRe stage II: credit the progress bonus to the "
    "first attempt too (the literal Eq. 4 sum; rewards a wrong first attempt "
    "when alpha > 1) or only to the second.")
_ANCHOR_FIRST = flags.DEFINE_float(
    "anchor_first", 0.0, "SCoRe stage II: extra KL weight on attempt-1 tokens "
    "(0 = the paper).")
_SCALE = flags.DEFINE_enum("score_scale", "group", ["group", "none"],
                           "SCoRe advantage scaling (group std, or the raw "
                           "returns of the paper).")
_TRACE_STEPS = flags.DEFINE_integer(
    "trace_steps", 0, "sft_traces / star_traces optimizer steps (0: as many "
    "as RL iterations).")
_PAIR_SAMPLES = flags.DEFINE_integer(
    "pair_samples", 4, "pair_sft: own first attempts sampled per problem.")
_PAIR_KEEP_CORRECT = flags.DEFINE_bool(
    "pair_keep_correct", True, "pair_sft: also train correct → correct "
    "traces (else only wrong → right).")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_SAMPLED = flags.DEFINE_integer(
    "sampled_repeats", 4, "Held-out episodes per problem at temperature 1 "
    "(0: greedy evaluation only).")
_WARM_CACHE = flags.DEFINE_string(
    "warm_cache", "", "If set, the warm-start params are loaded from / saved "
    "to this .npz file (same flags ⇒ same warm start; saves minutes when "
    "re-running the RL part).")
_OUT = flags.DEFINE_string("out", "/tmp/jaxsi_self_correction.md",
                           "Markdown output (JSON next to it).")

_FLAGS = (_METHODS, _TASK, _DIGITS, _SEED, _N_TRAIN, _N_TEST, _SFT_STEPS, _SFT_LR,
          _SFT_FRACTION, _WRONG_FRACTION, _RL_STEPS, _STAGE1_FRACTION,
          _PROMPTS, _N, _LR, _ALPHA, _KL_BASE, _KL_FIRST, _TRACE_STEPS,
          _D_MODEL, _LAYERS, _WARM_CACHE, _SCALE, _BONUS_TO_FIRST, _ANCHOR_FIRST,
          _SAMPLED, _PAIR_SAMPLES, _PAIR_KEEP_CORRECT)

FEEDBACK = " try again="
# Critique-GRPO's verifier critiques (VerifierCritique templates).
CRITIQUE = {"pair_sum": " no, use {first}=", "addition": " no, ends {last}="}
INJECT_LENGTH = 16


# ------------------------------------------------------------------ data
def corrupt(task, rng: np.random.Generator) -> str:
  """A wrong answer: one edit away from an addition target (digit change,
  drop or insert), or another pair of a pair-sum list (in list order)."""
  target = task.target
  if task.category == "pair_sum":
    nums = list(task.meta["numbers"])
    while True:
      i, j = sorted(int(x) for x in rng.choice(len(nums), size=2, replace=False))
      out = f"{nums[i]}{nums[j]}"
      if out != target:
        return out
  while True:
    kind = rng.integers(3)
    s = list(target)
    i = int(rng.integers(len(s)))
    if kind == 0 or len(s) == 1:
      s[i] = str((int(s[i]) + int(rng.integers(1, 10))) % 10)
    elif kind == 1:
      del s[i]
    else:
      s.insert(i, str(int(rng.integers(10))))
    out = "".join(s)
    if out and out != target:
      return out


def transcript_arrays(tok, convs, max_len: int):
  """Encodes conversations into SFT arrays.

  Each conversation is a list of ``(text, role, train)``: role 'prompt'
  (BOS + text), 'model' (text + EOS; in the loss when ``train``) or
  'inject' (text, never in the loss).
  """
  n = len(convs)
  tokens = np.full((n, max_len), tok.pad_id, np.int32)
  input_mask = np.zeros((n, max_len), bool)
  loss_mask = np.zeros((n, max_len), bool)
  for i, conv in enumerate(convs):
    ids, lm = [], []
    for text, role, train in conv:
      piece = list(tok.encode(text))
      if role == "prompt":
        piece = [tok.bos_id] + piece
      if role == "model":
        piece = piece + [tok.eos_id]
      ids += piece
      lm += [role == "model" and train] * len(piece)
    if len(ids) > max_len:
      raise ValueError(f"conversation {i} has {len(ids)} tokens > {max_len}")
    tokens[i, :len(ids)] = ids
    input_mask[i, :len(ids)] = True
    loss_mask[i, :len(ids)] = lm
  return dict(tokens=tokens, input_mask=input_mask, loss_mask=loss_mask)


def warm_start_convs(tasks, rng, wrong_fraction: float):
  """Single-turn answers + two-turn transcripts (the format)."""
  convs = []
  for t in tasks:
    convs.append([(t.prompt, "prompt", False), (t.target, "model", True)])
    if rng.random() < wrong_fraction:
      convs.append([(t.prompt, "prompt", False),
                    (corrupt(t, rng), "model", False),
                    (FEEDBACK, "inject", False), (t.target, "model", True)])
    else:
      convs.append([(t.prompt, "prompt", False), (t.target, "model", True),
                    (FEEDBACK, "inject", False), (t.target, "model", True)])
  return convs


def sft(model, params, tok, convs, *, steps: int, lr: float, seed: int,
        max_len: int, desc: str, schedule: str = "cosine"):
  """``fit`` on the transcripts: batches of min(64, #convs), warmup min(20, steps/4)."""
  data = fit_lib.FitData.sft(transcript_arrays(tok, convs, max_len))
  opt = fit_lib.OptimizerSpec(learning_rate=lr, schedule=schedule,
                              warmup_steps=min(20, steps // 4), total_steps=steps,
                              max_grad_norm=1.0)
  return fit_lib.fit(model=model, params=params, objective=fit_lib.sft(), data=data,
                     optimizer=opt, steps=steps, batch_size=min(64, len(convs)),
                     seed=seed, log_every=100, desc=desc).params


# ------------------------------------------------------------ methods
def eval_spec():
  return multiturn.EpisodeSpec(max_turns=2,
                               feedback=multiturn.FixedFeedback(FEEDBACK),
                               stop_on_correct=False,
                               inject_length=INJECT_LENGTH)


def evaluate(model, params, tok, test, max_new: int, seed: int) -> dict:
  """Greedy held-out metrics, plus the same at temperature 1 ('sampled/…',
  ``--sampled_repeats`` episodes per problem)."""
  out = evaluate_lib.evaluate_multi_turn(
      model=model, params=params, tokenizer=tok, tasks=test, spec=eval_spec(),
      reward_fns=(reward_lib.correctness_reward,), strategy=strategies.Greedy(),
      max_new_tokens=max_new, seed=seed, batch_size=128)
  if _SAMPLED.value:
    samp = evaluate_lib.evaluate_multi_turn(
        model=model, params=params, tokenizer=tok,
        tasks=list(test) * _SAMPLED.value, spec=eval_spec(),
        reward_fns=(reward_lib.correctness_reward,),
        strategy=strategies.Sampling(temperature=1.0), max_new_tokens=max_new,
        seed=seed + 7, batch_size=128)
    for k in ("acc_t1", "acc_t2", "gap", "wrong_to_right", "right_to_wrong"):
      out[f"sampled/{k}"] = samp[k]
  return out


def run_rl(method, *, model, params, tok, tasks, steps: int, seed: int,
           reference_params=None, single_turn: bool = False):
  opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                               max_grad_norm=1.0)
  del single_turn  # the method's rollout stage says whether it has turns
  trainer = loop.Loop(
      model=model, params=params, method=method, tokenizer=tok, tasks=tasks,
      optimizer=opt, prompts_per_step=_PROMPTS.value, seed=seed,
      roles=({"reference": reference_params} if reference_params is not None
             else None), compiler_options=loop.FAST_COMPILE)
  hist = trainer.run(steps, log_every=5)
  return trainer.state.params, hist


def sft_traces(*, model, params, tok, tasks, steps: int, seed: int,
               max_new: int, max_len: int):
  """Pair-SFT / STaR-style: own turn-1 samples + the correct turn 2."""
  n_conv = steps * 64 // 2
  pool = [tasks[i % len(tasks)] for i in range(max(n_conv, len(tasks)))]
  pool = pool[:n_conv]
  ro = evaluate_lib.rollout(model=model, params=params, tokenizer=tok, tasks=pool,
                            rng=jax.random.key(seed + 11),
                            strategy=strategies.Sampling(temperature=1.0), n=1,
                            max_new_tokens=max_new, batch_size=256)
  convs = [[(t.prompt, "prompt", False), (a1, "model", False),
            (FEEDBACK, "inject", False), (t.target, "model", True)]
           for t, a1 in zip(pool, ro.texts)]
  info = dict(trace_turn1_acc=float(ro.correct.mean()), traces=len(convs))
  return sft(model, params, tok, convs, steps=steps, lr=_LR.value, seed=seed,
             max_len=max_len, desc="sft_traces", schedule="constant"), info


def pair_sft(*, model, params, tok, tasks, steps: int, seed: int,
             max_new: int, max_len: int):
  """Pair-SFT on the model's own samples only (SCoRe §4's Pair-SFT baseline,
  after Welleck et al. 2023, "Generating Sequences by Learning to
  Self-Correct", arXiv:2211.00053).

  ``--pair_samples`` first attempts per problem at temperature 1; each wrong
  one is paired with a correct sample of the same problem (problems without
  one give no trace), and with ``--pair_keep_correct`` each correct one is
  paired with itself (correct → correct). Unlike ``sft_traces`` no gold
  answer is used: the traces hold only what the verifier can confirm among
  the model's own samples, the information the RL methods get. SFT on
  attempt 2 in its context.
  """
  k = _PAIR_SAMPLES.value
  ro = evaluate_lib.rollout(model=model, params=params, tokenizer=tok, tasks=tasks,
                            rng=jax.random.key(seed + 17),
                            strategy=strategies.Sampling(temperature=1.0), n=k,
                            max_new_tokens=max_new, batch_size=256)
  rng = np.random.default_rng(seed + 17)
  convs, n_wrong, n_right = [], 0, 0
  for i, t in enumerate(tasks):
    outs = ro.texts[i * k:(i + 1) * k]
    ok = [bool(c) for c in ro.correct[i * k:(i + 1) * k]]
    good = [o for o, c in zip(outs, ok) if c]
    if not good:
      continue
    for o, c in zip(outs, ok):
      if c and not _PAIR_KEEP_CORRECT.value:
        continue
      target = o if c else good[int(rng.integers(len(good)))]
      n_right += int(c)
      n_wrong += int(not c)
      convs.append([(t.prompt, "prompt", False), (o, "model", False),
                    (FEEDBACK, "inject", False), (target, "model", True)])
  info = dict(sample_acc=float(np.mean(ro.correct)), traces=len(convs),
              wrong_to_right_traces=n_wrong, right_to_right_traces=n_right)
  if not convs:
    return params, info
  return sft(model, params, tok, convs, steps=steps, lr=_LR.value, seed=seed,
             max_len=max_len, desc="pair_sft", schedule="constant"), info


def star_traces(*, model, params, tok, tasks, steps: int, seed: int,
                max_new: int, max_len: int):
  """STaR on self-correction traces (SCoRe §4's STaR baseline, GK reading).

  The model's own two-attempt episodes at temperature 1, kept only where the
  second attempt fixes a wrong first one (r1 = 0, r2 = 1); SFT on attempt 2
  in its context (turn 1 and the feedback are not in the loss).
  """
  n_ep = steps * _PROMPTS.value * _N.value
  pool = [tasks[i % len(tasks)] for i in range(n_ep)]
  ev = evaluate_lib.evaluate_multi_turn(
      model=model, params=params, tokenizer=tok, tasks=pool, spec=eval_spec(),
      reward_fns=(reward_lib.correctness_reward,),
      strategy=strategies.Sampling(temperature=1.0), max_new_tokens=max_new,
      seed=seed + 13, batch_size=256)
  convs = [[(rec["prompt"], "prompt", False), (rec["texts"][0], "model", False),
            (FEEDBACK, "inject", False), (rec["texts"][1], "model", True)]
           for rec in ev["episodes"] if rec["rewards"][:2] == [0.0, 1.0]]
  info = dict(episodes=n_ep, traces=len(convs))
  if not convs:
    return params, info
  return sft(model, params, tok, convs, steps=steps, lr=_LR.value, seed=seed,
             max_len=max_len, desc="star_traces", schedule="constant"), info


def main(argv):
  del argv
  seed = _SEED.value
  t_start = time.perf_counter()
  tok = char_tokenizer.CharTokenizer()
  fmt = {"reverse": True} if _TASK.value == "addition" else {}
  digits = _DIGITS.value or (6 if _TASK.value == "pair_sum" else 2)
  train, test = tasks_lib.make_train_test(
      _TASK.value, n_train=_N_TRAIN.value, n_test=_N_TEST.value,
      difficulty=digits, seed=seed, **fmt)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(train))
  n_lab = int(_SFT_FRACTION.value * len(train))
  labelled = [train[i] for i in order[:n_lab]]
  rl_pool = [train[i] for i in order[n_lab:]]
  max_new = 4 if _TASK.value == "pair_sum" else digits + 2
  max_len = 1 + 2 * digits + 2 + 2 * (max_new + 1) + len(FEEDBACK) + 4
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size,
                        d_model=_D_MODEL.value, n_layers=_LAYERS.value,
                        n_heads=4, n_kv_heads=2, head_dim=_D_MODEL.value // 4,
                        d_ff=4 * _D_MODEL.value)
  model, init = mmodel.init(cfg, jax.random.key(seed))
  t0 = time.perf_counter()
  convs = warm_start_convs(labelled, rng, _WRONG_FRACTION.value)
  cache = _WARM_CACHE.value
  # The flags that determine the warm start; a cache made with others is refused.
  warm_key = json.dumps([_TASK.value, digits, seed, _N_TRAIN.value, _N_TEST.value,
                         _SFT_STEPS.value, _SFT_LR.value, _SFT_FRACTION.value,
                         _WRONG_FRACTION.value, _D_MODEL.value, _LAYERS.value])
  if cache and os.path.exists(cache):
    leaves, treedef = jax.tree.flatten(init)
    with np.load(cache) as z:
      if "key" in z and str(z["key"]) != warm_key:
        raise ValueError(f"--warm_cache={cache} was made with other flags "
                         f"({z['key']}) than this run ({warm_key})")
      warm = jax.tree.unflatten(treedef, [z[f"p{i}"] for i in range(len(leaves))])
  else:
    warm = sft(model, init, tok, convs, steps=_SFT_STEPS.value,
               lr=_SFT_LR.value, seed=seed, max_len=max_len, desc="warm-start")
    if cache:
      np.savez(cache, key=np.array(warm_key),
               **{f"p{i}": np.asarray(x)
                  for i, x in enumerate(jax.tree.leaves(warm))})
  print(f"[sc-bench] warm start {time.perf_counter() - t0:.0f}s", flush=True)
  results = {}
  warm_eval = evaluate(model, warm, tok, test, max_new, seed)
  results["warm_start"] = dict(eval=warm_eval, seconds=0.0, train={})
  print(f"[sc-bench] warm start: {_fmt(warm_eval)}", flush=True)
  steps = _RL_STEPS.value
  common = dict(rollout=RolloutSpec(n=_N.value, max_new_tokens=max_new),
                reward_fns=(reward_lib.correctness_reward,),
                feedback_text=FEEDBACK, inject_length=INJECT_LENGTH)
  for name in _METHODS.value:
    t0 = time.perf_counter()
    train_info = {}
    if name == "sft_traces":
      params, train_info = sft_traces(
          model=model, params=warm, tok=tok, tasks=rl_pool,
          steps=_TRACE_STEPS.value or steps, seed=seed, max_new=max_new,
          max_len=max_len)
    elif name == "pair_sft":
      params, train_info = pair_sft(
          model=model, params=warm, tok=tok, tasks=rl_pool,
          steps=_TRACE_STEPS.value or steps, seed=seed, max_new=max_new,
          max_len=max_len)
    elif name == "star_traces":
      params, train_info = star_traces(
          model=model, params=warm, tok=tok, tasks=rl_pool,
          steps=_TRACE_STEPS.value or steps, seed=seed, max_new=max_new,
          max_len=max_len)
    elif name in ("grpo_r2", "grpo_sum"):
      method = methods_lib.two_turn_grpo(
          reward="r2" if name == "grpo_r2" else "sum", name=name, **common)
      params, hist = run_rl(method, model=model, params=warm, tok=tok,
                            tasks=rl_pool, steps=steps, seed=seed)
      train_info = _train_summary(hist)
    elif name == "grpo":
      # Single-turn GRPO on attempt 1 (the Critique-GRPO paper's baseline).
      method = methods_lib.grpo(rollout=RolloutSpec(n=_N.value, max_new_tokens=max_new),
                                reward_fns=(reward_lib.correctness_reward,),
                                kl_coef=0.0, name="grpo")
      params, hist = run_rl(method, model=model, params=warm, tok=tok,
                            tasks=rl_pool, steps=steps, seed=seed,
                            single_turn=True)
      train_info = _train_summary(hist)
    elif name in ("critique_grpo", "critique_grpo_ctx"):
      # Critique-GRPO: verifier critique naming one number of the pair (or
      # the answer's last digit for addition); refinements off-policy as
      # answers to the bare question (the paper) or in their context.
      method = methods_lib.critique_grpo(
          rollout=RolloutSpec(n=_N.value, max_new_tokens=max_new),
          reward_fns=(reward_lib.correctness_reward,),
          critique_template=CRITIQUE[_TASK.value],
          inject_length=INJECT_LENGTH,
          refinements="in_context" if name.endswith("_ctx") else "off_policy",
          name=name)
      params, hist = run_rl(method, model=model, params=warm, tok=tok,
                            tasks=rl_pool, steps=steps, seed=seed)
      train_info = _train_summary(hist)
    elif name == "ppo_score":
      # SCoRe's stage-II reward (bonus on attempt 2) with a learned critic:
      # PPO + GAE across the two attempts (methods.multi_turn_ppo). The value
      # head is added to the warm-start params (fresh init) and dropped
      # before evaluation.
      vcfg = dataclasses.replace(cfg, value_head=True)
      vmodel, vinit = mmodel.init(vcfg, jax.random.key(seed + 5))
      method = methods_lib.multi_turn_ppo(
          rollout=RolloutSpec(n=_N.value, max_new_tokens=max_new),
          reward_fns=(reward_lib.correctness_reward,), feedback_text=FEEDBACK,
          inject_length=INJECT_LENGTH, alpha=_ALPHA.value, name=name)
      vparams, hist = run_rl(method, model=vmodel,
                             params={**warm, "value_head": vinit["value_head"]},
                             tok=tok, tasks=rl_pool, steps=steps, seed=seed)
      params = {k: v for k, v in vparams.items() if k != "value_head"}
      train_info = _train_summary(hist)
    elif name in ("score", "score_raw"):
      # score_raw: the paper's raw per-turn returns (no std scaling).
      scale = "none" if name == "score_raw" else _SCALE.value
      s1 = max(1, int(round(_STAGE1_FRACTION.value * steps)))
      m1 = methods_lib.score(stage=1, kl_base=_KL_BASE.value,
                             kl_first=_KL_FIRST.value, scale=scale,
                             name=f"{name}_stage1",
                             **common)
      p1, h1 = run_rl(m1, model=model, params=warm, tok=tok, tasks=rl_pool,
                      steps=s1, seed=seed)
      stage1_eval = evaluate(model, p1, tok, test, max_new, seed)
      print(f"[sc-bench] {name} stage I: {_fmt(stage1_eval)}", flush=True)
      results[f"{name}_stage1"] = dict(eval=stage1_eval, seconds=0.0,
                                     train=_train_summary(h1))
      m2 = methods_lib.score(stage=2, alpha=_ALPHA.value,
                             kl_base=_KL_BASE.value, scale=scale,
                             bonus_to_first=_BONUS_TO_FIRST.value,
                             anchor_first=_ANCHOR_FIRST.value,
                             name=name, **common)
      params, h2 = run_rl(m2, model=model, params=p1, tok=tok, tasks=rl_pool,
                          steps=steps - s1, seed=seed + 1,
                          reference_params=warm)
      train_info = _train_summary(h1 + h2)
    else:
      raise ValueError(f"unknown method {name!r}")
    ev = evaluate(model, params, tok, test, max_new, seed)
    results[name] = dict(eval=ev, seconds=time.perf_counter() - t0,
                         train=train_info)
    print(f"[sc-bench] {name}: {_fmt(ev)} ({results[name]['seconds']:.0f}s)",
          flush=True)
  table = markdown(results)
  settings = {h.name: h.value for h in _FLAGS}
  out = _OUT.value
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(table)
  dump = {}
  for k, v in results.items():
    ev = dict(v["eval"])
    episodes = ev.pop("episodes")
    dump[k] = dict(eval=ev, seconds=v["seconds"], train=v["train"],
                   examples=episodes[:8])
  with open(os.path.splitext(out)[0] + ".json", "w", encoding="utf-8") as f:
    json.dump(dict(settings=settings, results=dump,
                   wall_s=time.perf_counter() - t_start), f, indent=1,
              default=str)
  print(table)
  print(f"[sc-bench] total {time.perf_counter() - t_start:.0f}s")


def _train_summary(hist):
  if not hist:
    return {}
  keys = ("reward/mean", "sc/acc_t1", "sc/acc_t2", "sc/gap",
          "sc/wrong_to_right", "sc/right_to_wrong", "kl")
  tail = hist[-20:]
  out = {f"{k}/first": float(hist[0].get(k, np.nan)) for k in keys}
  out.update({f"{k}/last20": float(np.mean([h.get(k, np.nan) for h in tail]))
              for k in keys})
  return out


def _fmt(ev):
  return (f"t1={ev['acc_t1']:.3f} t2={ev['acc_t2']:.3f} gap={ev['gap']:+.3f} "
          f"w->r={ev['wrong_to_right']:.3f} r->w={ev['right_to_wrong']:.3f}")


def markdown(results) -> str:
  head = ["method", "turn-1 acc", "turn-2 acc", "Δ(t1,t2)", "wrong→right",
          "right→wrong", "sampled t1 → t2 (Δ)", "sampled w→r / r→w",
          "train Δ (last 20 it.)", "wall s"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, v in results.items():
    ev = v["eval"]
    cells = [name, f"{ev['acc_t1']:.3f}", f"{ev['acc_t2']:.3f}",
             f"{ev['gap']:+.3f}", f"{ev['wrong_to_right']:.3f}",
             f"{ev['right_to_wrong']:.3f}"]
    if "sampled/acc_t1" in ev:
      cells += [f"{ev['sampled/acc_t1']:.3f} → {ev['sampled/acc_t2']:.3f} "
                f"({ev['sampled/gap']:+.3f})",
                f"{ev['sampled/wrong_to_right']:.3f} / "
                f"{ev['sampled/right_to_wrong']:.3f}"]
    else:
      cells += ["-", "-"]
    gap = v["train"].get("sc/gap/last20")
    cells += ["-" if gap is None else f"{gap:+.3f}", f"{v['seconds']:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
