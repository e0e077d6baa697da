"""LoRA adapters: equality with the base at init, frozen base, merge, export."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsi import partitioning
from jaxsi.models import hf
from jaxsi.models import loading
from jaxsi.models import lora
from tests.models import _util

CFG = lora.LoraConfig(rank=2, alpha=4.0,
                      targets=("q_proj", "v_proj", "o_proj", "down_proj"))


def _setup(seed=0, random_b=True):
  base_model, base = _util.micro_model("qwen2")
  model = lora.build(base_model.config, CFG)
  adapters = model.init_adapters(jax.random.key(seed))
  if random_b:  # non-zero B so the adapters change the output
    adapters = jax.tree_util.tree_map_with_path(
        lambda p, x: (0.5 * jax.random.normal(jax.random.key(len(str(p))),
                                              x.shape, x.dtype)
                      if p[-1].key == "lora_b" else x), adapters)
  return base_model, base, model, lora.add_adapters(base, adapters)


def _apply(model, params):
  tokens, mask, pos = _inputs()
  return _util.jitted_apply(model)(params, tokens, pos, mask)


def _inputs():
  return _util.left_padded([[3, 1, 4, 1, 5, 9, 2], [2, 6, 5]])


def test_structure_and_shapes():
  base_model, base, model, params = _setup(random_b=False)
  q = params["layers"][0]["attn"]["q_proj"]
  c = base_model.config
  assert q["lora_a"].shape == (c.d_model, 2)
  assert q["lora_b"].shape == (2, c.n_heads, c.head_dim)
  o = params["layers"][1]["attn"]["o_proj"]
  assert o["lora_a"].shape == (c.n_heads, c.head_dim, 2)
  assert o["lora_b"].shape == (2, c.d_model)
  assert "lora_a" not in params["layers"][0]["attn"]["k_proj"]
  assert "lora_a" not in params["layers"][0]["mlp"]["up_proj"]
  assert jax.tree.structure(model.abstract_params()) == jax.tree.structure(params)
  axes = model.logical_axes()
  assert axes["layers"][0]["attn"]["q_proj"]["lora_b"] == (None, "heads", "head_dim")
  n_adapter = sum(x.size for x in jax.tree.leaves(lora.adapter_params(params)))
  assert model.num_adapter_params == n_adapter
  assert model.num_params == n_adapter + base_model.num_params
  # No copy: the base view shares the very arrays of params.
  view = lora.base_params(params)
  assert view["embedder"]["embedding"] is params["embedder"]["embedding"]
  assert jax.tree.structure(view) == jax.tree.structure(base)
  with pytest.raises(ValueError, match="unknown"):
    lora.LoraConfig(targets=("qkv",))
  with pytest.raises(ValueError, match="outside"):
    lora.build(base_model.config, lora.LoraConfig(layers=(7,)))


def test_fresh_adapters_equal_base_and_reference_is_base():
  base_model, base, model, params = _setup(random_b=False)
  tokens, mask, pos = _inputs()
  want, _ = _apply(base_model, base)
  got, _ = _apply(model, params)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
  _, _, model, params = _setup(random_b=True)
  got, _ = _apply(model, params)
  assert np.abs(np.asarray(got) - np.asarray(want))[mask].max() > 1e-2
  ref, _ = _apply(model.base_model, lora.base_params(params))
  np.testing.assert_array_equal(np.asarray(ref), np.asarray(want))
  # Same structure as the policy, zero adapters, base arrays shared.
  ref_params = lora.reference_params(params)
  assert ref_params["embedder"]["embedding"] is params["embedder"]["embedding"]
  q = ref_params["layers"][0]["attn"]["q_proj"]
  assert q["kernel"] is params["layers"][0]["attn"]["q_proj"]["kernel"]
  assert q["lora_a"] is params["layers"][0]["attn"]["q_proj"]["lora_a"]
  assert not np.asarray(q["lora_b"]).any()
  ref2, _ = _apply(model, ref_params)
  np.testing.assert_allclose(np.asarray(ref2), np.asarray(want), atol=1e-6)


def test_merge_equals_adapted_forward_and_delta_is_scaled_ab():
  _, _, model, params = _setup()
  tokens, mask, pos = _inputs()
  got, _ = _apply(model, params)
  merged_model, merged = lora.merge(model, params)
  want, _ = _apply(merged_model, merged)
  np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(want)[mask],
                             atol=2e-5, rtol=2e-5)
  node = params["layers"][1]["attn"]["o_proj"]
  a, b = np.asarray(node["lora_a"]), np.asarray(node["lora_b"])
  want_delta = CFG.scale * np.einsum("hkr,rd->hkd", a, b)
  np.testing.assert_allclose(
      np.asarray(merged["layers"][1]["attn"]["o_proj"]["kernel"]),
      np.asarray(node["kernel"]) + want_delta, atol=1e-6)
  assert jax.tree.structure(merged) == jax.tree.structure(
      lora.base_params(params))


def test_gradients_and_updates_reach_only_adapters():
  _, _, model, params = _setup()
  tokens, mask, pos = _inputs()

  def loss(p):
    logits, _ = model.apply(p, tokens, pos, mask)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * mask)

  grads = jax.jit(jax.grad(loss), compiler_options=_util.FAST)(params)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    if lora.is_lora_path(path):
      assert np.abs(np.asarray(g)).max() > 0, path
    else:
      assert not np.asarray(g).any(), path
  opt = lora.freeze_base(optax.adamw(1e-2, weight_decay=0.1))
  state = opt.init(params)
  state_size = sum(np.size(x) for x in jax.tree.leaves(state))
  assert state_size <= 2 * model.num_adapter_params + 8  # no base moments
  updates, _ = opt.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  mask_tree = lora.trainable_mask(params)
  for m, old, upd in zip(jax.tree.leaves(mask_tree), jax.tree.leaves(params),
                         jax.tree.leaves(new)):
    if m:
      assert not np.array_equal(np.asarray(old), np.asarray(upd))
    else:
      np.testing.assert_array_equal(np.asarray(old), np.asarray(upd))


def test_shardings_on_mesh():
  _, _, model, params = _setup()
  mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=2)
  sh = partitioning.param_shardings(model, mesh=mesh)
  spec = sh["layers"][0]["attn"]["q_proj"]["lora_b"].spec
  assert spec == jax.sharding.PartitionSpec(None, "tensor", None)
  placed = jax.device_put(params, sh)
  tokens, mask, pos = _inputs()
  got, _ = _apply(model, placed)
  want, _ = _apply(model, params)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_export_merged_to_hf_and_peft(tmp_path):
  _, _, model, params = _setup()
  merged_model, merged = lora.merge(model, params)
  hf.save_pretrained(str(tmp_path / "merged"), merged_model.config, merged)
  loaded_model, loaded = hf.load_pretrained(str(tmp_path / "merged"))
  tokens, mask, pos = _inputs()
  want, _ = _apply(model, params)
  got, _ = _apply(loaded_model, loaded)
  np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(want)[mask],
                             atol=2e-5, rtol=2e-5)
  # PEFT layout: W_hf + alpha/r · B_w @ A_w reproduces the merged HF weight.
  lora.save_peft_adapters(str(tmp_path / "peft"), model, params)
  peft = loading.SafetensorsCheckpoint(str(tmp_path / "peft"))
  base_hf = hf.params_to_hf(model.config, lora.base_params(params))
  merged_hf = hf.params_to_hf(merged_model.config, merged)
  names = [n for n in peft.names if n.endswith("lora_A.weight")]
  assert len(names) == model.config.n_layers * len(CFG.targets)
  for n in names:
    hf_name = n.replace("base_model.model.", "", 1).replace(
        ".lora_A.weight", ".weight")
    a_w = peft.get(n)
    b_w = peft.get(n.replace("lora_A", "lora_B"))
    assert a_w.shape[0] == CFG.rank and b_w.shape[1] == CFG.rank
    np.testing.assert_allclose(base_hf[hf_name] + CFG.scale * b_w @ a_w,
                               merged_hf[hf_name], atol=1e-5, err_msg=n)
