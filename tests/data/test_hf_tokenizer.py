"""HF tokenizer.json / sentencepiece .model tokenizers and chat templates.

Fixtures are built in the test: a byte-level BPE ``tokenizer.json`` trained
with the ``tokenizers`` library and a sentencepiece model trained in memory,
each with a family's special tokens.
"""

import json
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
tokenizers = pytest.importorskip("tokenizers")

from jaxsi.data import chat_templates as ct  # pylint: disable=g-import-not-at-top
from jaxsi.data import hf_tokenizer  # pylint: disable=g-import-not-at-top
from jaxsi.data import tokenizer as tok  # pylint: disable=g-import-not-at-top

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold "
    "half as many clips in May. How many clips did she sell altogether?",
    "The answer is 72. Let's think step by step: 48 / 2 = 24; 48 + 24 = 72.",
    "Ünïcödé, emoji 🙂 and tabs\tand\nnewlines work with byte-level BPE.",
] * 3

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FAMILY_SPECIALS = {
    "qwen2.5": QWEN_SPECIALS,
    "qwen3": QWEN_SPECIALS + ["<think>", "</think>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
               "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"],
    "gemma3": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>",
               "<start_of_image>"],
}
MODEL_TYPE = {"qwen2.5": "qwen2", "qwen3": "qwen3", "llama3": "llama",
              "gemma3": "gemma3_text"}


def _write_hf_tokenizer(directory, family, *, tokenizer_config=None,
                        model_type=True):
  """A byte-level BPE tokenizer.json with the family's special tokens."""
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tk = tokenizers.Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=400, special_tokens=FAMILY_SPECIALS[family],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tk.train_from_iterator(CORPUS, trainer)
  os.makedirs(directory, exist_ok=True)
  tk.save(os.path.join(directory, "tokenizer.json"))
  if tokenizer_config is not None:
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
      json.dump(tokenizer_config, f)
  if model_type:
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump({"model_type": MODEL_TYPE[family]}, f)
  return directory


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
  d = _write_hf_tokenizer(str(tmp_path_factory.mktemp("qwen")), "qwen2.5",
                          tokenizer_config={"eos_token": "<|im_end|>",
                                            "pad_token": "<|endoftext|>",
                                            "bos_token": None})
  return hf_tokenizer.load_tokenizer(d)


CONVO = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": " What is 6*7? "},
         {"role": "assistant", "content": "42"},
         {"role": "user", "content": "And 6*8?"}]


def test_round_trip_and_special_tokens(qwen):
  assert isinstance(qwen, tok.TokenizerProtocol)
  for text in CORPUS[:3] + ["", "unseen wörds ∑ 😀 still round-trip\n"]:
    assert qwen.decode(qwen.encode(text)) == text
  im_start = qwen.token_to_id("<|im_start|>")
  ids = qwen.encode("<|im_start|>user\nHi<|im_end|>")
  assert ids[0] == im_start and ids[-1] == qwen.turn_end_id
  assert qwen.eos_id == qwen.turn_end_id == qwen.token_to_id("<|im_end|>")
  assert qwen.pad_id == qwen.bos_id == qwen.token_to_id("<|endoftext|>")
  assert qwen.stop_ids == (qwen.eos_id,)
  # skip_special drops only control ids (pad/bos/eos); other specials stay.
  with_controls = [qwen.bos_id] + ids + [qwen.pad_id]
  assert qwen.decode(with_controls) == "<|im_start|>user\nHi"
  assert qwen.decode(with_controls, skip_special=False) == (
      "<|endoftext|><|im_start|>user\nHi<|im_end|><|endoftext|>")
  assert qwen.encode("ab", add_bos=True, add_eos=True)[::len(
      qwen.encode("ab")) + 1] == [qwen.bos_id, qwen.eos_id]
  offsets = qwen.char_offsets(qwen.encode("48 + 24 = 72"))
  assert offsets[0] == 0 and offsets == sorted(offsets)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    qwen.decode([qwen.vocab_size])


def test_turn_markers(qwen):
  assert qwen.turn_marker("user") == qwen.encode("<|im_start|>user\n")
  assert qwen.turn_start_id("assistant") == qwen.token_to_id("<|im_start|>")
  assert qwen.turn_marker("end") == [qwen.token_to_id("<|im_end|>")]
  with pytest.raises(ValueError, match="unknown chat role"):
    qwen.turn_marker("robot")


def test_qwen25_template_and_encode_chat(qwen):
  want = ("<|im_start|>system\nBe brief.<|im_end|>\n"
          "<|im_start|>user\n What is 6*7? <|im_end|>\n"
          "<|im_start|>assistant\n42<|im_end|>\n"
          "<|im_start|>user\nAnd 6*8?<|im_end|>\n<|im_start|>assistant\n")
  assert qwen.apply_chat_template(CONVO, add_generation_prompt=True) == want
  assert qwen.encode_chat(CONVO, add_generation_prompt=True) == qwen.encode(want)
  no_system = qwen.apply_chat_template(CONVO[1:2])
  assert no_system == ("<|im_start|>system\n" + ct.QWEN25_DEFAULT_SYSTEM +
                       "<|im_end|>\n<|im_start|>user\n What is 6*7? "
                       "<|im_end|>\n")


