"""Shared fixtures: every test must leave no child process behind."""
import asyncio, multiprocessing, os, sys, time
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # spawned workers inherit sys.path, so test plugins import there too


def child_pids(parent: int = None) -> set:
    "Pids of live (non-zombie) processes whose parent is `parent` (default: this process), from /proc."
    parent = os.getpid() if parent is None else parent
    pids = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit(): continue
        try: stat = Path(f'/proc/{entry}/stat').read_text()
        except OSError: continue
        fields = stat[stat.rindex(')') + 2:].split()
        if int(fields[1]) == parent and fields[0] != 'Z' and not _is_multiprocessing_helper(int(entry)): pids.add(int(entry))
    return pids


def _is_multiprocessing_helper(pid: int) -> bool:
    "multiprocessing's own long-lived helpers (resource tracker, forkserver) live as long as the test process: not leaks."
    try: cmdline = Path(f'/proc/{pid}/cmdline').read_bytes()
    except OSError: return False
    return b'resource_tracker' in cmdline or b'forkserver' in cmdline


def descendants(pid: int) -> set:
    "Pids of every live process below `pid` (children, grandchildren, ...), from /proc."
    parents = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit(): continue
        try: stat = Path(f'/proc/{entry}/stat').read_text()
        except OSError: continue
        fields = stat[stat.rindex(')') + 2:].split()
        if fields[0] != 'Z': parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found: found.add(child); todo.append(child)
    return found


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    "Poll `condition` (a check of the system's state, which nothing notifies) until it holds or `timeout` passes; its last value."
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline: return condition()
        time.sleep(interval)
    return True


def pid_alive(pid: int) -> bool:
    try: state = Path(f'/proc/{pid}/stat').read_text()
    except OSError: return False
    return state[state.rindex(')') + 2] != 'Z'


@pytest.fixture(autouse=True)
def no_leftover_processes():
    before = child_pids()
    yield
    assert multiprocessing.active_children() == [], "a test left multiprocessing children running"
    leaked = child_pids() - before
    assert not leaked, f"a test left child processes running: {sorted(leaked)}"


def run(coro, timeout: float = 120):
    "Run a coroutine to completion on a fresh event loop, with an overall time limit."
    return asyncio.run(asyncio.wait_for(coro, timeout))


def pytest_configure(config):
    config.addinivalue_line('markers', "package: uses this package's additions beyond upstream cjm-fasthtml-workers 0.0.5's API "
                                       "(deselect with -m 'not package and not later_upstream' to run the rest against upstream itself)")
    config.addinivalue_line('markers', "later_upstream: uses upstream API added after 0.0.5 (cjm_fasthtml_workers.extensions.adapters)")
