"""Hugging Face checkpoints <-> jaxsi params (Llama, Qwen2/2.5/3, Gemma 1/2/3 text).

Pure layout conversion (transpose/reshape), no downloads: point
``load_pretrained`` at a local directory holding ``config.json`` and either
``model.safetensors`` or ``model.safetensors.index.json`` with its shards.
Tensors are memory-mapped and converted one at a time; with ``mesh=`` (or
``shardings=``) every device receives only its slice
(``jaxsi.models.loading``), so a large model is never copied whole into host
memory. ``save_pretrained`` writes the same format (sharded above
``max_shard_bytes``, with the index) plus a ``config.json`` from
``hf_config_from_config``; transformers loads it with ``from_pretrained``.

The ``config.json`` translation (``config_from_hf``,
``hf_config_from_config``) is ``jaxsi.models.hf_config``, re-exported here.
Logit parity with transformers (torch, CPU)
is tested per architecture in ``tests/models/test_hf_parity.py``.

Name map (``model.layers.{i}.`` prefix; W = Hugging Face [out, in] weight)::

    embed_tokens.weight [V, D]            -> embedder.embedding [V, D]
    self_attn.q_proj.weight [H·Dh, D]     -> attn.q_proj.kernel = Wᵀ as [D, H, Dh]
    self_attn.{k,v}_proj.weight           -> attn.{k,v}_proj.kernel [D, Hkv, Dh]
    self_attn.{q,k,v}_proj.bias           -> attn.*.bias [H|Hkv, Dh]   (Qwen2)
    self_attn.o_proj.weight [D, H·Dh]     -> attn.o_proj.kernel = Wᵀ as [H, Dh, D]
    self_attn.{q,k}_norm.weight [Dh]      -> attn.{q,k}_norm.scale      (Qwen3, Gemma3)
    mlp.{gate,up,down}_proj.weight        -> mlp.*.kernel = Wᵀ
    input_layernorm.weight                -> input_norm.scale
    post_attention_layernorm.weight       -> pre_ffw_norm.scale  (Llama/Qwen/Gemma 1)
                                          -> post_attn_norm.scale (Gemma 2/3)
    pre_feedforward_layernorm.weight      -> pre_ffw_norm.scale  (Gemma 2/3)
    post_feedforward_layernorm.weight     -> post_ffw_norm.scale (Gemma 2/3)
    model.norm.weight                     -> final_norm.scale
    lm_head.weight [V, D]                 -> lm_head.kernel [D, V]  (untied only)

Gemma stores RMSNorm weights as ``w`` with scale ``1 + w``: that is
``norm_offset=True`` here, so the values copy unchanged.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.models import loading
from jaxsi.models.config import ModelConfig
from jaxsi.models.hf_config import config_from_hf  # re-exported
from jaxsi.models.hf_config import hf_config_from_config
from jaxsi.models.hf_config import infer_model_type  # pylint: disable=unused-import
from jaxsi.models import model as mmodel
from jaxsi.models.model import Model, Params, build

def _layer_names(config: ModelConfig) -> dict:
  """jaxsi (module, leaf) path inside a layer -> HF suffix."""
  names = {
      ("input_norm", "scale"): "input_layernorm.weight",
      ("attn", "q_proj", "kernel"): "self_attn.q_proj.weight",
      ("attn", "k_proj", "kernel"): "self_attn.k_proj.weight",
      ("attn", "v_proj", "kernel"): "self_attn.v_proj.weight",
      ("attn", "o_proj", "kernel"): "self_attn.o_proj.weight",
      ("mlp", "gate_proj", "kernel"): "mlp.gate_proj.weight",
      ("mlp", "up_proj", "kernel"): "mlp.up_proj.weight",
      ("mlp", "down_proj", "kernel"): "mlp.down_proj.weight",
  }
  if config.qkv_bias:
    for n in "qkv":
      names[("attn", f"{n}_proj", "bias")] = f"self_attn.{n}_proj.bias"
  if config.qk_norm:
    names[("attn", "q_norm", "scale")] = "self_attn.q_norm.weight"
    names[("attn", "k_norm", "scale")] = "self_attn.k_norm.weight"
  if config.post_attn_norm or config.post_ffw_norm:  # Gemma 2/3 sandwich
    names[("pre_ffw_norm", "scale")] = "pre_feedforward_layernorm.weight"
    if config.post_attn_norm:
      names[("post_attn_norm", "scale")] = "post_attention_layernorm.weight"
    if config.post_ffw_norm:
      names[("post_ffw_norm", "scale")] = "post_feedforward_layernorm.weight"
  else:
    names[("pre_ffw_norm", "scale")] = "post_attention_layernorm.weight"
  return names


def _to_jaxsi(path: tuple, w: np.ndarray, c: ModelConfig) -> np.ndarray:
  leaf = path[-2:]
  if leaf in (("q_proj", "kernel"), ("k_proj", "kernel"), ("v_proj", "kernel")):
    heads = c.n_heads if leaf[0] == "q_proj" else c.n_kv_heads
    return w.T.reshape(c.d_model, heads, c.head_dim)
  if leaf[-1] == "bias":
    heads = c.n_heads if leaf[0] == "q_proj" else c.n_kv_heads
    return w.reshape(heads, c.head_dim)
  if leaf == ("o_proj", "kernel"):
    return w.T.reshape(c.n_heads, c.head_dim, c.d_model)
  if leaf[-1] == "kernel":
    return w.T
  return w


def _to_hf(path: tuple, w: np.ndarray, c: ModelConfig) -> np.ndarray:
  leaf = path[-2:]
  if leaf in (("q_proj", "kernel"), ("k_proj", "kernel"), ("v_proj", "kernel")):
    return w.reshape(c.d_model, -1).T
  if leaf[-1] == "bias":
    return w.reshape(-1)
  if leaf == ("o_proj", "kernel"):
    return w.reshape(-1, c.d_model).T
  if leaf[-1] == "kernel":
    return w.T
  return w


def _name_map(config: ModelConfig) -> dict:
  """Full jaxsi path tuple -> HF tensor name."""
  out = {("embedder", "embedding"): "model.embed_tokens.weight",
         ("final_norm", "scale"): "model.norm.weight"}
  if not config.tie_embeddings:
    out[("lm_head", "kernel")] = "lm_head.weight"
  for i in range(config.n_layers):
    for path, suffix in _layer_names(config).items():
      out[("layers", i) + path] = f"model.layers.{i}.{suffix}"
  return out


def params_from_hf(config: ModelConfig, tensors: Mapping[str, Any], *,
                   value_head: Optional[Params] = None) -> Params:
  """jaxsi params from HF tensors (name -> array), cast to config.param_dtype.

  Args:
    config: the matching ModelConfig (see ``config_from_hf``).
    tensors: HF state dict (numpy / jax arrays). Extra tensors are ignored
      (e.g. rotary buffers); a missing or mis-shaped one raises.
    value_head: params for the value head if ``config.value_head`` (HF
      checkpoints have none), e.g. ``model.init_params(rng)['value_head']``.

  Returns:
    The nested params dict (stacked when ``config.scan_layers``).
  """
  if config.scan_layers:
    return mmodel.stack_layers(params_from_hf(
        config.replace(scan_layers=False), tensors, value_head=value_head))
  model = build(config)
  abstract = model.abstract_params()
  dtype = config.params_dtype
  params: dict = {}
  for path, name in _name_map(config).items():
    if name not in tensors:
      raise KeyError(f"params_from_hf: missing tensor {name!r} (for {path})")
    w = np.asarray(tensors[name])
    w = _to_jaxsi(path, w, config) if w.ndim else w
    want = _get(abstract, path).shape
    if tuple(w.shape) != tuple(want):
      raise ValueError(
          f"params_from_hf: tensor {name!r} has shape {np.shape(tensors[name])},"
          f" converted {w.shape}, expected {want} for {path}")
    _set(params, path, jnp.asarray(w, dtype))
  if config.value_head:
    if value_head is None:
      raise ValueError(
          "params_from_hf: config.value_head=True but no value_head params given")
    params["value_head"] = value_head
  return params


def params_to_hf(config: ModelConfig, params: Params) -> dict:
  """HF-named numpy tensors from jaxsi params (value head dropped)."""
  if config.scan_layers:
    config, params = config.replace(scan_layers=False), mmodel.unstack_layers(params)
  out = {}
  for path, name in _name_map(config).items():
    out[name] = np.asarray(_to_hf(path, np.asarray(_get(params, path)), config))
  return out


def load_safetensors(directory: str) -> dict:
  """All tensors of a local checkpoint as a name -> (memory-mapped) array dict.

  Reads ``model.safetensors.index.json`` shards or ``*.safetensors`` files;
  the arrays are read-only views, nothing is copied until used.
  """
  ckpt = loading.SafetensorsCheckpoint(directory)
  return {name: ckpt.get(name) for name in ckpt.names}


def read_hf_config(directory: str) -> dict:
  """The parsed ``config.json`` of a local checkpoint directory.

  Raises:
    FileNotFoundError: with what to put where.
  """
  path = os.path.join(os.fspath(directory), "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"No config.json in {os.fspath(directory)!r}: put the Hugging Face "
        "checkpoint there (config.json and model.safetensors, or "
        "model.safetensors.index.json with its shards); nothing is downloaded "
        "at run time.")
  with open(path) as f:
    return json.load(f)


# Where multimodal checkpoints keep the text decoder (Gemma 3 4B+):
# transformers v4 "language_model.model.*", v5 "model.language_model.*".
_TEXT_PREFIXES = ("model.", "language_model.model.", "model.language_model.")


def text_model_prefix(names) -> str:
  """Prefix of the decoder's tensors (``'model.'`` for text-only models)."""
  names = set(names)
  for prefix in _TEXT_PREFIXES:
    if prefix + "embed_tokens.weight" in names:
      return prefix
  return "model."


