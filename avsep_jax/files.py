"""Writing results so that no reader sees them half-done, on local disks and on `gs://`.

Workdirs, data dirs and outputs may be local folders or Cloud Storage paths
(`gs://bucket/...`, what every host of a TPU pod slice can reach); paths go
through `etils.epath`, which speaks both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import re
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


# errno values and the phrases storage libraries (tensorstore, TensorFlow's file
# system, gcsfs) put in their messages for a destination that cannot take the
# write: a full disk or quota, or no permission.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_STORAGE_PHRASES = ("No space left on device", "Disk quota exceeded", "Permission denied",
                    "Read-only file system", "Operation not permitted")


class StorageError(OSError):
  """A destination cannot take a write (disk full, quota, no permission); the message
  says where and what to do."""


def check_free_space(folder, need_bytes: int, what: str) -> None:
  """Raises StorageError when the local disk holding `folder` has less than `need_bytes`
  free for `what` (remote paths are not checked: buckets have no fixed size)."""
  if is_remote(folder):
    return
  free = shutil.disk_usage(os.fspath(folder)).free
  if free < need_bytes:
    raise StorageError(f"No space left on device: {what} needs about "
                       f"{need_bytes / 2**20:.1f} MB in {os.fspath(folder)!r}, "
                       f"which has {free / 2**20:.1f} MB free")


def check_writable(folder) -> None:
  """Creates `folder` if needed and writes and removes a probe file in it, so a missing
  permission shows before any work is done. Raises StorageError naming the folder."""
  folder = epath.Path(folder)
  probe = folder / f".write_probe.{os.getpid()}"
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise StorageError(f"cannot write in {os.fspath(folder)!r}: "
                       f"{storage_error(e) or e}") from e


def storage_error(exc: BaseException) -> str | None:
  """What stopped a write, when `exc` (or an exception it came from) is a full disk
  or missing permission: e.g. "No space left on device: '/path/file'"; else None.
  """
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
      where = exc.filename or ""
      return os.strerror(exc.errno) + (f": {where!r}" if where else "")
    text = str(exc)
    for phrase in _STORAGE_PHRASES:
      if phrase in text:
        quoted = re.findall(r'"(/[^"]+|[a-z]+://[^"]+)"', text)  # tensorstore quotes paths
        return phrase + (f": {quoted[-1]!r}" if quoted else "")
    exc = exc.__cause__ or exc.__context__
  return None
