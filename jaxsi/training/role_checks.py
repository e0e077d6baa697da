"""Checks that a role reads the same token ids as the trained role.

Every role (teacher, judge, reward model) scores, samples or distils over the
trajectory's token ids, so a role with another vocabulary or tokenizer would
read other tokens: :class:`~jaxsi.spec.ConfigurationError` before any work
(``jaxsi.training.loop.Loop`` runs them while it sets up its roles).
"""

from __future__ import annotations

from jaxsi import spec as spec_lib


def check_vocab(name: str, role_model, model, trained: str) -> None:
  """Refuses a role whose model's vocabulary differs from the trained role's.

  Every role reads (scores, samples, distils over) the trajectory's token ids,
  so a teacher / judge / reward model with another vocabulary would read
  other tokens: a :class:`~jaxsi.spec.ConfigurationError`, before any work.
  """
  v = getattr(getattr(role_model, "config", None), "vocab_size", None)
  v0 = getattr(getattr(model, "config", None), "vocab_size", None)
  if v is not None and v0 is not None and int(v) != int(v0):
    raise spec_lib.ConfigurationError(
        f"role {name!r}: its model's vocab_size={v} differs from the trained"
        f" role {trained!r}'s vocab_size={v0}; roles read the same token ids, so"
        " a teacher/judge must share the student's tokenizer and vocabulary")


_PROBE_IDS = 4096   # ids whose surface strings the tokenizer check compares


def check_tokenizer(name: str, role_tokenizer, tokenizer) -> None:
  """Refuses a role tokenizer that is not the run's: vocab size, special ids
  and the text of each of the first ``_PROBE_IDS`` ids must agree."""
  def sig(tok):
    n = min(int(tok.vocab_size), _PROBE_IDS)
    return (int(tok.vocab_size), int(tok.pad_id), int(tok.bos_id), int(tok.eos_id),
            tuple(tok.decode([i], skip_special=False) for i in range(n)))
  a, b = sig(role_tokenizer), sig(tokenizer)
  if a != b:
    fields = ("vocab_size", "pad_id", "bos_id", "eos_id")
    diff = [f"{f}: {x!r} vs {y!r}" for f, x, y in zip(fields, a, b) if x != y]
    bad = [i for i, (x, y) in enumerate(zip(a[4], b[4])) if x != y]
    if bad:
      i = bad[0]
      diff.append(f"decode([{i}]): {a[4][i]!r} vs {b[4][i]!r} ({len(bad)} ids differ)")
    raise spec_lib.ConfigurationError(
        f"role {name!r}: its tokenizer differs from the run's ({'; '.join(diff)});"
        " a teacher must share the student's tokenizer")