def load_params(config: ModelConfig, directory: str, *,
                shardings: Optional[Params] = None) -> Params:
  """jaxsi params read tensor by tensor from a local safetensors checkpoint.

  Each tensor is memory-mapped, converted to the jaxsi layout as a view
  (transpose/reshape) and placed with ``loading.place``: with ``shardings``
  every device receives only its slice, so the full model is never copied
  into host memory.

  Args:
    config: the ModelConfig (``config_from_hf`` of the checkpoint's config).
    directory: local directory (single file or sharded index).
    shardings: pytree like params of ``jax.sharding.Sharding`` (e.g.
      ``partitioning.param_shardings(model, mesh=mesh)``), or None for the
      default device.

  Returns:
    The params dict, cast to ``config.param_dtype``.

  Raises:
    KeyError / ValueError: a missing or mis-shaped tensor (named).
  """
  if config.value_head:
    raise ValueError("load_params: HF checkpoints have no value head; load with "
                     "value_head=False and add params['value_head'] after")
  ckpt = loading.SafetensorsCheckpoint(directory)
  scanned = config.scan_layers
  if scanned:  # read per layer, stack one parameter at a time on the host
    config = config.replace(scan_layers=False)
    stacked_shardings, shardings = shardings, None
  abstract = build(config).abstract_params()
  prefix = text_model_prefix(ckpt.names)
  params: dict = {}
  for path, name in _name_map(config).items():
    if name.startswith("model."):
      name = prefix + name[len("model."):]
    if name not in ckpt:
      raise KeyError(f"load_params: missing tensor {name!r} (for {path}) in "
                     f"{directory!r}")
    w = ckpt.get(name)
    w = _to_jaxsi(path, w, config) if w.ndim else w
    want = _get(abstract, path).shape
    if tuple(w.shape) != tuple(want):
      raise ValueError(
          f"load_params: tensor {name!r} has shape {ckpt.shape(name)}, "
          f"converted {w.shape}, expected {want} for {path}")
    if scanned and path[0] == "layers":
      _set(params, path, w)  # a host view; placed stacked below
      continue
    sharding = None if shardings is None else _get(shardings, path)
    _set(params, path, loading.place(w, dtype=config.params_dtype,
                                              sharding=sharding))
  if scanned:
    per_layer = params["layers"]
    n = len(per_layer)

    def stack(path, *ws):
      keys = tuple(getattr(k, "key", k) for k in path)
      sharding = (None if stacked_shardings is None
                  else _get(stacked_shardings, ("layers",) + keys))
      return loading.place(np.stack(ws), dtype=config.params_dtype,
                           sharding=sharding)

    params["layers"] = jax.tree_util.tree_map_with_path(
        stack, per_layer[0], *[per_layer[i] for i in range(1, n)])
  return params


