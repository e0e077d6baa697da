"""Dry run: sharding plan, memory per device, compiled steps; experiment gins."""

import glob
import os
import subprocess
import sys

import gin
import jax
import pytest

from jaxsi import dry_run as dr
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi import methods
from jaxsi.models import config as mcfg
from jaxsi.models import lora
from jaxsi.models import model as model_lib
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
             head_dim=8, d_ff=48)


def test_plan_memory_and_compiled_steps_on_a_2x2x2_mesh():
  cfg = mcfg.get_config("tiny", **MICRO)
  method = methods.grpo(rollout=RolloutSpec(n=2, max_new_tokens=4),
                        optim=OptimSpec(minibatches=2))
  lines = []
  report = dr.dry_run(model_config=cfg, method=method,
                      optimizer=opt_lib.make_optimizer(learning_rate=1e-3),
                      prompts_per_step=4, prompt_len=8, data=2, fsdp=2,
                      tensor=2, compiler_options=loop.FAST_COMPILE,
                      log=lines.append)
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert report["batch"] == 8
  rows = {r.path: r for r in report["plan"]}
  emb = rows["embedder.embedding"]
  assert emb.spec == "('tensor', 'fsdp')"
  assert emb.per_device_bytes == 64 * 32 * 4 // 4  # vocab/2, embed/2
  q = rows["layers.1.attn.q_proj.kernel"]
  assert q.per_device_bytes == 32 * 4 * 8 * 4 // 4
  mem = report["memory"]
  assert mem["params"] == sum(r.per_device_bytes for r in report["plan"])
  assert mem["opt_state"] >= 2 * mem["params"]  # Adam mu and nu
  assert mem["reference"] == mem["params"]  # GRPO β > 0: a full copy
  # k and v: [L=2, B=8 over data×fsdp, P+G=12, Hkv=2 over tensor, Dh=8] f32.
  assert mem["kv_cache"] == 2 * (2 * 2 * 12 * 1 * 8 * 4)
  assert set(report["compiled"]) == {"rollout", "prepare", "update"}
  assert mem["xla_temp"] is not None and mem["xla_temp"] > 0
  assert mem["total"] == (mem["params"] + mem["opt_state"] + mem["reference"]
                          + mem["xla_temp"])
  text = "\n".join(lines)
  assert "layers.[0..1].attn.q_proj.kernel" in text
  assert "layers.1." not in text  # layer 0 stands for all
  assert "compiled update" in text and "total" in text


def test_lora_plan_shares_the_reference():
  cfg = mcfg.get_config("tiny", **MICRO)
  report = dr.dry_run(
      model_config=cfg, method=methods.grpo(rollout=RolloutSpec(n=2, max_new_tokens=4)),
      optimizer=opt_lib.make_optimizer(learning_rate=1e-3),
      prompts_per_step=4, prompt_len=8, fsdp=8, compile_steps=False,
      lora_config=lora.LoraConfig(rank=2), log=lambda _: None)
  mem = report["memory"]
  adapters = [r for r in report["plan"] if "lora_" in r.path]
  assert len(adapters) == 2 * 4 * 2
  assert mem["reference"] == sum(r.per_device_bytes for r in adapters
                                 if r.path.endswith("lora_b"))
  assert mem["opt_state"] <= 2 * sum(r.per_device_bytes for r in adapters) + 64
  assert report["compiled"] == {} and mem["xla_temp"] is None


EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "gin_configs", "experiments",
                                            "grpo_gsm8k_*.gin")))


def test_the_four_experiments_exist():
  names = {os.path.basename(p) for p in EXPERIMENTS}
  assert names == {f"grpo_gsm8k_{m}_{hw}.gin" for m in ("qwen2_5_0_5b",
                                                         "qwen3_0_6b")
                   for hw in ("gpu", "tpu")}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_gin_dry_run_plans_the_real_model(path):
  """The real Qwen presets on the configs' 8-device meshes (fake CPU devices
  here), without weights: abstract state, plan and memory (no compile)."""
  assert jax.device_count() == 8
  gin.clear_config()
  gin.add_config_file_search_path(REPO)
  gin.add_config_file_search_path(os.path.join(REPO, "gin_configs"))
  try:
    gin.parse_config_files_and_bindings(
        [path], ["dry_run.run_experiment.compile_steps = False",
                 "dry_run.run_experiment.hf_checkpoint = '/nonexistent'"])
    fn = gin.get_configurable(dr.run_experiment)
    lines = []
    report = fn(dry_run=True, log=lines.append)
    method = gin.query_parameter("dry_run.run_experiment.method").scoped_configurable_fn()
    assert method.rewards[0].names == ("math_verify",)
  finally:
    gin.clear_config()
  preset = "qwen3-0.6b" if "qwen3" in path else "qwen2.5-0.5b"
  cfg = mcfg.get_config(preset)
  assert report["batch"] == 64 * 8
  assert sum(r.per_device_bytes for r in report["plan"]) * 8 >= (
      mcfg.num_params(cfg) * 2)  # bf16, every parameter placed somewhere
  assert report["memory"]["params"] < mcfg.num_params(cfg) * 2 / 3  # sharded
  assert lines[0].startswith(f"== dry run: {mcfg.describe(cfg)}")
  assert "estimated memory per device:" in lines


