"""When a host dies: the survivors stop within a stated time, with one line naming it.

On a pod the common failure is one process dying (a kernel panic, an OOM kill, a
preempted VM without notice). The others then block in the next collective, which never
completes; left alone, jax's coordination service notices the missing heartbeats after
`heartbeat_timeout_seconds` (100 s by default) and aborts every survivor through a C++
check failure, a page of stack trace that names no process.

`PeerWatch` makes that path deliberate. Each process runs a daemon thread that, every
`peer_timeout_s / 5` seconds, bumps a counter under its own key in the coordination
service's key-value store and reads everyone's counters. A peer whose counter has not
moved for `config.distributed.peer_timeout_s` seconds (default 60) is lost; so is
process 0 when the store itself stops answering (it runs the service). The watcher then
prints one line and ends the process with exit status 3 (`LOST_PEER_EXIT`):

  error: lost process 1 of 2 (no heartbeat for 60 s; config.distributed.peer_timeout_s);
  stopping. The last complete checkpoint is step 20 in /w/checkpoints; relaunch every
  process to resume from it.

Why exit from the thread: the main thread is usually inside a collective that will never
return, and no Python exception can reach it there. Nothing is lost by exiting: orbax
writes a checkpoint into a temporary directory and renames it only once every process has
written its part, so a save the dead process never finished is not taken for a checkpoint
and the last complete one stays intact (the test kills a process and relaunches from it).
jax's own heartbeat timeout is set to twice the peer timeout (at least 100 s), so this
watcher speaks first. Losing process 0 (the coordinator) makes jax's C++ client abort at
once, before any watcher can speak; the supervisor below prints the same line then.

A process that finishes its run marks itself done, so a peer still writing its last
metrics does not take it for lost. Single-process runs start no watcher. The sampler
(`python -m train.sample`) runs the same way: supervised, marked done on a clean end, and
its line ends with what to do instead of a checkpoint (`set_advice`).
"""

import os
import sys
import threading
import time

LOST_PEER_EXIT = 3
_PREFIX = 'archzoo/alive/'
_DONE = 'archzoo/done/'


class PeerWatch:
  """The heartbeat thread of one process (`start` after `jax.distributed.initialize`)."""

  def __init__(self, client, process_id: int, num_processes: int, timeout_s: float,
               clock=time.monotonic, on_lost=None):
    if timeout_s <= 0:
      raise ValueError(f'peer timeout must be positive, got {timeout_s}')
    self.client, self.pid, self.n = client, process_id, num_processes
    self.timeout_s = float(timeout_s)
    self.interval_s = self.timeout_s / 5
    self.clock = clock
    self.on_lost = on_lost or _exit_lost
    self.workdir = None  # the run whose checkpoints the message names (`set_workdir`)
    self.advice = None  # or the message's last sentence, for work without checkpoints
    self._beats = 0
    self._seen = {}  # peer -> (last counter, clock when it last moved)
    self._stop = threading.Event()
    self._thread = None

  # The thread: beat, look, sleep.

  def start(self):
    self.beat()
    self._thread = threading.Thread(target=self._run, name='archzoo-peer-watch', daemon=True)
    self._thread.start()
    return self

  def stop(self):
    """Marks this process done (peers stop expecting beats) and ends the thread."""
    self._stop.set()
    try:
      self.client.key_value_set(f'{_DONE}{self.pid}', '1', allow_overwrite=True)
    except Exception:  # the service may already be gone at exit; nothing to tell then
      pass

  def _run(self):
    while not self._stop.wait(self.interval_s):
      lost = self.check()
      if lost is not None:
        self.on_lost(self.message(*lost))
        return

  def beat(self):
    self._beats += 1
    self.client.key_value_set(f'{_PREFIX}{self.pid}', str(self._beats), allow_overwrite=True)

  def check(self):
    """One round: beat, then read the peers. (lost process, why) or None."""
    try:
      self.beat()
      counters = dict(self.client.key_value_dir_get(_PREFIX))
      done = {k[len(_DONE):] for k, _ in self.client.key_value_dir_get(_DONE)}
    except Exception as e:  # the store is process 0's service: it stopped answering
      if self.pid == 0:
        raise
      return 0, f'the coordination service stopped answering: {str(e).splitlines()[0][:120]}'
    now = self.clock()
    for peer in range(self.n):
      if peer == self.pid or str(peer) in done:
        continue
      count = counters.get(f'{_PREFIX}{peer}')
      last = self._seen.get(peer)
      if last is None or count != last[0]:
        self._seen[peer] = (count, now)
      elif now - last[1] >= self.timeout_s:
        return peer, (f'no heartbeat for {now - last[1]:.0f} s; '
                      f'config.distributed.peer_timeout_s={self.timeout_s:g}')
    return None

  def message(self, peer, why):
    return lost_message(peer, self.n, why, self.workdir, self.advice)