def test_qwen3_template_thinking():
  t = ct.get_template("qwen3")
  msgs = [{"role": "user", "content": "Q1"},
          {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nA1"},
          {"role": "user", "content": "Q2"},
          {"role": "assistant", "content": "<think>ok</think>A2"}]
  assert t.render(msgs) == (
      "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
      "<|im_start|>user\nQ2<|im_end|>\n"
      "<|im_start|>assistant\n<think>\nok\n</think>\n\nA2<|im_end|>\n")
  assert t.render(msgs[:1], add_generation_prompt=True,
                  enable_thinking=False) == (
                      "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n"
                      "<think>\n\n</think>\n\n")
  assert t.render(msgs[:1], add_generation_prompt=True).endswith(
      "<|im_start|>assistant\n")


def test_llama3_template():
  t = ct.get_template("llama3")
  got = t.render(CONVO[:3], add_generation_prompt=True, date_string="1 Jan 2025")
  assert got == (
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
      "Cutting Knowledge Date: December 2023\nToday Date: 1 Jan 2025\n\n"
      "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
      "What is 6*7?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
      "42<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
  assert t.render(CONVO[1:2], add_bos=False).startswith(
      "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date")


def test_gemma_templates():
  g3, g2 = ct.get_template("gemma3"), ct.get_template("gemma2")
  want = ("<bos><start_of_turn>user\nBe brief.\n\nWhat is 6*7?<end_of_turn>\n"
          "<start_of_turn>model\n42<end_of_turn>\n<start_of_turn>user\n"
          "And 6*8?<end_of_turn>\n<start_of_turn>model\n")
  assert g3.render(CONVO, add_generation_prompt=True) == want
  assert g2.render(CONVO[1:], add_bos=False) == want[len("<bos>"):-len(
      "<start_of_turn>model\n")].replace("Be brief.\n\n", "")
  with pytest.raises(ValueError, match="system"):
    g2.render(CONVO)
  with pytest.raises(ValueError, match="alternate"):
    g3.render([CONVO[1], CONVO[1]])


@pytest.mark.parametrize("family", ["qwen3", "llama3", "gemma3"])
def test_family_detection_and_ids(family, tmp_path):
  d = _write_hf_tokenizer(str(tmp_path), family, model_type=family != "qwen3")
  t = hf_tokenizer.load_tokenizer(d)
  assert t.template.name == family
  tmpl = ct.get_template(family)
  assert t.turn_end_id == t.token_to_id(tmpl.turn_end_token)
  assert t.eos_id == t.token_to_id(tmpl.eos_token)
  assert set(t.stop_ids) == {t.eos_id, t.turn_end_id}
  ids = t.encode_chat(CONVO[1:2], add_generation_prompt=True)
  assert t.decode(ids, skip_special=False) == tmpl.render(
      CONVO[1:2], add_generation_prompt=True)
  if tmpl.bos:
    assert ids[0] == t.bos_id
    no_bos = t.encode_chat(CONVO[1:2], add_bos=False)
    assert no_bos[0] != t.bos_id


# The no-tools branch of Qwen2.5's official chat_template (tokenizer_config).
QWEN25_JINJA = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are "
    "a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not "
    "loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n")


def test_jinja_template_matches_builtin_and_transformers(tmp_path):
  d = _write_hf_tokenizer(str(tmp_path), "qwen2.5", tokenizer_config={
      "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
      "chat_template": QWEN25_JINJA})
  t = hf_tokenizer.load_tokenizer(d)
  assert t.jinja_template == QWEN25_JINJA
  for msgs in (CONVO, CONVO[1:2]):
    via_jinja = t.apply_chat_template(msgs, add_generation_prompt=True)
    assert via_jinja == t.apply_chat_template(
        msgs, add_generation_prompt=True, use_jinja=False)
  transformers = pytest.importorskip("transformers")
  ref = transformers.PreTrainedTokenizerFast(
      tokenizer_file=os.path.join(d, "tokenizer.json"), eos_token="<|im_end|>",
      pad_token="<|endoftext|>")
  ref.chat_template = QWEN25_JINJA
  want = ref.apply_chat_template(CONVO, tokenize=False,
                                 add_generation_prompt=True)
  assert t.apply_chat_template(CONVO, add_generation_prompt=True) == want
  want_ids = ref(want, add_special_tokens=False)["input_ids"]
  assert t.encode_chat(CONVO, add_generation_prompt=True) == want_ids
  assert t.decode(want_ids, skip_special=False) == ref.decode(want_ids)


def test_sentencepiece_model_with_gemma_template(tmp_path):
  spm = pytest.importorskip("sentencepiece")
  prefix = str(tmp_path / "tokenizer")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS), model_prefix=prefix, vocab_size=400,
      model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
      pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
      user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
      byte_fallback=True, add_dummy_prefix=False,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      minloglevel=2)
  t = hf_tokenizer.load_tokenizer(prefix + ".model", family="gemma3")
  assert (t.pad_id, t.eos_id, t.bos_id) == (0, 1, 2)
  assert t.turn_end_id == t.token_to_id("<end_of_turn>")
  for text in CORPUS[:3] + ["bytes ∑ 😀"]:
    assert t.decode(t.encode(text)) == text
  ids = t.encode_chat(CONVO[1:2], add_generation_prompt=True)
  assert ids[:2] == [t.bos_id, t.token_to_id("<start_of_turn>")]
  assert t.decode(ids) == ct.get_template("gemma3").render(
      CONVO[1:2], add_generation_prompt=True, add_bos=False)


def test_missing_tokenizer_says_what_to_put_where(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    hf_tokenizer.load_tokenizer(str(tmp_path))
  d = _write_hf_tokenizer(str(tmp_path / "x"), "qwen2.5", model_type=False,
                          tokenizer_config={"eos_token": "<|nope|>"})
  with pytest.raises(ValueError, match="<|nope|>"):
    hf_tokenizer.load_tokenizer(d)
