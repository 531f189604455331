"""The kernel-source ablation: statistics against independent computations, and the command
end to end (files written, finished runs skipped, a killed run resumed)."""

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

from sgdc_jax.analysis import ablation, report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(tempfile.gettempdir(), "sgdc_jax_test_xla_cache")


def exact_wilcoxon_p(diff: np.ndarray) -> float:
  """Two-sided exact signed-rank p-value by enumerating all 2^n sign patterns (no ties)."""
  ranks = np.argsort(np.argsort(np.abs(diff))) + 1
  w_plus = ranks[diff > 0].sum()
  n = diff.size
  total = n * (n + 1) / 2
  stats_all = np.array([sum(r for r, s in zip(ranks, signs) if s)
                        for signs in itertools.product((0, 1), repeat=n)])
  extreme = min(w_plus, total - w_plus)
  return min(1.0, 2 * np.mean(stats_all <= extreme))


def test_paired_comparison_matches_exact_signed_rank_and_counts():
  rng = np.random.default_rng(3)
  b = rng.uniform(0.5, 0.9, 10)
  diff = rng.permutation(np.linspace(-0.05, 0.2, 10) + 0.001)  # distinct |d|, none zero
  a = b + diff
  r = report.paired_comparison(a, b, higher_is_better=True, num_resamples=4000, seed=1)
  assert r["wilcoxon_p"] == pytest.approx(exact_wilcoxon_p(a - b), rel=1e-9)
  assert r["mean_diff"] == pytest.approx(np.mean(a - b))
  assert r["wins"] == int(np.sum(a > b)) and r["losses"] == int(np.sum(a < b))
  assert r["ties"] == 0 and r["n"] == 10
  assert diff.min() <= r["ci_low"] <= r["mean_diff"] <= r["ci_high"] <= diff.max()


def test_paired_comparison_lower_is_better_and_significance():
  a = np.arange(40, dtype=float)            # e.g. HD95 of the reference: 1 px lower everywhere
  b = a + 1.0
  r = report.paired_comparison(a, b, higher_is_better=False)
  assert r["wins"] == 40 and r["losses"] == 0
  assert r["mean_diff"] == pytest.approx(-1.0)
  assert r["significant"] and r["ci_high"] < 0
  same = report.paired_comparison(a, a.copy(), higher_is_better=False)
  assert same["ties"] == 40 and same["wilcoxon_p"] == 1.0 and not same["significant"]


def test_noise_is_reported_as_no_significant_difference():
  rng = np.random.default_rng(0)
  per_source = {s: {str(i): {m: float(v) for m in report.METRICS}
                    for i, v in enumerate(rng.normal(0.8, 0.05, 60))}
                for s in ("structure", "pooled")}
  comps = report.compare_sources(per_source)
  assert {c["metric"] for c in comps} == set(report.METRICS)
  text = report.markdown([], comps, "t")
  assert all(c["ci_low"] < 0 < c["ci_high"] for c in comps)
  assert text.count("no significant difference") == len(comps)


def test_bad_inputs_are_named(tmp_path):
  with pytest.raises(ValueError, match="equal, non-empty"):
    report.paired_comparison([1.0, 2.0], [1.0], higher_is_better=True)
  with pytest.raises(ValueError, match="finite"):
    report.paired_comparison([1.0, np.nan], [1.0, 2.0], higher_is_better=True)
  with pytest.raises(ValueError, match="different images"):
    report.seed_averaged([{"a": {}}, {"b": {}}])
  path = tmp_path / "per_image.csv"
  path.write_text("id,index,dice,iou,hd95,assd,nsd,boundary_iou\nx,0,1,1,0,0,1,1\n"
                  "x,1,1,1,0,0,1,1\n")
  with pytest.raises(ValueError, match="appears twice"):
    report.read_per_image(str(path))
  with pytest.raises(ValueError, match="not found"):
    report.read_per_image(str(tmp_path / "missing.csv"))


