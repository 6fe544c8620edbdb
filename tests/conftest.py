"""Shared fixtures: every test must leave no child process behind (nor, on Ray, any worker actor); the backends the
engine tests run on; the session's private Ray cluster."""
import asyncio, multiprocessing, os, re, shutil, signal, sys, tempfile, time
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
    return pids - RAY['pids']


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


def kill_left(pids) -> None:
    "SIGKILL whichever of `pids` still run (after a failed check that they had ended), so a failing test leaves no process either."
    for pid in pids:
        if pid_alive(pid):
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass


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
    if RAY['cluster'] is not None:  # worker actors are the raylets' children, not ours: look for them among the cluster's processes
        assert wait_until(lambda: not ray_worker_processes(), 15), f"a test left worker actors' processes running: {ray_worker_processes()}"
        live = live_worker_actors()
        assert not live, f"a test left worker actors that Ray does not record as dead: {live}"


# ---- Ray: one private cluster for the whole session, started by the first test that needs it ----

RAY = {'cluster': None, 'pids': set(), 'tmp': None}  # the session's cluster, its processes (not leaks), its temporary folder
WORKER_TITLE = b'ray::WorkerActor'  # Ray names an actor's process after its class


def ray_worker_processes() -> list:
    "Pids of the processes below this one that run a worker actor (`ray::WorkerActor...`), from /proc."
    found = []
    for pid in descendants(os.getpid()):
        try: cmdline = Path(f'/proc/{pid}/cmdline').read_bytes()
        except OSError: continue
        if cmdline.startswith(WORKER_TITLE) and pid_alive(pid): found.append(pid)
    return found


def live_worker_actors() -> list:
    "Ids of the worker actors of this session that the GCS records in a state other than DEAD (asked with a deadline, three times)."
    import ray
    gcs, job = ray._private.worker.global_worker.gcs_client, ray.JobID(bytes.fromhex(ray.get_runtime_context().get_job_id()))
    async def ask(state): return await gcs.async_get_all_actor_info(job_id=job, actor_state_name=state, timeout=10)
    for attempt in range(3):
        try:
            found = {a: d for state in ('DEPENDENCIES_UNREADY', 'PENDING_CREATION', 'ALIVE', 'RESTARTING')
                     for a, d in asyncio.run(ask(state)).items()}
            return [a.hex() for a, d in found.items() if d.class_name.endswith('WorkerActor')]
        except ray.exceptions.RpcError:
            if attempt == 2: raise


def _ray_session_processes(before: set) -> set:
    "The processes the cluster added below this one, so that the leak check leaves them alone."
    return descendants(os.getpid()) - before


@pytest.fixture(scope='session')
def ray_cluster():
    """A private Ray cluster on this machine for the session: a head node with 4 logical CPUs and a 128 MB object store, fast
    health checks (a lost node is declared dead within about a second), this process connected to it. Its own temporary folder,
    so that no cluster of another user is joined nor any of their files touched; shut down (by pid, never `ray stop`) at the end."""
    pytest.importorskip('ray')
    import ray
    from ray.cluster_utils import Cluster
    saved = {k: os.environ.get(k) for k in ('RAY_USAGE_STATS_ENABLED', 'RAY_TMPDIR', 'PYTHONPATH')}
    tmp = tempfile.mkdtemp(prefix='cjm-ray-', dir='/tmp')  # short: Ray's socket paths live under it
    os.environ.update(RAY_USAGE_STATS_ENABLED='0', RAY_TMPDIR=tmp,  # the nodes' workers import the tests' plugins too
                      PYTHONPATH=os.pathsep.join([str(Path(__file__).parent)] + ([saved['PYTHONPATH']] if saved['PYTHONPATH'] else [])))
    before = descendants(os.getpid())
    cluster = Cluster()  # no node yet: if the head fails to start, `shutdown` below still stops what did start
    try:
        cluster.add_node(num_cpus=4, object_store_memory=128 * 2**20, include_dashboard=False,
                         _system_config={'health_check_initial_delay_ms': 0, 'health_check_period_ms': 250,
                                         'health_check_timeout_ms': 500, 'health_check_failure_threshold': 4})
        ray.init(address=cluster.address, log_to_driver=False)
        RAY.update(cluster=cluster, tmp=tmp)
        RAY['pids'] |= _ray_session_processes(before)
        yield cluster
    finally:
        RAY['cluster'] = None
        if ray.is_initialized(): ray.shutdown()
        cluster.shutdown()
        RAY['pids'] = set()
        for k, v in saved.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def add_ray_node(cluster, **options):
    "Add a node to the session's cluster (on the main thread, as Ray needs); its processes are the test's to remove."
    return cluster.add_node(object_store_memory=80 * 2**20, **options)


# ---- The backends the engine tests run on ----

class Backend:
    "One way to host workers, for the engine tests: `make()` gives a manager's `worker_backend` (None: the default, processes)."
    def __init__(self, name: str, make): self.name, self.make = name, make
    def __repr__(self): return self.name

    def death_cause(self, how: str) -> str:
        "A regular expression for how this backend words the end of a worker whose plugin ended its process (`crash`'s `how`)."
        if self.name == 'process':
            return re.escape({'kill': 'killed by signal SIGKILL (exit code -9)', 'exit': 'exited with code 3',
                              'segfault': 'killed by signal SIGSEGV (exit code -11)'}[how])
        return (r"died on node [0-9a-f]{12} at \S+: "
                + re.escape("its process ended unexpectedly (Ray reports an exit, a SIGKILL and a segfault alike)"))


@pytest.fixture(params=['process', 'ray'])
def backend(request):
    "Each engine test that takes this runs once with worker processes and once with Ray actors on the session's cluster."
    if request.param == 'process': return Backend('process', lambda: None)
    request.getfixturevalue('ray_cluster')
    from cjm_fasthtml_workers.backends.ray import RayBackend
    return Backend('ray', RayBackend)


def run(coro, timeout: float = 120):
    "Run a coroutine to completion on a fresh event loop, with an overall time limit."
    return asyncio.run(asyncio.wait_for(coro, timeout))


def uses_ray(item) -> bool:
    "Whether a collected test runs on the session's Ray cluster: a `[ray]` case of the engine tests, or a tests/test_ray_* test."
    callspec = getattr(item, 'callspec', None)
    return item.module.__name__.startswith('test_ray_') or (callspec is not None and callspec.params.get('backend') == 'ray')


def pytest_collection_modifyitems(session, config, items):
    """Every test that uses Ray runs after all the others (each group in its usual order). The cluster then starts once, late,
    and no test forks this process (start_method='fork', a subprocess with preexec) while it holds a Ray connection: Ray's
    gRPC channels are not safe across fork, and a test session that forked with the cluster up saw its GCS requests hang."""
    items[:] = [i for i in items if not uses_ray(i)] + [i for i in items if uses_ray(i)]


def pytest_configure(config):
    config.addinivalue_line('markers', "package: uses this package's additions beyond upstream cjm-fasthtml-workers 0.0.5's API "
                                       "(deselect with -m 'not package and not later_upstream' to run the rest against upstream itself)")
    config.addinivalue_line('markers', "later_upstream: uses upstream API added after 0.0.5 (cjm_fasthtml_workers.extensions.adapters)")