def load_pretrained(directory: str, *, mesh: Optional[Any] = None,
                    rules: Optional[Any] = None,
                    shardings: Optional[Params] = None,
                    **overrides) -> Tuple[Model, Params]:
  """(Model, params) from a local HF directory (config.json + safetensors).

  Args:
    directory: local path; nothing is downloaded.
    mesh: optional ``jax.sharding.Mesh``: params are placed directly on their
      shardings from the logical-axis rules (``jaxsi.partitioning``).
    rules: the rules table for ``mesh`` (default: the partitioning default).
    shardings: explicit pytree of shardings (instead of ``mesh``).
    **overrides: ModelConfig fields (e.g. ``dtype='float32'``,
      ``max_seq_len=4096``); ``value_head`` is not supported here.
  """
  config = config_from_hf(read_hf_config(directory), **overrides)
  if config.value_head:
    raise ValueError("load_pretrained: add a value head after loading "
                     "(params['value_head'] = ...) with value_head=True config")
  model = build(config)
  if mesh is not None and shardings is None:
    from jaxsi import partitioning  # pylint: disable=g-import-not-at-top
    kwargs = {} if rules is None else {"rules": rules}
    shardings = partitioning.param_shardings(model, mesh=mesh, **kwargs)
  return model, load_params(config, directory, shardings=shardings)