def test_seed_average_and_source_summary():
  runs = [{"source": "structure", "seed": 0, "dice": 0.8, "iou": 0.7, "hd95": 10.0, "assd": 3.0,
           "params": 100, "gflops_per_image": 1.0, "train_s": 10.0},
          {"source": "structure", "seed": 1, "dice": 0.9, "iou": 0.8, "hd95": 6.0, "assd": 1.0,
           "params": 100, "gflops_per_image": 1.0, "train_s": 30.0}]
  (row,) = report.source_summary(runs)
  assert row["dice"] == pytest.approx(0.85) and row["dice_sd"] == pytest.approx(np.std([0.8, 0.9],
                                                                                      ddof=1))
  assert row["hd95"] == pytest.approx(8.0) and row["seeds"] == [0, 1]
  avg = report.seed_averaged([
      {"i": {"dice": 0.5, "iou": 0.4, "hd95": 2.0, "assd": 1.0, "nsd": 0.2, "boundary_iou": 0.1}},
      {"i": {"dice": 0.7, "iou": 0.6, "hd95": 4.0, "assd": 3.0, "nsd": 0.4, "boundary_iou": 0.3}}])
  assert avg["i"]["dice"] == pytest.approx(0.6) and avg["i"]["hd95"] == pytest.approx(3.0)
  assert avg["i"]["nsd"] == pytest.approx(0.3) and avg["i"]["boundary_iou"] == pytest.approx(0.2)
  # A run recorded before NSD existed counts as NaN in the summary, not as an error.
  (old,) = report.source_summary(runs[:1])
  assert np.isnan(old["nsd"])


def test_report_title_says_where_images_were_scored():
  note = ablation._region_note
  assert note([{"region": "roi"}, {"region": "roi"}]).endswith("each image's region of interest")
  assert "where an image has one" in note([{"region": "roi"}, {"region": "image"}])
  assert note([{"region": "image"}, {}]) == ""


TINY_CONFIG = textwrap.dedent("""
    from sgdc_jax.run import config as config_lib
    def get_config():
      c = config_lib.get_config()
      mc = c.model
      mc.encoder = 'resnet18'; mc.decoder_channels = 16; mc.sge_bottleneck = 16; mc.sge_mid = 16
      mc.guide_channels = 4; mc.num_heads = 2; mc.n_blocks = 1
      d = c.data
      d.image_size = 64; d.read_threads = 1; d.prefetch_batches = 1; d.num_workers = 0
      d.synthetic.train_size = 16; d.synthetic.validation_size = 4; d.synthetic.test_size = 6
      d.synthetic.height = 48; d.synthetic.width = 64
      c.train.num_steps = 6; c.train.batch_size = 2; c.train.log_every = 1
      c.train.eval_every = 0; c.train.checkpoint_every = 1
      c.eval.batch_size = 2; c.eval.overlays = 1
      c.optimizer.warmup_steps = 1
      return c
""")


def _command(config_path, workdir, *extra):
  return [sys.executable, "-m", "sgdc_jax.analysis.ablation", f"--config={config_path}",
          f"--workdir={workdir}", "--sources=structure,none", "--seeds=0", *extra]


def _env():
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", SGDC_NO_BAR="1",
              JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def _steps_saved(run_dir):
  ckpt = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(ckpt):
    return []
  return sorted(int(n) for n in os.listdir(ckpt) if n.isdigit())


