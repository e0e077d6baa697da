"""Skill-SD's summariser (sampling.skill_bank): skills from the policy's own successes."""

import importlib

import jax
import numpy as np
import pytest

from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.sampling import privileged, rollouts, skill_bank
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib

opsd_lib = importlib.import_module("jaxsi.methods.opsd")


def _stage(**kw):
  return skill_bank.SkillSummaries(inner=rollouts.Sample(RolloutSpec(n=2)), **kw)


def test_bank_keeps_the_newest_distinct_successes_and_summarises_them():
  a, b, c = tasks_lib.make_tasks("addition", 3, difficulty=1, seed=0)
  st = _stage(max_examples=2, fallback={"addition": "F"})
  assert st.skill("addition") == "F"                     # no success yet
  assert st.context(a) == "F|" + a.prompt
  st.add(a, "7")
  st.add(b, "9")
  st.add(a, "8")                                          # a again: moved to newest
  assert st.bank["addition"] == [(b.prompt, "9"), (a.prompt, "8")]
  st.add(c, "5")                                          # 3 > max_examples: oldest out
  assert st.bank["addition"] == [(a.prompt, "8"), (c.prompt, "5")]
  assert st.skill("addition") == f"{a.prompt}8;{c.prompt}5"
  with pytest.raises(KeyError, match="countdown"):
    st.skill("countdown")
  with pytest.raises(ValueError, match="max_examples"):
    _stage(max_examples=0)
  assert skill_bank.worked_examples([("1+2=", "3"), ("2+2=", "4")]) == "1+2=3;2+2=4"


def test_supervised_extras_teach_the_worked_example_format():
  ts = tasks_lib.make_tasks("addition", 4, difficulty=1, seed=1)
  st = _stage(max_examples=1, teach=2)
  out = st.supervised_extras(ts)
  # tasks 0 and 2; each skill = the first OTHER task written out
  assert out == [(f"{ts[1].prompt}{ts[1].target}|{ts[0].prompt}", ts[0].target),
                 (f"{ts[0].prompt}{ts[0].target}|{ts[2].prompt}", ts[2].target)]


def _always_right(tasks, completions):
  return [1.0] * len(completions)


def test_under_the_loop_the_next_batch_sees_the_previous_successes():
  tok = char_tokenizer.CharTokenizer(alphabet="0123456789+=|")
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tasks = tasks_lib.make_tasks("addition", 8, difficulty=1, seed=0)
  m = opsd_lib.skill_sd(rollout=RolloutSpec(n=2, max_new_tokens=2), summarise=True,
                        max_examples=1, reward_fns=(_always_right,))
  stage = m.rollout
  assert isinstance(stage, skill_bank.SkillSummaries)
  object.__setattr__(stage, "fallback", {"addition": "0"})
  trainer = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                      tasks=tasks, optimizer=opt_lib.make_optimizer(
                          learning_rate=1e-3, schedule="constant"),
                      prompts_per_step=2, compiler_options=loop.FAST_COMPILE)

  def contexts(traj):
    ext = {k: np.asarray(x) for k, x in traj.extras.items()}
    toks, mask = ext["privileged_tokens"], ext["privileged_input_mask"]
    p = toks.shape[1] - traj.length + (traj.length - 2)   # before the completion
    return [tok.decode([int(x) for x, ok in zip(r[:p], mk[:p]) if ok]) for r, mk in
            zip(toks, mask)]

  trainer.step()
  first = contexts(trainer.last_traj)
  assert all(c.endswith("|" + tasks[int(i)].prompt) and c.startswith("0|") for c, i in
             zip(first, np.asarray(trainer.last_traj.prompt_ids))), first
  bank = list(stage.bank["addition"])           # every sample was "right"
  assert len(bank) == 1
  trainer.step()
  second = contexts(trainer.last_traj)
  want = skill_bank.worked_examples(bank) + "|"
  assert all(c.startswith(want) for c in second), (second, want)
