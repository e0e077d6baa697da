"""The same random decoder on both sides: jaxsi params -> a transformers model.

The peer benchmarks compare like with like, so the PyTorch side runs the
*same weights*: the jaxsi params are written as a Hugging Face checkpoint
(``jaxsi.models.hf.save_pretrained``, the converter that the logit-parity
tests check) into a temporary directory and loaded back with
``transformers.AutoModelForCausalLM.from_pretrained`` (nothing is
downloaded). TRL needs such a directory anyway: it builds its reference model
from ``config._name_or_path``.

``peer_config`` turns a jaxsi shape into a Qwen2 one (q/k/v biases, f32 for
the CPU) so both sides have exactly the same parameters. ``hf_tokenizer``
gives transformers a tokenizer with the character ids of
``jaxsi.data.char_tokenizer.CharTokenizer``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import Any, Optional, Sequence

# What to run when a peer is missing (torch from the CPU index: a plain
# `pip install torch` pulls a multi-GB CUDA build).
PIP = {
    "torch": "pip install torch --index-url https://download.pytorch.org/whl/cpu",
    "transformers": 'pip install "transformers>=5.0,<6"',
    "trl": ("pip install --no-deps trl accelerate datasets && "
            "pip install dill multiprocess pandas xxhash"),
    "datasets": "pip install --no-deps datasets && pip install dill multiprocess pandas xxhash",
    "accelerate": "pip install --no-deps accelerate",
}


def missing(modules: Sequence[str]) -> list:
  """The modules of ``modules`` that are not importable."""
  return [m for m in modules if importlib.util.find_spec(m) is None]


def install_hint(modules: Sequence[str]) -> str:
  """One pip line per missing module, deduplicated."""
  lines = []
  for m in modules:
    line = PIP.get(m, f"pip install {m}")
    if line not in lines:
      lines.append(line)
  return " ; ".join(lines)


def peer_config(config: Any) -> Any:
  """``config`` as a Qwen2 shape: q/k/v biases, no QK-norm, float32."""
  return config.replace(qkv_bias=True, qk_norm=False, dtype="float32",
                        param_dtype="float32")


def save_checkpoint(config: Any, params: Any, *, tokenizer: Optional[Any] = None,
                    directory: Optional[str] = None) -> str:
  """Writes ``params`` as a local HF checkpoint; returns its directory.

  Args:
    config: the jaxsi ModelConfig of ``params``.
    params: jaxsi params.
    tokenizer: a jaxsi tokenizer whose bos/eos/pad ids go into config.json.
    directory: where to write (default: a new temporary directory).
  """
  from jaxsi.models import hf  # pylint: disable=g-import-not-at-top
  directory = directory or tempfile.mkdtemp(prefix="jaxsi_peer_model_")
  extra = {}
  if tokenizer is not None:
    extra = dict(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                 pad_token_id=tokenizer.pad_id)
  hf.save_pretrained(directory, config, params,
                     hf_config=hf.hf_config_from_config(config, **extra))
  return directory


def load_torch_model(directory: str):
  """The transformers CausalLM in ``directory``, float32, on the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  return transformers.AutoModelForCausalLM.from_pretrained(
      directory, dtype=torch.float32)


def torch_model(config: Any, params: Any, *, tokenizer: Optional[Any] = None):
  """(transformers model with ``params``' weights, its checkpoint directory)."""
  directory = save_checkpoint(config, params, tokenizer=tokenizer)
  return load_torch_model(directory), directory


def hf_tokenizer(tok: Any):
  """A transformers fast tokenizer with exactly the jaxsi character ids."""
  from tokenizers import Tokenizer, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  vocab = {"<pad>": tok.pad_id, "<bos>": tok.bos_id, "<eos>": tok.eos_id}
  for c in tok.alphabet:
    vocab[c] = tok.char_id(c)
  for i in range(tok.vocab_size):
    if i not in vocab.values():
      vocab[f"<special_{i}>"] = i
  core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
  core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
  hf = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                               bos_token="<bos>", eos_token="<eos>")
  hf.padding_side = "left"
  return hf
