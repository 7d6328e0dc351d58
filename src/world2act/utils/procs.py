"""Worker processes that die with their parent.

Every multiprocessing layer in world2act (the evaluation pool, :func:`world2act.envs.parallel.run_jobs`
and :class:`world2act.envs.parallel.VectorEnv`) starts its workers from a :class:`WorkerContext`:
a ``spawn`` context whose processes

* ask the Linux kernel to SIGKILL them when their parent dies (``prctl(PR_SET_PDEATHSIG,
  SIGKILL)``, set first thing in the worker, before the initializer or target runs), then check
  that the parent recorded at start is still their parent (it may have died before the
  ``prctl``), and exit at once if not. A ``kill -9`` of ``collect``, ``eval`` or ``pipeline``
  therefore takes its workers with it instead of leaving them blocked on pipes, holding memory;
* are recorded by the context, so the parent can terminate them (Ctrl-C) without reaching into
  ``ProcessPoolExecutor`` internals.

Elsewhere than Linux the death signal is a no-op (the parent check still runs).
:func:`child_dies_with_parent` does the same for ``subprocess.Popen`` children (the pipeline's
stages).

Threads: the kernel ties the death signal to the *thread* that started the worker (measured:
a worker started from a thread that ends while the worker runs is SIGKILLed). The pools here
start their workers from the main thread (Python's ``ProcessPoolExecutor`` starts ``spawn``
workers in ``submit``, in the caller's thread; its management thread starts none unless
``max_tasks_per_child`` is set), so the signal is armed only for workers started from the main
thread; a worker started from another thread gets only the parent check.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
from multiprocessing.context import SpawnProcess

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int | None, arm: bool = True) -> None:
    """Make this process die when its parent dies (Linux), and exit now if it already has.

    Args:
        parent_pid: the pid of the process that started this one, recorded in the parent before
            the start; None skips the check.
        arm: set the parent-death signal (False: only the check).
    """
    if arm and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: best effort
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the death signal was armed: nobody is waiting for us


def child_dies_with_parent():
    """A ``preexec_fn`` for :class:`subprocess.Popen` that makes the child die with this process.

    The child sets the parent-death signal (SIGKILL) between fork and exec (it survives the exec)
    and exits at once if this process is already gone. Returns None (no ``preexec_fn``) off Linux
    or when called from a thread other than the main thread (the signal follows the starting
    thread). Used by ``world2act pipeline`` for its stage subprocesses, whose own workers die with
    them in turn.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: nothing is loaded after the fork
    except (OSError, AttributeError):  # pragma: no cover
        return None
    parent = os.getpid()
    sig = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class GuardedProcess(SpawnProcess):
    """A ``spawn`` process that calls :func:`die_with_parent` before running its target (the
    death signal only when it is started from the main thread, see the module notes)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._w2a_parent_pid = os.getpid()
        self._w2a_arm = True

    def start(self) -> None:
        """Start the process, recording whether the starting thread is the main thread."""
        self._w2a_arm = threading.current_thread() is threading.main_thread()
        super().start()

    def run(self) -> None:
        """Arm the parent-death signal, then run the target as :class:`multiprocessing.Process` does."""
        die_with_parent(self._w2a_parent_pid, arm=self._w2a_arm)
        super().run()


class WorkerContext:
    """A ``spawn`` multiprocessing context whose processes die with their parent.

    Pass it wherever a context is accepted (``ProcessPoolExecutor(mp_context=...)``) or call
    :meth:`Process` directly. Everything except ``Process`` is the standard spawn context.
    Use one context per pool: :meth:`terminate` stops every process this context started.
    """

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._procs: list[GuardedProcess] = []

    def Process(self, *args, **kwargs) -> GuardedProcess:  # noqa: N802 - the multiprocessing name
        """A new (not yet started) :class:`GuardedProcess`, recorded for :meth:`terminate`."""
        p = GuardedProcess(*args, **kwargs)
        self._procs.append(p)
        return p

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)

    @property
    def processes(self) -> list[GuardedProcess]:
        """The processes this context has created (started or not)."""
        return list(self._procs)

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM every live process of this context, then wait up to ``timeout`` s for each
        (SIGKILL if it is still alive after that)."""
        started = [p for p in self._procs if p.pid is not None]
        for p in started:
            try:
                if p.is_alive():
                    p.terminate()
            except (OSError, ValueError, AssertionError):  # already closed / not our child
                pass
        for p in started:
            try:
                p.join(timeout=timeout)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=timeout)
            except (OSError, ValueError, AssertionError):
                pass
