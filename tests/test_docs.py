"""README.md and docs/*.md stay true: their code runs, their links and anchors resolve, the
modules and config files they name exist, each command is printed once, and the README stays a
landing page that links the paper and the reference modules."""
import collections
import importlib.util
import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
DOCS = sorted((ROOT / 'docs').glob('*.md'))
PAGES = [README] + DOCS
README_MAX_LINES = 180
PAPER = 'https://openreview.net/forum?id=eVqt3UgPXv'
ARXIV = 'https://arxiv.org/abs/2602.23496'
REFERENCE = 'https://github.com/solstice0621/SGDC'
FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', flags=re.S | re.M)


def _python_blocks():
  return re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)


def _exec_readme_block(marker: str) -> dict:
  example = next(b for b in _python_blocks() if marker in b)
  namespace = {}
  exec(compile(example, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  return namespace


def _prose(text: str) -> str:
  """`text` without fenced blocks and inline code spans (no links or headings there)."""
  return re.sub(r'`[^`\n]*`', '', FENCE.sub('', text))


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r'[`*_]', '', heading.strip()).lower()
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def _anchors(page: pathlib.Path) -> set:
  seen = collections.Counter()
  anchors = set()
  for heading in re.findall(r'^#{1,6} +(.+?) *#*$', FENCE.sub('', page.read_text()), flags=re.M):
    slug = _slug(heading)
    anchors.add(slug if not seen[slug] else f'{slug}-{seen[slug]}')
    seen[slug] += 1
  return anchors


def _links(page: pathlib.Path) -> list:
  """Targets of the page's Markdown links and images, in order."""
  return re.findall(r'\]\(([^)\s]+)\)', _prose(page.read_text()))


def _commands(text: str) -> list:
  """Every command line of the fenced blocks, continuation lines joined, spaces collapsed."""
  lines = []
  for block in FENCE.findall(text):
    for line in block.replace('\\\n', ' ').splitlines():
      line = ' '.join(line.split())
      if line and not line.startswith('#'):
        lines.append(line)
  return lines


def test_readme_module_example_runs():
  namespace = _exec_readme_block('sgdc_jax.SGE(')
  assert namespace['edge_logits'].shape == (2, 64, 64, 1)
  assert namespace['guidance'].shape == (2, 64, 64, 16)
  assert namespace['y'].shape == (2, 64, 64, 256)
  assert 'batch_stats' in namespace['new_state']


def test_readme_nnx_example_runs():
  namespace = _exec_readme_block('sgdc_nnx.SGE(')
  assert namespace['edge_logits'].shape == (2, 64, 64, 1)
  assert namespace['guidance'].shape == (2, 64, 64, 16)
  assert namespace['y'].shape == (2, 64, 64, 256)
  assert namespace['out']['logits'].shape == (1, 64, 64, 1)
  assert namespace['out']['edge_logits'].shape == (1, 64, 64, 1)


def test_readme_names_the_make_commands_first():
  text = README.read_text()
  first_block = text[text.index('```bash'):]
  first_block = first_block[:first_block.index('```', 7)]
  assert 'make demo' in first_block and 'make test' in first_block
  assert 'make notebook' in first_block


def test_readme_is_a_landing_page():
  lines = README.read_text().splitlines()
  assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines'


def test_readme_links_the_paper_the_reference_and_every_docs_page():
  text = README.read_text()
  for url in (PAPER, ARXIV, REFERENCE):
    assert f']({url})' in text, url
  linked = {target.split('#')[0] for target in _links(README)}
  missing = [f'docs/{page.name}' for page in DOCS if f'docs/{page.name}' not in linked]
  assert not missing, f'docs pages the README does not link: {missing}'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
  broken = []
  for target in _links(page):
    if re.match(r'[a-z]+:', target):  # https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
      broken.append(f'{target}: no file {file.relative_to(ROOT)}')
    elif anchor and file.suffix == '.md' and anchor not in _anchors(file):
      broken.append(f'{target}: no heading with anchor #{anchor} in {file.relative_to(ROOT)}')
  assert not broken, f'{page.name}:\n' + '\n'.join(broken)


def test_slug_follows_github():
  assert _slug('4. Kernel sources (baselines)') == '4-kernel-sources-baselines'
  assert _slug('Your own data (`folder`)') == 'your-own-data-folder'
  assert _slug("Weights of the authors' PyTorch modules") == (
      'weights-of-the-authors-pytorch-modules')


def test_named_modules_exist_under_their_current_names():
  moved = importlib.import_module('sgdc_jax._moved')
  old_names = set(moved.MOVED) | set(moved.SPLIT)
  named = {m for page in PAGES for m in re.findall(r'python -m (sgdc_jax(?:\.\w+)*)',
                                                   page.read_text())}
  assert {'sgdc_jax.main', 'sgdc_jax.demo', 'sgdc_jax.data.prepare',
          'sgdc_jax.analysis.ablation', 'sgdc_jax.analysis.diagnose'} <= named
  missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
  assert not missing, f'modules named by `python -m` that do not exist: {missing}'
  deprecated = sorted(named & old_names)
  assert not deprecated, f'deprecated module names: {deprecated}'


def test_named_config_files_exist():
  named = {c for page in PAGES
           for c in re.findall(r'--config=(configs/[\w./-]+?\.py)', page.read_text())}
  assert 'configs/isic.py' in named
  missing = sorted(c for c in named if not (ROOT / c).is_file())
  assert not missing, f'config files that do not exist: {missing}'


def test_each_command_is_printed_once():
  counts = collections.Counter(
      line for page in PAGES for line in _commands(page.read_text())
      if line.startswith(('python -m sgdc_jax', 'python benchmarks/')))
  assert counts, 'no commands found'
  repeated = sorted(line for line, n in counts.items() if n > 1)
  assert not repeated, 'printed more than once across README.md and docs/ (link instead):\n' + (
      '\n'.join(repeated))


def test_each_ablation_command_is_printed_once():
  """Fenced and inline, full commands (with arguments) of the ablation."""
  found = collections.Counter()
  for page in PAGES:
    text = page.read_text()
    found.update(line for line in _commands(text)
                 if line.startswith('python -m sgdc_jax.analysis.ablation '))
    found.update(' '.join(span.split()) for span in re.findall(r'`([^`]+)`', FENCE.sub('', text))
                 if span.startswith('python -m sgdc_jax.analysis.ablation '))
  assert found, 'no ablation command found'
  repeated = sorted(line for line, n in found.items() if n > 1)
  assert not repeated, repeated


def test_citation_file_and_readme_bibtex_cite_the_paper():
  cff = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
  assert cff['cff-version'] == '1.2.0'
  assert cff['license'] == 'Apache-2.0' and (ROOT / 'LICENSE').is_file()
  paper = cff['preferred-citation']
  assert [a['family-names'] for a in paper['authors']] == ['Shi', 'Zhu', 'Swamy']
  assert paper['year'] == 2026 and paper['url'] == PAPER
  bibtex = re.search(r'```bibtex\n(.*?)```', README.read_text(), flags=re.S).group(1)
  assert bibtex.startswith('@inproceedings{shi2026sgdc,')
  assert 'Structurally-Guided Dynamic Convolution for Medical Image Segmentation' in bibtex
  assert paper['title'].endswith(
      'Structurally-Guided Dynamic Convolution for Medical Image Segmentation')
