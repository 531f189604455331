"""The README's Python example runs as written."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def _python_blocks():
  return re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)


def test_readme_module_example_runs():
  example = next(b for b in _python_blocks() if 'sgdc_jax.SGE(' in b)
  namespace = {}
  exec(compile(example, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  assert namespace['edge_logits'].shape == (2, 64, 64, 1)
  assert namespace['guidance'].shape == (2, 64, 64, 16)
  assert namespace['y'].shape == (2, 64, 64, 256)
  assert 'batch_stats' in namespace['new_state']


def test_readme_names_both_make_commands_first():
  text = README.read_text()
  first_block = text[text.index('```bash'):]
  first_block = first_block[:first_block.index('```', 7)]
  assert 'make demo' in first_block and 'make test' in first_block
