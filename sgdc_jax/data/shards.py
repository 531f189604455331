"""A prepared data set's ArrayRecord shards checked against its `dataset_info.json`.

A shard cut short (a copy that stopped early, a full disk) or missing used to surface deep in
Grain as `TypeError: object of type 'NoneType' has no len()` or `RuntimeError: Corrupted
Riegeli/records file`, naming no file. `checked_source` checks, when a split is opened, that
every shard it reads exists and that its ArrayRecord index (the footer, read in milliseconds
whatever the shard's size) holds the number of records TFDS recorded; a truncated shard has
lost its footer, so its count is wrong. Damage inside a shard whose index survived shows at
read time: `CheckedSource` turns the reader's error into one naming the shard. Both raise
`DamagedDataError` with the command that rebuilds the data set.
"""
from __future__ import annotations

import contextlib
import os

from sgdc_jax.errors import DamagedDataError
from sgdc_jax.log import shown_path

# Random access: no read-ahead and no thread pool just to read a footer.
_READER_OPTIONS = 'readahead_buffer_size:0,max_parallelism:0'
# (path, size, mtime_ns, expected records) -> problem or None: a split is opened at every
# evaluation, a shard is read only once per process while it is unchanged.
_CHECKED: dict[tuple, str | None] = {}


def _first_line(error: BaseException, limit: int = 160) -> str:
  """The reader's message up to its first ';' (Riegeli appends byte positions and status
  codes after it), at most `limit` characters."""
  text = (str(error).strip().splitlines() or [''])[0].split(';')[0].strip()
  text = text or type(error).__name__
  return text if len(text) <= limit else text[:limit] + '...'


def _count_problem(path: str, expected: int) -> str | None:
  """What reading the shard's index shows is wrong, or None."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  try:
    with open(path, 'rb'):  # a permission problem as itself, not as damage
      pass
  except OSError as e:
    return f'cannot be read ({e.strerror or e})'
  try:
    reader = array_record_module.ArrayRecordReader(path, _READER_OPTIONS)
  except (RuntimeError, OSError, ValueError) as e:
    return f'is damaged ({_first_line(e)})'
  try:
    found = reader.num_records()
  except RuntimeError as e:
    return f'is damaged ({_first_line(e)})'
  finally:
    with contextlib.suppress(RuntimeError):  # a damaged file also fails to close
      reader.close()
  if found < expected:
    return (f'is damaged ({expected} records expected, {found} readable: file cut short or '
            'corrupt)')
  if found > expected:
    return (f'holds {found} records where the data set recorded {expected} (not the file it '
            'was prepared with)')
  return None


def shard_problem(path: str, expected: int) -> str | None:
  """What is wrong with shard `path`, which should hold `expected` records, or None."""
  try:
    stat = os.stat(path)
  except FileNotFoundError:
    return f'is missing ({int(expected)} records expected)'
  except OSError as e:
    return f'cannot be read ({e.strerror or e})'
  key = (path, stat.st_size, stat.st_mtime_ns, int(expected))
  if key not in _CHECKED:
    _CHECKED[key] = _count_problem(path, int(expected))
  return _CHECKED[key]


def check_shards(instructions, where: str, hint: str) -> None:
  """Raises `DamagedDataError` naming the first bad shard of `instructions`.

  Args:
    instructions: TFDS `FileInstruction`s (`filename`, `examples_in_shard`) of the split.
    where: "data set 'NAME' split 'SPLIT'", the start of the message.
    hint: how to repair, the end of the message.
  """
  seen, bad = set(), []
  for fi in instructions:
    if fi.filename in seen:
      continue
    seen.add(fi.filename)
    problem = shard_problem(os.fspath(fi.filename), fi.examples_in_shard)
    if problem:
      bad.append((fi.filename, problem))
  if bad:
    path, problem = bad[0]
    more = (f'; {len(bad) - 1} more of its {len(seen)} shards are damaged or missing'
            if len(bad) > 1 else '')
    raise DamagedDataError(f'{where}: shard {shown_path(path)} {problem}{more}; {hint}')


class CheckedSource:
  """A TFDS ArrayRecord source whose read failures name the shard (`DamagedDataError`).

  `len` and `[index]` as the wrapped source; other public attributes are the wrapped
  source's. Picklable (Grain sends it to its worker processes).
  """

  def __init__(self, source, instructions, where: str, hint: str):
    self.source = source
    # (filename, first record, records read from it) in the order the source reads them.
    self._shards = tuple((os.fspath(fi.filename), int(fi.skip), int(fi.take))
                         for fi in instructions)
    self._where = where
    self._hint = hint

  def with_source(self, source) -> CheckedSource:
    """The same checks around another view of the same records (e.g. other decoders)."""
    out = CheckedSource.__new__(CheckedSource)
    out.__dict__.update(self.__dict__, source=source)
    return out

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    try:
      return self.source[index]
    except RuntimeError as e:  # ArrayRecord / Riegeli: corrupt chunk, bad block header
      raise self._read_error(int(index), e) from e

  def __getattr__(self, name):
    if name.startswith('_') or name == 'source':  # unpickling, copy: not delegated
      raise AttributeError(name)
    return getattr(self.source, name)

  def _read_error(self, index: int, error: BaseException) -> DamagedDataError:
    start = 0
    path, record = (self._shards[-1][0], index) if self._shards else ('?', index)
    for filename, skip, take in self._shards:
      if index < start + take:
        path, record = filename, skip + index - start
        break
      start += take
    return DamagedDataError(
        f'{self._where}: shard {shown_path(path)} is damaged: reading its record {record} failed '
        f'({_first_line(error)}); {self._hint}')


def checked_source(open_split, info, split: str, where: str, hint: str):
  """`open_split()` (a TFDS data source) after `check_shards`, wrapped in `CheckedSource`.

  Data sets stored in another format than ArrayRecord are opened unchecked.
  """
  if str(getattr(info.file_format, 'value', info.file_format)) != 'array_record':
    return open_split()
  instructions = info.splits[split].file_instructions
  check_shards(instructions, where, hint)
  return CheckedSource(open_split(), instructions, where, hint)