@pytest.mark.slow
def test_ablation_command_writes_report_skips_finished_and_resumes_killed(tmp_path):
  config_path = tmp_path / "tiny.py"
  config_path.write_text(TINY_CONFIG)
  workdir = tmp_path / "abl"
  first = workdir / "structure_seed0"
  # 1. Kill the first run (SIGKILL) once it has saved a checkpoint past step 1.
  proc = subprocess.Popen(_command(config_path, workdir), env=_env(), cwd=tmp_path,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 400
  while time.time() < deadline and proc.poll() is None and not any(
      s >= 2 for s in _steps_saved(first)):
    time.sleep(0.2)
  assert proc.poll() is None, "the ablation ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (first / "ablation_run.json").exists()
  # 2. Rerun: resumes the killed run, trains the second, writes every file.
  out = subprocess.run(_command(config_path, workdir), env=_env(), cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  assert "resumed from step" in out.stdout + out.stderr
  for name in ("ablation.csv", "ablation.md", "ablation.png"):
    assert (workdir / name).stat().st_size > 0
  with open(workdir / "ablation.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [(r["source"], r["seed"]) for r in rows] == [("structure", "0"), ("none", "0")]
  for r in rows:
    assert int(r["n_images"]) == 6 and 0.0 <= float(r["dice"]) <= 1.0
    assert r["region"] == "image" and int(r["n_roi"]) == 0  # synthetic data: no ROI
    assert int(r["params"]) > 0 and float(r["gflops_per_image"]) > 0
  md = (workdir / "ablation.md").read_text()
  assert "structure vs none" in md and "| hd95 |" in md and "| nsd |" in md
  assert "| boundary_iou |" in md
  # Knock-outs: every applicable one per source, block and edge tables per run.
  for source, names in (("structure", ("blocks_off", "dynamic_off", "guidance_zeroed",
                                       "guidance_swapped")), ("none", ("blocks_off",
                                                                       "dynamic_off"))):
    for name in names:
      assert f"| {source} intact vs {name} | dice |" in md, (source, name)
  assert "none intact vs guidance_zeroed" not in md
  assert "| structure intact vs blocks_off | cldice |" in md
  assert "region of interest" not in md.splitlines()[0]
  assert "| structure s0 | sgdc0 |" in md and "SGE edge map: boundary F-score" in md
  for r in rows:
    assert 0.0 <= float(r["nsd"]) <= 1.0 and 0.0 <= float(r["boundary_iou"]) <= 1.0
    assert r["ko_blocks_off_dice"] != "" and float(r["ls1_mean_abs"]) > 0
  assert rows[0]["ko_guidance_swapped_dice"] != "" and rows[1]["ko_guidance_swapped_dice"] == ""
  record = json.loads((first / "ablation_run.json").read_text())
  assert record["checkpoint_step"] <= 6 and record["steps"] == 6
  diag = json.loads((first / record["diagnostics"]).read_text())
  assert diag["n_images"] == 6 and set(diag["knockouts"]) == {
      "blocks_off", "dynamic_off", "guidance_zeroed", "guidance_swapped"}
  # The standalone entry on the same workdir, config from its record, on another split.
  diag_cmd = [sys.executable, "-m", "sgdc_jax.analysis.diagnose", f"--workdir={first}",
              "--split=validation", "--edge_tolerance=2"]
  out_diag = subprocess.run(diag_cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
  assert out_diag.returncode == 0, out_diag.stderr[-3000:]
  (vdir,) = (first / "diagnose" / "synthetic_lesions" / "validation").iterdir()
  vdiag = json.loads((vdir / "diagnose.json").read_text())
  assert vdiag["n_images"] == 4 and vdiag["edge"]["tolerance_px"] == 2.0
  assert 0.0 <= vdiag["edge"]["edge_f"] <= 1.0
  for name in ("intact", "blocks_off", "guidance_swapped"):
    with open(vdir / name / "per_image.csv", newline="") as f:
      assert len(list(csv.DictReader(f))) == 4
  assert "| structure | blocks_off |" in out_diag.stdout
  # 3. Rerun again: both runs are skipped (nothing trained), the report is rebuilt.
  mtime = os.path.getmtime(first / "ablation_run.json")
  again = subprocess.run(_command(config_path, workdir), env=_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished, skipped") == 2
  assert os.path.getmtime(first / "ablation_run.json") == mtime
  # 4. A changed model field on a finished run is refused with the field named, exit 2.
  bad = subprocess.run(_command(config_path, workdir, "--config.model.num_heads=4"), env=_env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2
  assert "model.num_heads" in bad.stderr and "Traceback" not in bad.stderr
