"""Tests for jaxsi.training.metrics."""

import io
import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.training import metrics as M
from jaxsi.training import progress as P


def test_writer_jsonl_and_tensorboard(tmp_path):
  with M.MetricWriter(str(tmp_path), console=False) as w:
    w.write_scalars(1, {"loss": jnp.float32(0.5), "n": np.int32(3),
                        "ok": jnp.array(True)})
    w.write_scalars(2, {"loss": jnp.array([float("nan")]), "g": float("inf"),
                        "h": -np.inf})
  lines = open(tmp_path / "metrics.jsonl").read().splitlines()
  raw = [json.loads(l) for l in lines]
  assert raw[0]["step"] == 1 and raw[0]["loss"] == 0.5 and raw[0]["n"] == 3
  assert raw[0]["ok"] is True and isinstance(raw[0]["time"], float)
  # Non-finite floats are strings in the file, floats again through read_jsonl.
  assert raw[1]["loss"] == "nan" and raw[1]["g"] == "inf" and raw[1]["h"] == "-inf"
  back = M.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert math.isnan(back[1]["loss"]) and back[1]["g"] == math.inf
  assert back[1]["h"] == -math.inf
  tb = os.listdir(tmp_path / "tensorboard")
  assert any(f.startswith("events.out.tfevents") for f in tb)
  assert os.path.getsize(tmp_path / "tensorboard" / tb[0]) > 0
  with pytest.raises(RuntimeError):
    w.write_scalars(3, {"loss": 1.0})


def test_writer_appends_and_console(tmp_path):
  out = io.StringIO()
  with M.MetricWriter(str(tmp_path), tensorboard=False, stream=out) as w:
    w.write_scalars(5, {"loss": 0.25})
  with M.MetricWriter(str(tmp_path), tensorboard=False, console=False) as w:
    w.write_scalars(6, {"loss": 0.125})
  assert [r["step"] for r in M.read_jsonl(str(tmp_path / "metrics.jsonl"))] == [5, 6]
  assert out.getvalue() == "step 5: loss=0.25\n"
  assert not (tmp_path / "tensorboard").exists()


def test_rewind_keeps_rows_through_the_checkpoint_once(tmp_path):
  # A run checkpointed at step 2, killed while writing step 4's row, then
  # resumed: it replays 3 and 4, so the file must end with 1, 2, 3, 4 once.
  path = tmp_path / "metrics.jsonl"
  with M.MetricWriter(str(tmp_path), tensorboard=False, console=False) as w:
    for step in (1, 2, 2, 3):        # step 2 written twice (an older resume)
      w.write_scalars(step, {"loss": float(step)})
  with open(path, "a") as f:
    f.write('{"step": 4, "loss"')    # torn by the kill
  w = M.MetricWriter(str(tmp_path), tensorboard=False, console=False)
  assert w.rewind(2) == 3            # the duplicate 2, the 3, the torn line
  for step in (3, 4):
    w.write_scalars(step, {"loss": float(step) + 0.5})
  w.close()
  rows = M.read_jsonl(str(path))
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert [r["loss"] for r in rows] == [1.0, 2.0, 3.5, 4.5]
  assert M.rewind_jsonl(str(tmp_path / "missing.jsonl"), 3) == (0, 0)
  assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_rewind_rebuilds_tensorboard_events_once_per_step(tmp_path):
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  def scalars(path):
    """(step, value) of every scalar in a TFRecord events file."""
    out, data = [], open(path, "rb").read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      e = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      out += [(e.step, v.simple_value) for v in e.summary.value if v.tag == "loss"]
      i += 12 + n + 4
    return out

  with M.MetricWriter(str(tmp_path), console=False) as w:
    for step in (1, 2, 3):
      w.write_scalars(step, {"loss": float(step)})
  w = M.MetricWriter(str(tmp_path), console=False)   # resumed from step 2
  w.rewind(2)
  w.write_scalars(3, {"loss": 3.5})
  w.close()
  files = os.listdir(tmp_path / "tensorboard")
  assert len(files) == 1
  assert scalars(tmp_path / "tensorboard" / files[0]) == [(1, 1.0), (2, 2.0), (3, 3.5)]


def test_writer_rejects_bad_input_and_non_chief_is_silent(tmp_path):
  with M.MetricWriter(str(tmp_path), tensorboard=False, console=False) as w:
    with pytest.raises(ValueError, match="'v'"):
      w.write_scalars(0, {"v": np.ones(3)})
    with pytest.raises(ValueError, match="reserved"):
      w.write_scalars(0, {"step": 1})
  other = tmp_path / "other"
  with M.MetricWriter(str(other), enabled=False) as w:
    w.write_scalars(0, {"loss": 1.0})
  assert not other.exists()


