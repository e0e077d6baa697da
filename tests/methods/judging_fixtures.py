"""One tiny rounds run shared by the judging methods' end-to-end tests (one
model object per process, so the sampler and fit compile once per shape)."""

import functools

import jax

from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import round_store
from jaxsi.training import rounds


@functools.lru_cache(maxsize=None)
def setup():
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  pool, test = tasks_lib.make_train_test("addition", n_train=16, n_test=4,
                                         difficulty=[1], seed=0, reverse=True)
  return tok, model, params, pool, test


def one_round(method, tmp_path):
  """(round records, round 1's stored records) of one tiny round."""
  tok, model, params, pool, test = setup()
  config = rounds.RoundsConfig(rounds=1, warm_start_steps=1, steps_per_round=1,
                               batch_size=8, max_len=32, max_new_tokens=3,
                               rollout_batch=16, chunk_size=8, eval_n=1, warmup_steps=0)
  recs = rounds.run_rounds(method=method, model=model, init_params=params, tokenizer=tok,
                           labeled=pool[:8], unlabeled=pool[8:], test=test,
                           workdir=str(tmp_path), config=config, verbose=False)
  return recs, round_store.RoundStore(str(tmp_path)).read_chunks(1, 1)
