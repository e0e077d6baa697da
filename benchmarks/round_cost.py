r"""Times one Self-Rewarding round against a rejection-sampling round of the same size.

Issue #15 item 9: a self-rewarding round (Yuan et al. 2024, arXiv:2401.10020
§2.2–2.3) is split into

* ``generate`` — N candidates per prompt (the run's jitted sampler);
* ``judge``    — the same model judges every candidate (LLM-as-a-judge
  prompt, greedy; ``self_rewarding.self_judge``), its scores parsed;
* ``update``   — the DPO M-step on the best-vs-worst pairs (reference = the
  round's model), ``--update_steps`` steps of ``--batch_size`` rows;

and compared with a plain rejection-sampling round (RFT/STaR-style) of the
same size: the same ``generate`` call, no judging, then SFT on the correct
samples for the same number of steps and rows. Both sides start from one
warm start (SFT on the labelled targets + the verifier-labelled judging
examples, ``--warm_steps`` steps), so judgments parse and stop at EOS as in
a real run. Each phase is called ``--warmup`` untimed times (compilation) and
then ``--repeats`` timed times, the sides alternating (``bench_env``); the
table gives the medians, and the judge / generate ratio (the claim: judging
adds at most the cost of one extra generation pass). The judge is timed two
ways: re-encoding the judging prompts (``judge``), and continuing the
generation's KV cache (``generate_judge_cached`` = a ``keep_cache=True``
generation + the judge; the judge's share is it minus ``generate``), which is
what ``self_rewarding`` does with a continuation template::

  python benchmarks/round_cost.py --prompts=64 --n=4 --out=/tmp/round_cost.json

Refuses a loaded machine unless ``--allow_load`` (the figures are then marked).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_env  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxsi.data import char_tokenizer  # pylint: disable=wrong-import-position
from jaxsi.data import tasks as tasks_lib  # pylint: disable=wrong-import-position
from jaxsi.methods import self_rewarding  # pylint: disable=wrong-import-position
from jaxsi.methods import self_training_common as common  # pylint: disable=wrong-import-position
from jaxsi.models import config as mcfg  # pylint: disable=wrong-import-position
from jaxsi.models import model as mmodel  # pylint: disable=wrong-import-position
from jaxsi.rewards import judging  # pylint: disable=wrong-import-position
from jaxsi.spec import RolloutSpec  # pylint: disable=wrong-import-position
from jaxsi.training import round_context  # pylint: disable=wrong-import-position
from jaxsi.training import round_fit  # pylint: disable=wrong-import-position
from jaxsi.training import rounds  # pylint: disable=wrong-import-position

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset.")
_PROMPTS = flags.DEFINE_integer("prompts", 64, "Problems per round.")
_N = flags.DEFINE_integer("n", 4, "Candidates per problem.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 8, "Completion (and judgment) budget.")
_UPDATE_STEPS = flags.DEFINE_integer("update_steps", 20, "M-step steps (both sides).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "M-step rows per step (a pair is two).")
_WARM = flags.DEFINE_integer("warm_steps", 300, "Warm-start SFT steps.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls per phase.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per phase.")
_ROLLOUT_BATCH = flags.DEFINE_integer("rollout_batch", 512, "Sampler rows per call (RoundsConfig.rollout_batch).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_ALLOW_LOAD = flags.DEFINE_bool("allow_load", False, "Run on a loaded machine.")
_OUT = flags.DEFINE_string("out", "/tmp/round_cost.json", "JSON output.")


def _identity(x):
  return x


def main(argv):
  del argv
  load = bench_env.check_idle(allow_load=_ALLOW_LOAD.value)
  tok = char_tokenizer.CharTokenizer()
  model = mmodel.build(mcfg.get_config(_PRESET.value).replace(vocab_size=tok.vocab_size))
  params0 = model.init_params(jax.random.key(_SEED.value))
  labeled, test = tasks_lib.make_train_test("addition", n_train=256, n_test=_PROMPTS.value,
                                            difficulty=[1, 2], seed=_SEED.value)
  problems = list(test)
  fmt = judging.get_format("score_1_5")
  method = self_rewarding.self_rewarding(rollout=RolloutSpec(n=_N.value, temperature=1.0))
  cfg = rounds.RoundsConfig(max_new_tokens=_MAX_NEW.value, batch_size=_BATCH.value,
                            max_len=48, rollout_batch=_ROLLOUT_BATCH.value, seed=_SEED.value)
  work = tempfile.mkdtemp(prefix="round_cost_")
  warm, _ = round_fit.fit_sft(model=model, params=params0, tokenizer=tok,
                              examples=method.warm_start(labeled), steps=_WARM.value,
                              config=cfg, ckpt_dir=None, seed=_SEED.value, desc="warm")
  ctx = round_context.RoundContext(
      round=1, model=model, params=warm, base_params=warm, tokenizer=tok,
      rng=jax.random.key(_SEED.value + 1), pool=None, config=cfg, workdir=work,
      method=method)
  spec = RolloutSpec(n=_N.value, temperature=1.0)
  state = {}

  def generate():
    ctx.generated.clear()
    state["ro"] = ro = common.sample(ctx, problems, spec)
    return ro

  generate()
  per = [problems[i // _N.value] for i in range(len(state["ro"].texts))]

  def judge():
    state["judged"] = out = self_rewarding.self_judge(ctx, per, state["ro"].texts, fmt)
    return out

  judge()

  def generate_judge_cached():
    # The default path: generation keeps its KV caches and the judge decodes
    # from them (only the judging suffix and the judgment run through the
    # model; jaxsi.sampling.continuation). Timed together because the caches
    # are released by the judge.
    ctx.generated.clear()
    ro = common.sample(ctx, problems, spec, keep_cache=True)
    state["judged_cached"] = out = self_rewarding.self_judge(ctx, per, ro.texts, fmt, samples=ro)
    return out

  generate_judge_cached()
  scores, statuses, _, _ = state["judged"]
  records = state["ro"].records(judge_score=scores, judge_status=statuses,
                                judgment=list(state["judged"][2]))
  pairs, pair_metrics = self_rewarding.pairs_from_scores(records)
  correct = common.keep_correct(records)
  examples = common.to_examples(correct)
  if not pairs or not examples:
    raise SystemExit(f"round_cost: {len(pairs)} pairs, {len(examples)} correct samples:"
                     " the warm start is too weak (raise --warm_steps)")

  def dpo():
    return ctx.fit_pairs(params=warm, reference=warm, pairs=pairs,
                         steps=_UPDATE_STEPS.value, seed=_SEED.value, desc="dpo",
                         beta=0.1)[0]

  def sft():
    return ctx.fit_sft(params=warm, examples=examples, steps=_UPDATE_STEPS.value,
                       ckpt_dir=None, seed=_SEED.value, desc="sft")

  sync = jax.block_until_ready
  res = bench_env.interleave(
      {"generate": (generate, _identity), "judge": (judge, _identity),
       "generate_judge_cached": (generate_judge_cached, _identity),
       "update_dpo": (dpo, sync), "update_sft": (sft, sync)},
      warmup=_WARMUP.value, steps=_REPEATS.value)
  med = {k: v["median_s"] for k, v in res.items()}
  gen_tokens = int(state["ro"].tokens_generated)
  judge_tokens = int(sum(len(tok.encode(t)) for t in state["judged"][2]))
  judge_cached = med["generate_judge_cached"] - med["generate"]
  sr = med["generate"] + med["judge"] + med["update_dpo"]
  sr_cached = med["generate_judge_cached"] + med["update_dpo"]
  rs = med["generate"] + med["update_sft"]
  rows = [
      ("self_rewarding (judge re-encodes)", med["generate"], med["judge"], med["update_dpo"], sr),
      ("self_rewarding (judge continues the KV cache)", med["generate"], judge_cached,
       med["update_dpo"], sr_cached),
      ("rejection_sampling", med["generate"], 0.0, med["update_sft"], rs),
  ]
  print(f"`{bench_env.uptime()}`\n")
  print("| round | generate_s | judge_s | update_s | total_s | vs_rs |")
  print("|---|---|---|---|---|---|")
  for name, g, j, u, t in rows:
    print(f"| {name} | {g:.3f} | {j:.3f} | {u:.3f} | {t:.3f} | {t / rs:.2f} |")
  print(f"\njudge / generate = {med['judge'] / med['generate']:.2f} re-encoded,"
        f" {judge_cached / med['generate']:.2f} from the cache;"
        f" (generated tokens {gen_tokens}, judgment tokens {judge_tokens});"
        f" {len(pairs)} pairs, {len(examples)} correct samples,"
        f" parsed {sum(s is not None for s in scores)}/{len(scores)}")
  out = dict(load=bench_env.load_average(), load_warning=load, uptime=bench_env.uptime(), preset=_PRESET.value,
             prompts=_PROMPTS.value, n=_N.value, max_new_tokens=_MAX_NEW.value,
             update_steps=_UPDATE_STEPS.value, batch_size=_BATCH.value,
             warm_steps=_WARM.value, medians_s=med,
             times_s={k: v["times_s"] for k, v in res.items()},
             first_s={k: v["first_s"] for k, v in res.items()},
             self_rewarding_s=sr, rejection_sampling_s=rs,
             judge_over_generate=med["judge"] / med["generate"],
             judge_cached_s=judge_cached, self_rewarding_cached_s=sr_cached,
             judge_cached_over_generate=judge_cached / med["generate"],
             generated_tokens=gen_tokens, judgment_tokens=judge_tokens,
             pairs=len(pairs), correct_samples=len(examples),
             pair_metrics={k: float(v) for k, v in pair_metrics.items()},
             parsed=int(sum(s is not None for s in scores)), judged=len(scores))
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(out, f, indent=1)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