def test_real_run_without_files_says_what_to_put_where(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    dr.run_experiment(method=methods.grpo(rollout=RolloutSpec(n=2)), optimizer=None,
                      mesh={"data": 8}, prompts_per_step=8, prompt_len=8,
                      hf_checkpoint=str(tmp_path), data_path=str(tmp_path))


def test_lora_binding_in_an_experiment_gin():
  path = [p for p in EXPERIMENTS if p.endswith("qwen3_0_6b_gpu.gin")][0]
  gin.clear_config()
  gin.add_config_file_search_path(REPO)
  gin.add_config_file_search_path(os.path.join(REPO, "gin_configs"))
  try:
    gin.parse_config_files_and_bindings([path], [
        "dry_run.run_experiment.compile_steps = False",
        "LORA = @lora.LoraConfig()",
        "lora.LoraConfig.targets = ('q_proj', 'v_proj')"])
    report = gin.get_configurable(dr.run_experiment)(dry_run=True,
                                                     log=lambda _: None)
  finally:
    gin.clear_config()
  rows = {r.path: r for r in report["plan"]}
  # The Qwen experiment gins set scan_layers: adapters stacked on 'layers'.
  assert rows["layers.attn.q_proj.lora_a"].shape == (28, 1024, 16)
  assert "layers.attn.k_proj.lora_a" not in rows
  assert report["memory"]["reference"] < report["memory"]["params"] / 20


def test_real_run_one_grpo_step_on_tiny_local_files(tmp_path):
  """--nodry_run end to end on local files written here: an HF checkpoint
  (saved by jaxsi), a tokenizer.json with the Qwen specials, GSM8K JSONL;
  params placed on a 2x2x2 mesh, one GRPO iteration."""
  tokenizers = pytest.importorskip("tokenizers")
  pytest.importorskip("math_verify")
  import json  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  from jaxsi.data import math_datasets  # pylint: disable=g-import-not-at-top
  from jaxsi.models import hf  # pylint: disable=g-import-not-at-top
  from jaxsi.rewards import math_verify_reward  # pylint: disable=g-import-not-at-top

  ckpt = tmp_path / "ckpt"
  tk = tokenizers.Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  corpus = ["You are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant. Please reason step by step, and put your final answer "
            "within \\boxed{}. How many apples? 12 + 30 = 42"] * 4
  tk.train_from_iterator(corpus, trainers.BpeTrainer(
      vocab_size=300, show_progress=False,
      special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  ckpt.mkdir()
  tk.save(str(ckpt / "tokenizer.json"))
  (ckpt / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
  cfg = mcfg.get_config("tiny", **dict(MICRO, vocab_size=320), qkv_bias=True)
  _, params = model_lib.init(cfg, jax.random.key(0))
  hf.save_pretrained(str(ckpt), cfg, params)
  math_datasets.write_jsonl(
      [{"question": f"How many apples? {a} + 30", "answer": f"#### {a + 30}"}
       for a in range(4)], tmp_path / "gsm8k" / "train.jsonl")

  trainer = dr.run_experiment(
      method=methods.grpo(rollout=RolloutSpec(n=2, max_new_tokens=4),
                          reward_fns=(math_verify_reward.math_verify_reward,)),
      optimizer=opt_lib.make_optimizer(learning_rate=1e-3),
      mesh={"data": 2, "fsdp": 2, "tensor": 2}, prompts_per_step=2,
      prompt_len=256, hf_checkpoint=str(ckpt),
      data_path=str(tmp_path / "gsm8k"), num_steps=1,
      compiler_options=loop.FAST_COMPILE, log=lambda _: None)
  try:
    assert trainer.iteration == 1 and len(trainer.history) == 1
    assert trainer.tokenizer.eos_id == trainer.tokenizer.token_to_id(
        "<|im_end|>")
    assert trainer.tasks[0].prompt.endswith("<|im_start|>assistant\n")
    emb = trainer.state.params["embedder"]["embedding"]
    assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  finally:
    trainer.close()


def test_launcher_dry_run_on_fake_devices(tmp_path):
  """``python -m jaxsi.launch --gin_file=experiments/... --dry_run
  --cpu_devices=8``: the launcher's MAIN is the experiment; the plan and the
  memory per device print, nothing trains."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # the flag itself must set up the 8 devices
  proc = subprocess.run(
      [sys.executable, "-m", "jaxsi.launch",
       "--gin_file=experiments/grpo_gsm8k_qwen2_5_0_5b_gpu.gin", "--dry_run",
       "--cpu_devices=8", f"--workdir={tmp_path}",
       "--gin.dry_run.run_experiment.compile_steps=False"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "mesh {'data': 1, 'fsdp': 8, 'tensor': 1} (8 devices: cpu)" in proc.stdout
  assert "estimated memory per device:" in proc.stdout
  assert os.path.isfile(tmp_path / "operative_config.gin")
  assert not os.path.exists(tmp_path / "ckpt")
