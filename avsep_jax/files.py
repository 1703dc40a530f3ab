"""Writing results so that no reader sees them half-done, on local disks and on `gs://`.

Workdirs, data dirs and outputs may be local folders or Cloud Storage paths
(`gs://bucket/...`, what every host of a TPU pod slice can reach); paths go
through `etils.epath`, which speaks both.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Iterator

from etils import epath


def is_remote(path) -> bool:
  """Whether `path` is a URL-style path (`gs://...`) rather than a local one."""
  return "://" in os.fspath(path)


def write_text_atomic(path, text: str) -> None:
  """Writes `text` to `path`: locally through a temporary file and a rename; remotely as one
  object, which appears only when complete."""
  path = epath.Path(path)
  if is_remote(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return
  local = pathlib.Path(path)
  local.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=local.parent, delete=False, suffix=".tmp") as f:
    f.write(text)
  os.chmod(f.name, 0o644)  # as a plainly written file (temporary files are private)
  os.replace(f.name, local)


@contextlib.contextmanager
def staged_folder(final) -> Iterator[pathlib.Path]:
  """Yields an empty local folder; when the block succeeds it becomes `final`.

  On a local disk the folder is made beside `final` and renamed into its
  place (replacing an earlier one). For a remote `final` it is made in the
  temporary directory and its files are copied up afterwards (each object
  appears whole; the folder fills file by file). If the block raises, the
  staging folder is removed and `final` is left as it was.
  """
  remote = is_remote(final)
  if remote:
    staging = pathlib.Path(tempfile.mkdtemp(prefix="avsep_jax."))
  else:
    final = pathlib.Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
  try:
    yield staging
    if remote:
      target = epath.Path(final)
      for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        out = target / path.relative_to(staging).as_posix()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(path.read_bytes())
      shutil.rmtree(staging)
      return
    staging.chmod(0o755)
    if final.exists():
      old = final.with_name(f".{final.name}.old")
      shutil.rmtree(old, ignore_errors=True)
      final.rename(old)
      staging.rename(final)
      shutil.rmtree(old, ignore_errors=True)
    else:
      staging.rename(final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