def _hf_shape(path: tuple, shape: tuple, c: ModelConfig) -> tuple:
  """Shape of the HF tensor for the jaxsi param at ``path`` of ``shape``."""
  leaf = path[-2:]
  if leaf in (("q_proj", "kernel"), ("k_proj", "kernel"), ("v_proj", "kernel")):
    return (int(np.prod(shape[1:])), shape[0])
  if leaf[-1] == "bias":
    return (int(np.prod(shape)),)
  if leaf == ("o_proj", "kernel"):
    return (shape[-1], int(np.prod(shape[:-1])))
  if leaf[-1] == "kernel":
    return tuple(reversed(shape))
  return tuple(shape)


def save_pretrained(directory: str, config: ModelConfig, params: Params,
                    hf_config: Optional[Mapping[str, Any]] = None, *,
                    dtype: Optional[Any] = None,
                    max_shard_bytes: int = 5 * 2**30) -> list:
  """Writes ``config.json`` and safetensors shards (+ index when > 1).

  Tensors are converted and written one at a time (a sharded param is
  gathered to the host only while it is written); the value head is dropped.

  Args:
    directory: output directory (created).
    config: the ModelConfig of ``params``.
    params: jaxsi params (host or sharded arrays).
    hf_config: the config.json dict to write (default:
      ``hf_config_from_config(config)``).
    dtype: tensor dtype in the files (default: the params' dtypes), e.g.
      ``'bfloat16'``.
    max_shard_bytes: largest shard file (HF default 5 GiB).

  Returns:
    The written safetensors file names.
  """
  if hf_config is None:
    hf_config = hf_config_from_config(config)
  if config.scan_layers:
    config, params = config.replace(scan_layers=False), mmodel.unstack_layers(params)
  items = []
  for path, name in _name_map(config).items():
    leaf = _get(params, path)
    out_dtype = jnp.dtype(dtype if dtype is not None else leaf.dtype)
    shape = _hf_shape(path, tuple(leaf.shape), config)
    items.append((name, shape, out_dtype,
                  lambda path=path, leaf=leaf: _to_hf(
                      path, loading.host_value(leaf), config)))
  files = loading.write_checkpoint(directory, items,
                                   max_shard_bytes=max_shard_bytes)
  hf_config = dict(hf_config)
  if dtype is not None:
    hf_config["torch_dtype"] = jnp.dtype(dtype).name
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  return files


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value
