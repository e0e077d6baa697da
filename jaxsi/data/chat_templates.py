"""Chat templates of the supported model families, in plain Python.

Each :class:`ChatTemplate` renders ``[{'role': ..., 'content': ...}, ...]``
to the exact text the family's official Jinja template (``chat_template`` in
``tokenizer_config.json``) produces for plain text conversations (no tools, no
images):

* ``qwen2.5`` (ChatML; a default system prompt when none is given)::

    <|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a
    helpful assistant.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n
    <|im_start|>assistant\\n

* ``qwen3`` (ChatML, no default system; ``enable_thinking=False`` adds an
  empty ``<think>\\n\\n</think>\\n\\n`` to the generation prompt; earlier
  assistant turns lose their ``<think>`` part, the final one gets one)
* ``llama3`` (Llama 3.1/3.2: ``<|begin_of_text|>``, a system header with the
  knowledge cut-off and ``date_string``, ``<|eot_id|>`` after each turn,
  contents trimmed)
* ``gemma2`` / ``gemma3`` (``<bos>``, ``<start_of_turn>user|model``,
  ``<end_of_turn>``; contents trimmed; Gemma 3 prepends the system message
  and a blank line to the first user turn, Gemma 2 rejects system messages)

Tokenizers render with a template and then encode the text; their special
tokens (``<|im_start|>``…) are recognised as single ids.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

Message = Mapping[str, str]

QWEN25_DEFAULT_SYSTEM = ("You are Qwen, created by Alibaba Cloud. "
                         "You are a helpful assistant.")
LLAMA3_DEFAULT_DATE = "26 Jul 2024"


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """How one family writes a conversation.

  Attributes:
    name: family name (key of ``TEMPLATES``).
    bos: text that starts every conversation ('' if none).
    turn_end_token: the special token that closes a turn (a stop token).
    eos_token: the family's end-of-text token.
    pad_token: the token used for padding.
    bos_token: the begin-of-text token (for tokenizers without one: the
      document separator, e.g. Qwen's ``<|endoftext|>``).
    special_tokens: every special token string the template emits.
  """

  name: str
  bos: str
  turn_end_token: str
  eos_token: str
  pad_token: str
  bos_token: str
  special_tokens: tuple

  # ------------------------------------------------------------- pieces
  def turn_prefix(self, role: str) -> str:
    """Text opening a turn of ``role`` ('system', 'user', 'assistant')."""
    _check_role(role)
    if self.name.startswith("qwen"):
      return f"<|im_start|>{role}\n"
    if self.name == "llama3":
      return f"<|start_header_id|>{role}<|end_header_id|>\n\n"
    if role == "system":
      raise ValueError(f"{self.name}: there is no system turn (Gemma 3 merges "
                       "the system message into the first user turn)")
    return f"<start_of_turn>{'model' if role == 'assistant' else role}\n"

  @property
  def turn_suffix(self) -> str:
    """Text closing every turn."""
    return {"llama3": "<|eot_id|>"}.get(
        self.name, self.turn_end_token + "\n")

  def generation_prompt(self, *, enable_thinking: bool = True) -> str:
    """Text after the conversation when the model writes the next turn."""
    out = self.turn_prefix("assistant")
    if self.name == "qwen3" and not enable_thinking:
      out += "<think>\n\n</think>\n\n"
    return out

  # ------------------------------------------------------------ render
  def render(self, messages: Sequence[Message], *,
             add_generation_prompt: bool = False, add_bos: bool = True,
             enable_thinking: bool = True,
             date_string: str = LLAMA3_DEFAULT_DATE) -> str:
    """The conversation as text, as the official template renders it.

    Args:
      messages: dicts with 'role' ('system', 'user', 'assistant') and
        'content' (str).
      add_generation_prompt: end with the opening of an assistant turn.
      add_bos: include the leading BOS text (drop it when the caller adds the
        BOS id itself).
      enable_thinking: Qwen3 only; False adds an empty think block to the
        generation prompt.
      date_string: Llama 3 only; the "Today Date" of the system header.

    Returns:
      The text (special tokens written as their strings).

    Raises:
      ValueError: a malformed message or a role the family does not support.
    """
    msgs = []
    for n, m in enumerate(messages):
      if "role" not in m or "content" not in m:
        raise ValueError(f"{self.name}: message {n} needs 'role' and 'content'"
                         f", got {sorted(m)}")
      _check_role(m["role"])
      if not isinstance(m["content"], str):
        raise ValueError(f"{self.name}: message {n} content must be a str")
      msgs.append((m["role"], m["content"]))
    render = {"qwen2.5": self._qwen, "qwen3": self._qwen3,
              "llama3": self._llama3, "gemma2": self._gemma,
              "gemma3": self._gemma}[self.name]
    out = render(msgs, date_string=date_string)
    if add_generation_prompt:
      out += self.generation_prompt(enable_thinking=enable_thinking)
    return (self.bos if add_bos else "") + out

  def _qwen(self, msgs, **_):
    if not msgs or msgs[0][0] != "system":
      msgs = [("system", QWEN25_DEFAULT_SYSTEM)] + msgs
    return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in msgs)

  def _qwen3(self, msgs, **_):
    last_query = max((i for i, (r, c) in enumerate(msgs) if r == "user" and
                      not (c.startswith("<tool_response>") and
                           c.endswith("</tool_response>"))),
                     default=len(msgs) - 1)
    out = []
    for i, (role, content) in enumerate(msgs):
      if role != "assistant":
        out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
        continue
      reasoning = ""
      if "</think>" in content:
        reasoning = (content.split("</think>")[0].rstrip("\n")
                     .split("<think>")[-1].lstrip("\n"))
        content = content.split("</think>")[-1].lstrip("\n")
      last = i == len(msgs) - 1
      if i > last_query and (last or reasoning):
        out.append(f"<|im_start|>assistant\n<think>\n{reasoning.strip(chr(10))}"
                   f"\n</think>\n\n{content.lstrip(chr(10))}<|im_end|>\n")
      else:
        out.append(f"<|im_start|>assistant\n{content}<|im_end|>\n")
    return "".join(out)

  def _llama3(self, msgs, *, date_string):
    system = ""
    if msgs and msgs[0][0] == "system":
      system, msgs = msgs[0][1].strip(), msgs[1:]
    out = ["<|start_header_id|>system<|end_header_id|>\n\n"
           "Cutting Knowledge Date: December 2023\n"
           f"Today Date: {date_string}\n\n{system}<|eot_id|>"]
    for role, content in msgs:
      if role == "system":
        raise ValueError("llama3: only the first message may be a system one")
      out.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n"
                 f"{content.strip()}<|eot_id|>")
    return "".join(out)

  def _gemma(self, msgs, **_):
    prefix = ""
    if msgs and msgs[0][0] == "system":
      if self.name == "gemma2":
        raise ValueError("gemma2: the chat template does not support a "
                         "system message")
      prefix, msgs = msgs[0][1] + "\n\n", msgs[1:]  # not trimmed
    out = []
    for i, (role, content) in enumerate(msgs):
      if role == "system":
        raise ValueError(f"{self.name}: only the first message may be a "
                         "system one")
      if (role == "user") != (i % 2 == 0):
        raise ValueError(f"{self.name}: roles must alternate "
                         "user/assistant/user/...")
      text = (prefix if i == 0 else "") + content.strip()
      out.append(f"{self.turn_prefix(role)}{text}<end_of_turn>\n")
    return "".join(out)


def _check_role(role: str) -> None:
  if role not in ("system", "user", "assistant"):
    raise ValueError(f"unknown chat role {role!r}; expected system, user or "
                     "assistant")


_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TEMPLATES = {
    "qwen2.5": ChatTemplate(
        name="qwen2.5", bos="", turn_end_token="<|im_end|>",
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token="<|endoftext|>", special_tokens=_QWEN_SPECIALS),
    "qwen3": ChatTemplate(
        name="qwen3", bos="", turn_end_token="<|im_end|>",
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        special_tokens=_QWEN_SPECIALS + ("<think>", "</think>")),
    "llama3": ChatTemplate(
        name="llama3", bos="<|begin_of_text|>", turn_end_token="<|eot_id|>",
        eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>",
        bos_token="<|begin_of_text|>",
        special_tokens=("<|begin_of_text|>", "<|end_of_text|>",
                        "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>", "<|finetune_right_pad_id|>")),
    "gemma2": ChatTemplate(
        name="gemma2", bos="<bos>", turn_end_token="<end_of_turn>",
        eos_token="<eos>", pad_token="<pad>", bos_token="<bos>",
        special_tokens=("<pad>", "<eos>", "<bos>", "<start_of_turn>",
                        "<end_of_turn>")),
}
TEMPLATES["gemma3"] = dataclasses.replace(TEMPLATES["gemma2"], name="gemma3")
FAMILIES = tuple(TEMPLATES)


def get_template(name: str) -> ChatTemplate:
  """The template of family ``name`` (one of ``FAMILIES``).

  Raises:
    ValueError: unknown family (lists the known ones).
  """
  key = name.lower()
  if key not in TEMPLATES:
    raise ValueError(f"unknown chat template {name!r}; known: {list(FAMILIES)}")
  return TEMPLATES[key]


def family_for_model_type(model_type: str) -> str:
  """Chat template family of an HF ``model_type`` (config.json)."""
  table = {"qwen2": "qwen2.5", "qwen3": "qwen3", "llama": "llama3",
           "gemma2": "gemma2", "gemma3": "gemma3", "gemma3_text": "gemma3"}
  if model_type not in table:
    raise ValueError(f"no chat template for model_type {model_type!r}; known:"
                     f" {sorted(table)}")
  return table[model_type]


def detect_family(vocab: Mapping[str, int]) -> Optional[str]:
  """Family guessed from the special tokens a vocabulary holds (or None)."""
  if "<|im_start|>" in vocab:
    return "qwen3" if "<think>" in vocab else "qwen2.5"
  if "<|start_header_id|>" in vocab:
    return "llama3"
  if "<start_of_turn>" in vocab:
    return "gemma3" if "<start_of_image>" in vocab else "gemma2"
  return None
