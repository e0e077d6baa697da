"""Property-based test (hypothesis) of the character tokenizer's contract for
text outside its alphabet: a ValueError naming the first unknown character and
its position in the whole text (turn markers included), else a round trip."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsi.data import tokenizer as tok
from jaxsi.data.char_tokenizer import CharTokenizer

TOKENIZER = CharTokenizer()
texts = st.lists(st.one_of(st.sampled_from(list(tok.TURN_MARKERS) + ["<|", "|>"]),
                           st.text(max_size=4),
                           st.text(TOKENIZER.alphabet, max_size=6)),
                 max_size=8).map("".join)


@settings(max_examples=100, deadline=None)
@given(texts)
def test_encode_names_first_unknown_character_or_round_trips(text):
  unknown = [i for i, c in enumerate(text) if c not in TOKENIZER.alphabet]
  try:
    ids = TOKENIZER.encode(text)
  except ValueError as e:
    assert unknown, str(e)
    pos = unknown[0]
    c = text[pos]
    assert re.search(re.escape(f"unknown character {c!r} (U+{ord(c):04X}) at "
                               f"position {pos} of the text"), str(e)), str(e)
  else:
    assert not unknown
    assert TOKENIZER.decode(ids) == text
    assert all(0 <= i < TOKENIZER.vocab_size for i in ids)
