"""The workdir lock on an object store: a lease object, no ``flock``.

``files.WorkdirLock`` uses :class:`Lease` for a ``gs://`` workdir (a local
one keeps its ``fcntl.flock``). An object store has no lock primitive, but
it can create an object only if none exists, which is enough for a lease
that expires unless its holder renews it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Mapping

from absl import logging


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir lock."""


# An object-store lease lasts this long unless renewed; the holder renews it
# every third of it, so two missed renewals still leave it held.
LEASE_SECONDS = 120.0


class Lease:
  """A lease object ``WORKDIR/.lock`` on an object store.

  The holder creates the object only if none exists (``ifGenerationMatch=0``
  on GCS, fsspec's ``mode='create'``), reads it back to see its own token
  (a store that ignores the precondition still cannot hand one lease to two
  runs that come one after the other), and renews its expiry from a
  background thread. A lease whose expiry has passed is taken over; so is,
  at once, a lease of a dead process on this same host (a killed run
  resumed where it ran), so only a run killed on another host makes the
  next one wait, at most ``lease_seconds``. Expiry is wall-clock time:
  hosts sharing a workdir need clocks within a fraction of it (NTP is
  plenty). Releasing deletes the object if it is still this run's.
  """

  def __init__(self, path: str, lease_seconds: float | None = None):
    self.path = path
    self.seconds = float(lease_seconds or LEASE_SECONDS)
    self.token = None
    self._started = None
    self._stop = threading.Event()
    self._thread = None

  def _object(self):
    from etils import epath  # pylint: disable=g-import-not-at-top
    return epath.Path(self.path)

  def _fs(self):
    import fsspec  # pylint: disable=g-import-not-at-top
    return fsspec.core.url_to_fs(self.path)

  def _read(self) -> dict[str, Any] | None:
    try:
      holder = json.loads(self._object().read_bytes())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}  # Damaged or unreadable: held by nobody we can name.
    return holder if isinstance(holder, dict) else {}

  def _body(self) -> bytes:
    return json.dumps({
        'token': self.token, 'host': socket.gethostname(),
        'pid': os.getpid(), 'started': self._started,
        'command': ' '.join(sys.argv),
        'expires': time.time() + self.seconds}).encode()

  def _stale(self, holder: dict[str, Any]) -> str | None:
    """Why ``holder``'s lease may be taken over, or None while it holds."""
    expires = holder.get('expires')
    if not isinstance(expires, (int, float)):
      return 'it is damaged'
    if expires < time.time():
      return f'it expired {time.time() - expires:.0f} s ago'
    if holder.get('host') == socket.gethostname() and isinstance(
        holder.get('pid'), int) and not _pid_alive(holder['pid']):
      return f'its process {holder["pid"]} on this host is gone'
    return None

  def acquire(self) -> None:
    self.token = uuid.uuid4().hex
    self._started = datetime.datetime.now().isoformat(timespec='seconds')
    holder = self._read()
    if holder is not None:
      why = self._stale(holder)
      if why is None:
        self._busy(holder)
      logging.warning('Taking over the lease %s of %s: %s.', self.path,
                      _describe(holder), why)
      try:
        self._object().unlink()
      except FileNotFoundError:
        pass
    fs, key = self._fs()
    try:
      fs.pipe_file(key, self._body(), mode='create')
    except FileExistsError:
      self._busy(self._read() or {})
    mine = self._read()
    if not mine or mine.get('token') != self.token:
      self._busy(mine or {})
    self._stop.clear()
    self._thread = threading.Thread(target=self._renew, daemon=True,
                                    name='workdir-lease')
    self._thread.start()

  def _busy(self, holder: dict[str, Any]) -> None:
    expires = holder.get('expires')
    left = (f'; it expires in {max(0, expires - time.time()):.0f} s unless '
            'renewed' if isinstance(expires, (int, float)) else '')
    self.token = None
    raise WorkdirBusyError(
        f'Another run is using this workdir ({_describe(holder)}; lease '
        f'{self.path}{left}). Wait for it to finish or stop it, or use '
        'another --workdir. A killed run holds the lease until it expires, '
        'or not at all for a rerun on the host where it ran.')

  def _renew(self) -> None:
    while not self._stop.wait(self.seconds / 3):
      try:
        holder = self._read()
        if not holder or holder.get('token') != self.token:
          logging.error('The workdir lease %s is no longer this run\'s '
                        '(held by %s): another run may be writing here.',
                        self.path, _describe(holder or {}))
          return
        self._object().write_bytes(self._body())
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Could not renew the workdir lease %s (%s); '
                        'retrying.', self.path, e)

  def release(self) -> None:
    if self.token is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    holder = self._read()
    if holder and holder.get('token') == self.token:
      try:
        self._object().unlink()
      except FileNotFoundError:
        pass
    self.token = None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:
    return True  # Exists, owned by another user.
  return True


def _describe(holder: Mapping[str, Any]) -> str:
  if not holder:
    return 'unknown process'
  return (f'pid {holder.get("pid")} on {holder.get("host")}, started '
          f'{holder.get("started")}, command {holder.get("command")}')