class _Clock:

  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def test_progress_bar_non_tty_prints_every_n(monkeypatch):
  monkeypatch.setenv("CI", "true")
  out = io.StringIO()
  clock = _Clock()
  bar = P.ProgressBar(100, "train", keys=("loss", "reward/mean"), log_every=25,
                      stream=out, clock=clock, enabled=True)
  assert not bar.interactive
  for step in range(1, 101):
    clock.t = step * 0.5
    bar.update(step, {"loss": jnp.float32(step / 100), "other": 1.0})
  bar.close()
  lines = out.getvalue().splitlines()
  assert len(lines) == 4
  assert lines[0].startswith("train 25/100 (25%) 2 steps/s eta 00:38")
  assert lines[0].endswith("| loss=0.25")
  assert lines[-1].startswith("train 100/100 (100%)")
  assert "other" not in out.getvalue()


def test_progress_bar_min_line_seconds_keeps_short_phases_silent(monkeypatch):
  monkeypatch.setenv("CI", "true")
  out = io.StringIO()
  clock = _Clock()
  # A phase of 4 steps in 3 s: nothing, not even the last step.
  bar = P.ProgressBar(4, "eval", keys=(), log_every=1, stream=out, clock=clock,
                      enabled=True, min_line_seconds=30.0)
  for step in range(1, 5):
    clock.t = step * 0.75
    bar.update(step)
  assert out.getvalue() == ""
  # A long one, one step every 10 s: a line at 30 s, 60 s (steps 3, 6) and
  # at the last step (10 s after the previous line, 70 s after the start).
  clock.t = 0.0
  bar = P.ProgressBar(7, "gen", keys=(), log_every=1, stream=out, clock=clock,
                      enabled=True, min_line_seconds=30.0)
  for step in range(1, 8):
    clock.t = step * 10.0
    bar.update(step)
  lines = out.getvalue().splitlines()
  assert [l.split()[1] for l in lines] == ["3/7", "6/7", "7/7"], lines
  assert lines[0] == "gen 3/7 (43%) 0.1 steps/s eta 00:40"
  with pytest.raises(ValueError, match="min_line_seconds"):
    P.ProgressBar(3, min_line_seconds=-1.0)


def test_progress_bar_tty_uses_tqdm(monkeypatch):
  monkeypatch.delenv("CI", raising=False)
  out = io.StringIO()
  bar = P.ProgressBar(10, "x", stream=out, interactive=True, enabled=True,
                      refresh_seconds=0.0)
  for step in range(1, 11):
    bar.update(step, {"loss": 1.5})
  bar.close()
  text = out.getvalue()
  assert "10/10" in text and "loss=1.5" in text


def test_throughput_and_mfu():
  clock = _Clock()
  meter = M.Throughput(flops_per_step=2e12, peak_flops=1e13,
                       tokens_per_step=1000, clock=clock)
  with pytest.raises(RuntimeError):
    meter.measure(steps=1)
  meter.start(sync=jnp.ones(2))
  clock.t = 2.0
  out = meter.measure(steps=4, sync={"a": jnp.zeros(3)})
  assert out["perf/step_time"] == pytest.approx(0.5)
  assert out["perf/steps_per_sec"] == pytest.approx(2.0)
  assert out["perf/tokens_per_sec"] == pytest.approx(2000.0)
  assert out["perf/mfu"] == pytest.approx(2e12 / 0.5 / 1e13)
  assert out["perf/tflops_per_sec"] == pytest.approx(4.0)
  clock.t = 3.0  # Next window starts where the previous ended.
  out = meter.measure(steps=1, tokens=10)
  assert out["perf/step_time"] == pytest.approx(1.0)
  assert out["perf/tokens_per_sec"] == pytest.approx(10.0)
  assert M.mfu(flops_per_step=1.0, step_time=2.0, peak_flops=4.0) == 0.125
  with pytest.raises(ValueError):
    M.mfu(flops_per_step=1.0, step_time=0.0, peak_flops=1.0)


def test_accumulator():
  acc = M.MetricAccumulator(reductions={"n": "sum", "m": "max"})
  acc.add({"loss": jnp.float32(1.0), "n": jnp.int32(2), "m": 1.0})
  acc.add({"loss": jnp.float32(3.0), "n": jnp.int32(5), "m": 7.0, "x": 4.0})
  assert len(acc) == 2
  assert acc.result() == {"loss": 2.0, "n": 7.0, "m": 7.0, "x": 4.0}
  assert len(acc) == 0 and acc.result() == {}
  acc.add({"loss": jnp.float32(float("nan"))})
  assert math.isnan(acc.result()["loss"])
  with pytest.raises(ValueError):
    M.MetricAccumulator(reductions={"a": "median"})
