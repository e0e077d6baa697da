r"""Bench: test-time selection and early stopping on the SFT warm start, per seed.

Per seed: SFT a tiny decoder on the labelled half of ``--digits``-digit
additions (answers least significant digit first;
``_warm_start.addition_warm_start``), draw N = ``--n`` samples per held-out
problem in one batched generation, and

1. compare the selectors of ``jaxsi.sampling.test_time`` (first sample =
   random choice, self-consistency = ``majority``, self-certainty best-of-N
   (Kang et al. 2025, arXiv:2502.18581) and Borda voting, likelihood
   best-of-N, the oracle pass@k) for every k in ``--ks``, at equal tokens;
2. replay the windowed policies of ``jaxsi.sampling.adaptive`` (``fixed`` =
   windowed self-consistency with S = N samples, ESC arXiv:2401.10480,
   adaptive-consistency arXiv:2305.11860, DSC arXiv:2408.13457) on the same
   N samples through :class:`CandidatesDraw`: a policy that stops early uses
   a prefix of the samples ``fixed`` votes over, so every comparison is
   paired problem by problem. (Whether the early stop saves real generation
   time is ``test_time_adaptive_bench.py``'s question.)

Paired differences are reported as mean ± SE over problems, SE =
std(d_i)/sqrt(P) (ddof 1) with d_i the per-problem difference of 0/1
grades, pooled over the seeds; per-seed accuracies as mean ± std over seeds.
Samples and accuracy are also split by difficulty (digits), so with mixed
levels (``--digits=1,2,3``) "easy" problems exist.

Command::

  python experiments/test_time_bench.py --seeds=0,1,2 --n=16 --ks=1,4,8,16 \
      --windows=2,4 --out=/tmp/tt.md

Numbers from a loaded machine are not results: the file records the load.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi.sampling import adaptive
from jaxsi.sampling import strategies
from jaxsi.sampling import test_time as tt

import _warm_start  # pylint: disable=g-bad-import-order  (sibling module)

_N = flags.DEFINE_integer("n", 16, "Samples per problem (one generation).")
_KS = flags.DEFINE_list("ks", ["1", "2", "4", "8", "16"], "Budgets k <= n.")
_WINDOWS = flags.DEFINE_list("windows", ["2", "4"], "Windows w of the windowed"
                             " policies (cap S = n); empty: skip them.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data / model / sampling).")
_DIGITS = flags.DEFINE_list("digits", ["2"], "Addition levels (digits per operand).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 256, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_OUT = flags.DEFINE_string("out", "/tmp/test_time_bench.md", "Markdown output"
                           " (the PNG and JSON go next to it).")

POLICIES = ("fixed", "esc", "adaptive_consistency", "dsc")
ALPHABET = _warm_start.ALPHABET
MAX_NEW = 2 + 2   # 2-digit answers (+ carry) + EOS: the warm_start() generator's budget


def warm_start(*, seed: int, n_train: int = 2000, n_test: int = 256,
               sft_steps: int = 300, sft_lr: float = 3e-3, d_model: int = 64,
               layers: int = 2):
  """The 2-digit generator other benches reuse (``refine_bench``,
  ``reward_model_bench``): ``_warm_start.addition_warm_start`` at 2 digits.

  Returns:
    ``(tokenizer, model, warm params, labeled, unlabeled, test)``.
  """
  ws = _warm_start.addition_warm_start(
      seed=seed, digits=(2,), n_train=n_train, n_test=n_test,
      sft_steps=sft_steps, sft_lr=sft_lr, d_model=d_model, layers=layers)
  return ws.tokenizer, ws.model, ws.params, ws.labeled, ws.unlabeled, ws.test


class CandidatesDraw:
  """An ``adaptive.Draw`` that serves precomputed candidates in order.

  The j-th sample a policy draws for problem p is ``cands``' sample j of p,
  so runs of different policies on one :class:`test_time.Candidates` share
  their samples (a policy that stops early used a prefix of the others').
  ``calls`` counts draws, ``rows`` the samples served.
  """

  def __init__(self, cands: tt.Candidates):
    self.c = cands
    self.pos = np.zeros((cands.num_problems,), np.int64)
    self.calls = 0
    self.rows = 0

  def __call__(self, problem_ids: Sequence[int], window: int):
    answers, correct, lengths = [], [], []
    for p in problem_ids:
      s = int(self.pos[p])
      if s + window > self.c.n:
        raise ValueError(f"CandidatesDraw: problem {p} asked for samples"
                         f" {s}..{s + window - 1} but only {self.c.n} were drawn"
                         " (max_samples must be <= the candidates' n)")
      answers.append(list(self.c.answers[p][s:s + window]))
      correct.append([float(x) for x in np.asarray(self.c.correct)[p, s:s + window]])
      lengths.append([int(x) for x in np.asarray(self.c.lengths)[p, s:s + window]])
      self.pos[p] = s + window
    self.calls += 1
    self.rows += len(problem_ids) * window
    return answers, correct, lengths


def grades(c: tt.Candidates, chosen) -> np.ndarray:
  """f32[P] 0/1 grade of each problem's chosen candidate (−1: none → 0)."""
  chosen = np.asarray(chosen)
  g = np.asarray(c.correct)[np.arange(c.num_problems), np.maximum(chosen, 0)]
  return np.where(chosen >= 0, g, 0.0).astype(np.float64)


def result_grades(res: adaptive.Result) -> np.ndarray:
  """f32[P] 0/1 grade of each problem's voted answer in a windowed run."""
  return np.asarray([c[i] if i >= 0 else 0.0 for c, i in zip(res.correct, res.chosen)],
                    np.float64)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """mean(a − b) and its SE over problems (std ddof 1 / sqrt(P))."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.size < 2:
    raise ValueError(f"paired: need >= 2 problems, got {d.size}")
  return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def run_seed(seed: int, ks, windows) -> dict:
  ws = _warm_start.addition_warm_start(
      seed=seed, digits=[int(d) for d in _DIGITS.value], n_train=_N_TRAIN.value,
      n_test=_N_TEST.value, sft_steps=_SFT_STEPS.value, sft_lr=_SFT_LR.value,
      d_model=_D_MODEL.value, layers=_LAYERS.value)
  cands = tt.generate(ws.model, ws.params, ws.tokenizer, ws.test, n=_N.value,
                      max_new_tokens=ws.max_new_tokens,
                      strategy=strategies.Sampling(temperature=_TEMPERATURE.value),
                      rng=jax.random.key(seed + 11),
                      score_temperature=_TEMPERATURE.value)
  levels = np.asarray([t.difficulty for t in ws.test])
  sel = {}
  for k in ks:
    tokens = float(np.asarray(cands.lengths)[:, :k].sum(axis=1).mean())
    for name, fn in tt.DEFAULT_SELECTORS.items():
      sel[f"{name}@{k}"] = dict(selector=name, k=k, tokens_per_problem=tokens,
                                grades=grades(cands, fn(cands, k)).tolist())
  win = {}
  for w in windows:
    for name in POLICIES:
      res = adaptive.run(CandidatesDraw(cands), cands.num_problems,
                         policy=adaptive.get_policy(name, "test_time_bench"),
                         window=w, max_samples=_N.value)
      win[f"{name}/w{w}"] = dict(policy=name, window=w,
                                 grades=result_grades(res).tolist(),
                                 samples=res.samples.tolist(),
                                 tokens=res.tokens.tolist())
  print(f"[bench] seed {seed}: SFT {ws.seconds:.0f}s, generation"
        f" {cands.seconds:.1f}s", flush=True)
  return dict(seed=seed, levels=levels.tolist(), selectors=sel, windowed=win,
              gen_seconds=cands.seconds)


def _pool(results, part, key, field):
  return np.concatenate([np.asarray(r[part][key][field], np.float64) for r in results])


def tables(results, ks, windows) -> list:
  ms = _warm_start.fmt_ms
  names = list(tt.DEFAULT_SELECTORS)
  lines = ["Selectors (accuracy, mean ± std over seeds):", "",
           "| k | tokens / problem | " + " | ".join(names) + " |",
           "|" + "---|" * (len(names) + 2)]
  for k in ks:
    tok = ms([r["selectors"][f"first@{k}"]["tokens_per_problem"] for r in results], "{:.1f}")
    cells = [ms([np.mean(r["selectors"][f"{n}@{k}"]["grades"]) for r in results])
             for n in names]
    lines.append(f"| {k} | {tok} | " + " | ".join(cells) + " |")
  lines += ["", "Paired differences (pooled over seeds and problems, mean ± SE):", "",
            "| k | self_certainty − first | self_certainty − majority |"
            " majority − first | borda − majority |", "|---|---|---|---|---|"]
  for k in ks:
    def d(a, b, k=k):
      m, s = paired(_pool(results, "selectors", f"{a}@{k}", "grades"),
                    _pool(results, "selectors", f"{b}@{k}", "grades"))
      return f"{m:+.3f} ± {s:.3f}"
    lines.append(f"| {k} | {d('self_certainty', 'first')} |"
                 f" {d('self_certainty', 'majority')} | {d('majority', 'first')} |"
                 f" {d('borda_self_certainty', 'majority')} |")
  if not windows:
    return lines
  levels = sorted(set(results[0]["levels"]))
  lv = np.concatenate([np.asarray(r["levels"]) for r in results])
  lines += ["", f"Windowed policies, cap S = {_N.value} (accuracy and samples /"
            " problem: mean ± std over seeds; Δ vs fixed: pooled paired mean ± SE;"
            " samples by difficulty: pooled mean):", "",
            "| w | policy | accuracy | Δ acc vs fixed | samples / problem |"
            " samples ratio vs fixed | "
            + " | ".join(f"samples d={v} (acc)" for v in levels) + " |",
            "|" + "---|" * (6 + len(levels))]
  for w in windows:
    ref = _pool(results, "windowed", f"fixed/w{w}", "grades")
    for name in POLICIES:
      key = f"{name}/w{w}"
      acc = ms([np.mean(r["windowed"][key]["grades"]) for r in results])
      smp = [np.mean(r["windowed"][key]["samples"]) for r in results]
      g = _pool(results, "windowed", key, "grades")
      s = _pool(results, "windowed", key, "samples")
      m, se = paired(g, ref)
      by = " | ".join(f"{s[lv == v].mean():.2f} ({g[lv == v].mean():.3f})" for v in levels)
      lines.append(f"| {w} | {name} | {acc} | {m:+.3f} ± {se:.3f} |"
                   f" {ms(smp, '{:.2f}')} | {s.mean() / _N.value:.3f} | {by} |")
  return lines


def main(argv):
  del argv
  ks = [int(k) for k in _KS.value if int(k) <= _N.value]
  windows = [int(w) for w in _WINDOWS.value]
  for w in windows:
    if w < 1 or _N.value % w:
      raise ValueError(f"--windows: each window must divide --n={_N.value}, got {w}")
  load0 = os.getloadavg()
  results = [run_seed(int(s), ks, windows) for s in _SEEDS.value]
  load1 = os.getloadavg()
  lv = results[0]["levels"]
  head = (f"Held-out addition, digits {','.join(_DIGITS.value)}, {len(lv)} problems"
          f" per seed, N = {_N.value} samples at T = {_TEMPERATURE.value} in one"
          f" generation; seeds {','.join(_SEEDS.value)}; load average"
          f" {load0[0]:.2f} → {load1[0]:.2f}.\n\n")
  text = head + "\n".join(tables(results, ks, windows)) + "\n"
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  rows = [dict(selector=n, k=k, tokens_per_problem=float(np.mean(
              [r["selectors"][f"{n}@{k}"]["tokens_per_problem"] for r in results])),
               accuracy=float(np.mean([np.mean(r["selectors"][f"{n}@{k}"]["grades"])
                                       for r in results])))
          for k in ks for n in tt.DEFAULT_SELECTORS]
  tt.plot(rows, _OUT.value + ".png",
          title=f"addition d={','.join(_DIGITS.value)}, mean of {len(results)} seeds")
  with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
    json.dump(results, f)


if __name__ == "__main__":
  app.run(main)
