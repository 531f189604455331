"""Paths typed by a user: `~` and `$VARS` expanded once, where the command line is parsed."""
import ast
import os
import sys

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import pytest
from absl import flags
from ml_collections import config_flags

from sgdc_jax import paths
from sgdc_jax import cli
from sgdc_jax.run import config as config_lib

PACKAGE = os.path.dirname(os.path.abspath(sgdc_jax.__file__))


@pytest.fixture
def home(tmp_path, monkeypatch):
  home = tmp_path / "home"
  home.mkdir()
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.setenv("SGDC_TEST_ROOT", str(tmp_path / "root"))
  monkeypatch.delenv("SGDC_TEST_UNSET", raising=False)
  return str(home)


def test_expand(home, tmp_path):
  assert paths.expand("~") == home
  assert paths.expand("~/w/r50.pth") == os.path.join(home, "w", "r50.pth")
  assert paths.expand("$SGDC_TEST_ROOT/x") == str(tmp_path / "root" / "x")
  assert paths.expand("${SGDC_TEST_ROOT}/x") == str(tmp_path / "root" / "x")
  # An unset variable stays as typed (the error that follows names it); not-set values stay.
  assert paths.expand("$SGDC_TEST_UNSET/x") == "$SGDC_TEST_UNSET/x"
  assert paths.expand("/abs/a~b") == "/abs/a~b" and paths.expand("rel/x") == "rel/x"
  assert paths.expand("") == "" and paths.expand(None) is None


def test_expand_config_covers_every_path_field(home):
  config = config_lib.get_config()
  names = set(config_lib.flatten(config))
  assert set(paths.CONFIG_FIELDS) <= names
  # A new path field (`*_dir`, `pretrained`) must be listed, or `~` in it stays literal.
  looks_like_a_path = {n for n in names
                       if n.endswith("_dir") or n.split(".")[-1] in ("pretrained", "path")}
  assert looks_like_a_path <= set(paths.CONFIG_FIELDS), looks_like_a_path - set(paths.CONFIG_FIELDS)
  for name in paths.CONFIG_FIELDS:
    section, _, leaf = name.rpartition(".")
    (config[section] if section else config)[leaf] = f"~/{leaf}"
  config.data.synthetic.height = 7  # not a path: untouched
  assert sorted(paths.expand_config(config)) == sorted(paths.CONFIG_FIELDS)
  flat = config_lib.flatten(config)
  for name in paths.CONFIG_FIELDS:
    assert flat[name] == os.path.join(home, name.split(".")[-1]), name
  assert config.data.synthetic.height == 7
  assert paths.expand_config(config) == []  # expanded once: nothing left to change
  assert paths.expand_config({"data": {"name": "x"}}) == []  # missing fields are skipped


def _parse(argv, monkeypatch, tmp_path):
  """`cli.parse_flags` on a fresh flag set holding a config flag and every path flag."""
  fresh = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fresh, lock_config=True)
  for name in paths.FLAG_NAMES:
    flags.DEFINE_string(name, None, name, flag_values=fresh)
  flags.DEFINE_string("name", None, "not a path", flag_values=fresh)
  monkeypatch.setattr(flags, "FLAGS", fresh)
  monkeypatch.setattr(sys, "argv", ["prog"] + argv)  # config_flags reads overrides from it
  monkeypatch.chdir(tmp_path)  # a literal '~' folder would appear here
  cli.parse_flags(["prog"] + argv)
  return fresh


def test_command_line_paths_reach_the_code_expanded(home, monkeypatch, tmp_path):
  # A config file under ~, given as --config=~/... (the shell leaves that `~` alone).
  with open(os.path.join(home, "mine.py"), "w", encoding="utf-8") as f:
    f.write("from sgdc_jax.run import config as base\n\n\ndef get_config():\n"
            "  c = base.demo_config()\n  c.data.data_dir = '~/tfds'\n  return c\n")
  argv = ["--config=~/mine.py",
          "--config.model.pretrained=~/weights/resnet50.pth",
          "--config.predict.input_dir=~/in",
          "--config.predict.output_dir=$SGDC_TEST_ROOT/out",
          "--config.compilation_cache_dir=~/cache",
          "--name=~literal"]
  argv += [f"--{name}=~/{name}" for name in paths.FLAG_NAMES]
  parsed = _parse(argv, monkeypatch, tmp_path)
  config = parsed.config
  assert config.model.pretrained == os.path.join(home, "weights", "resnet50.pth")
  assert config.data.data_dir == os.path.join(home, "tfds")  # from the file itself
  assert config.predict.input_dir == os.path.join(home, "in")
  assert config.predict.output_dir == str(tmp_path / "root" / "out")
  assert config.compilation_cache_dir == os.path.join(home, "cache")
  for name in paths.FLAG_NAMES:
    assert parsed[name].value == os.path.join(home, name), name
  assert parsed.name == "~literal"  # not a path flag: as typed
  assert not os.path.exists(tmp_path / "~")


ENTRY_POINTS = ("main.py", "demo.py", "data/prepare.py", "analysis/ablation.py",
                "analysis/diagnose.py")


def _defined_flags(relpath):
  """Names of the flags a module defines (`flags.DEFINE_*('name', ...)`), read with `ast`."""
  with open(os.path.join(PACKAGE, relpath), encoding="utf-8") as f:
    tree = ast.parse(f.read())
  return {node.args[0].value for node in ast.walk(tree)
          if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr.startswith("DEFINE_") and node.args
          and isinstance(node.args[0], ast.Constant)}


def test_every_entry_point_path_flag_is_expanded():
  """The path flags the entry points define are among those `parse_flags` expands (and every
  entry point parses with it)."""
  defined = {p: _defined_flags(p) for p in ENTRY_POINTS}
  assert defined["main.py"] >= {"config", "workdir", "mode"}  # the reader sees the flags
  path_like = {n for names in defined.values() for n in names
               if n.endswith("_dir") or n in ("workdir", "pretrained")}
  assert path_like == {"workdir", "data_dir", "manual_dir"}
  assert path_like <= set(paths.FLAG_NAMES)
  for relpath in ENTRY_POINTS:
    with open(os.path.join(PACKAGE, relpath), encoding="utf-8") as f:
      assert "flags_parser=cli.parse_flags" in f.read(), relpath
