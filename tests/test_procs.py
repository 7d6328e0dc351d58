"""Worker processes die with their parent (issue 17): SIGKILL a parent mid-run, no worker survives."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("layer", ["run_jobs", "eval", "vector", "pipeline"])
def test_workers_die_with_their_parent(tmp_path, layer):
    script = Path(__file__).parent / "orphan_parent.py"
    env = dict(os.environ, W2A_ORPHAN_OUT=str(tmp_path))
    parent = subprocess.Popen([sys.executable, str(script), layer, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pids: list[int] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(pids) < 2 and parent.poll() is None:
            time.sleep(0.2)
            pids = sorted(int(p.stem) for p in tmp_path.glob("*.pid"))
        assert len(pids) == 2, f"workers did not start: {parent.communicate(timeout=30)[0].decode()[-2000:]}"
        assert all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        survivors = [p for p in pids if _alive(p)]
        assert not survivors, f"{layer}: workers {survivors} outlived their SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in pids:  # never leave this test's own workers behind, even when it fails
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _sleep(seconds):
    import time as _t

    _t.sleep(seconds)


def test_worker_started_from_a_short_lived_thread_is_not_killed_early():
    """The death signal follows the starting *thread*: a worker started from a thread that ends
    must keep running (it gets the parent check only)."""
    import threading

    from world2act.utils.procs import WorkerContext

    ctx = WorkerContext()
    started = []

    def starter():
        p = ctx.Process(target=_sleep, args=(30,), daemon=True)
        p.start()
        started.append(p)
        time.sleep(4)  # the child is past its start-up (where it would arm the signal) before this thread ends

    t = threading.Thread(target=starter)
    t.start()
    t.join()
    try:
        time.sleep(1)
        assert started[0].is_alive(), f"worker died with its starting thread (exit code {started[0].exitcode})"
    finally:
        ctx.terminate()
    assert not started[0].is_alive()