def lost_message(peer, num_processes, why, workdir, advice=None):
  """The one line a survivor prints: the lost process, why, and the checkpoint to resume
  (or `advice`, where the work keeps no checkpoints)."""
  if advice:
    return f'error: lost process {peer} of {num_processes} ({why}); stopping. {advice}'
  where = latest_complete_checkpoint(workdir) if workdir else None
  keep = (f'The last complete checkpoint is step {where[1]} in {where[0]}; relaunch every '
          f'process to resume from it.' if where and where[1] is not None else
          'No checkpoint was completed; relaunch every process to start again.')
  return f'error: lost process {peer} of {num_processes} ({why}); stopping. {keep}'


def latest_complete_checkpoint(workdir):
  """(checkpoint directory, latest finished step or None): orbax's finished steps are the
  directories named by a bare number (one being written carries a temporary suffix)."""
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  try:
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
  except OSError:
    steps = []
  return directory, max(steps) if steps else None


def _exit_lost(message):
  print(message, file=sys.stderr, flush=True)
  os._exit(LOST_PEER_EXIT)


# The process-wide watcher: started by `start` (from train.mesh, right after
# `jax.distributed.initialize`), pointed at the current run by `set_workdir`.
_WATCH = None
_ADVICE = None  # `set_advice`'s, for a watcher started later


def start(client, process_id, num_processes, timeout_s):
  global _WATCH
  if _WATCH is None and num_processes > 1:
    _WATCH = PeerWatch(client, process_id, num_processes, timeout_s)
    _WATCH.advice = _ADVICE
    _WATCH.start()
  return _WATCH


def set_advice(advice):
  """The lost-peer message's last sentence in place of the checkpoint to resume from (the
  sampler keeps none); None restores that. Returns the previous one."""
  global _ADVICE
  previous, _ADVICE = _ADVICE, advice
  if _WATCH is not None:
    _WATCH.advice = advice
  return previous


def set_workdir(workdir):
  """Names the run whose last checkpoint a lost-peer message reports; returns the
  previous one (a nested run, e.g. a frozen teacher trained first, restores it)."""
  if _WATCH is None:
    return None
  previous, _WATCH.workdir = _WATCH.workdir, workdir
  return previous


def finish():
  if _WATCH is not None:
    _WATCH.stop()


# ------------------------------------------------------------------ the supervisor

# Losing process 0 is the one case the watcher cannot speak for: jax's C++ client reacts
# to its coordination service vanishing by aborting at once (a check failure; a Python
# callback cannot take its place, the status it passes has no Python type). So a
# multi-process `python -m train` (and `python -m train.sample`) runs the work in a child
# process and waits for it:
# when the child of a process other than 0 dies of that abort and the coordinator no
# longer accepts connections, the supervisor prints the same one line, naming process 0,
# after the trace, and exits with LOST_PEER_EXIT. Signals sent to the supervisor
# (SIGTERM from a scheduler, SIGINT) go on to the child; the child dies with it.
_SUPERVISED = 'ARCHZOO_SUPERVISED'


def needs_supervisor(config) -> bool:
  dist = config.get('distributed') or {}
  multi = bool(dist.get('coordinator_address')) or bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))
  return multi and not os.environ.get(_SUPERVISED)


def supervise(config, workdir, argv, module='train', advice=None) -> int:
  """Runs `python -m <module> argv` as a child and returns its exit status (see above);
  `advice` as `set_advice`'s, for the line that names a lost process 0."""
  import signal
  import subprocess
  child = subprocess.Popen([sys.executable, '-m', module, *argv],
                           env={**os.environ, _SUPERVISED: '1'}, preexec_fn=_die_with_parent)
  forward = lambda signum, frame: child.send_signal(signum)
  old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    code = child.wait()
  finally:
    for s, handler in old.items():
      signal.signal(s, handler)
  dist = config.get('distributed') or {}
  address = dist.get('coordinator_address') or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
  pid = int(dist.get('process_id', 0) if dist.get('coordinator_address')
            else os.environ.get('JAX_PROCESS_ID', -1))
  if code == -signal.SIGABRT and pid != 0 and address and not _accepts(address):
    n = int(dist.get('num_processes') or os.environ.get('JAX_NUM_PROCESSES', 0))
    print(lost_message(0, n, f'its coordination service at {address} stopped answering',
                       workdir, advice), file=sys.stderr, flush=True)
    return LOST_PEER_EXIT
  return code if code >= 0 else 128 - code


def _accepts(address: str) -> bool:
  import socket
  host, _, port = address.rpartition(':')
  try:
    with socket.create_connection((host.strip('[]'), int(port)), timeout=5):
      return True
  except (OSError, ValueError):
    return False


def _die_with_parent():
  """In the child, before exec: SIGKILL when the supervisor dies (Linux; elsewhere the
  child outlives a killed supervisor, as an unsupervised run would)."""
  try:
    import ctypes
    import signal
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass
