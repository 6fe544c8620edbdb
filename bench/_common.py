"""Shared helpers for the bench/ scripts: argument parsing, the peers (the pools the manager is measured
against), percentiles, tables, the JSON line, RSS from /proc.

Every script prints a small table for people and exactly one line `JSON {...}` for machines
(`run_all.py` collects these). Timings are never asserted; a script exits non-zero only on errors.
"""
import argparse, json, os, platform, statistics, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
try: import loky  # a benchmark-only dependency (the `bench` extra); without it the scripts skip it and say so
except ImportError: loky = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path: sys.path.insert(0, ROOT)  # run from a clone without installing

from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager
from cjm_fasthtml_workers.demo.plugins import demo_plugins, noop, spin


BACKENDS = ('process', 'ray')
CURRENT = {'backend': 'process'}  # the script's --backend: make_manager's default


def parse_args(description: str, **extra):
    "Standard options: --quick (small sizes, one repeat: the CI smoke test), --repeat and --backend (what hosts the manager's workers)."
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--quick', action='store_true', help='small sizes and one repeat (CI smoke test; numbers are not meaningful)')
    p.add_argument('--backend', choices=BACKENDS, default='process',
                   help="what hosts the manager's workers: local processes (default) or Ray actors on a private Ray instance of this machine")
    p.add_argument('--repeat', type=int, default=None,
                   help='repeat each measurement this many times (default 3, 1 with --quick); each table title says whether it reports the median or the best')
    for name, kw in extra.items(): p.add_argument(name, **kw)
    a = p.parse_args()
    if a.repeat is None: a.repeat = 1 if a.quick else 3
    CURRENT['backend'] = a.backend
    return a


def make_manager(workers: int = 1, streaming: bool = False, entry_point=demo_plugins, event_broadcaster=None, job_store=None,
                 backend: str = None, **config) -> JobManager:
    "A JobManager on the demo plugins (or another entry point): spawned worker processes, or Ray actors (`backend='ray'`)."
    cfg = WorkerConfig(max_workers=workers, start_method='spawn', **config)
    return JobManager('bench', 'bench', entry_point=entry_point, supports_streaming=streaming, worker_config=cfg,
                      event_broadcaster=event_broadcaster, job_store=job_store, worker_backend=worker_backend(backend or CURRENT['backend']))


def worker_backend(name: str):
    "The manager's `worker_backend` for a --backend choice: None (its default, processes), or a RayBackend on `start_ray()`'s instance."
    if name == 'process': return None
    from cjm_fasthtml_workers.backends.ray import RayBackend
    start_ray()
    return RayBackend()


_RAY_TMP: list = []  # the temporary folder of the Ray instance start_ray started


def start_ray() -> None:
    """A private Ray instance on this machine for the whole script (4 logical CPUs, a 200 MB object store, no dashboard, no
    usage statistics), whose workers can import the bench plugins; the managers' RayBackends share it. `stop_ray()` ends it."""
    import ray, tempfile
    if ray.is_initialized(): return
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    _RAY_TMP.append(tempfile.mkdtemp(prefix='cjm-ray-bench-', dir='/tmp'))  # its files, removed by stop_ray (short: socket paths)
    ray.init(address='local', num_cpus=4, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False,
             _temp_dir=_RAY_TMP[-1], runtime_env={'env_vars': {'PYTHONPATH': os.pathsep.join([HERE, ROOT])}})


def stop_ray() -> None:
    "End the Ray instance `start_ray` started, if any (by shutting down this driver: never `ray stop`)."
    ray = sys.modules.get('ray')
    if ray is not None and ray.is_initialized(): ray.shutdown()
    import shutil
    while _RAY_TMP: shutil.rmtree(_RAY_TMP.pop(), ignore_errors=True)


def make_ppe(workers: int) -> ProcessPoolExecutor:
    "The baseline: ProcessPoolExecutor with the spawn context, warmed so every worker process exists."
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn'))
    for f in [ex.submit(spin, 2.0) for _ in range(workers * 4)]: f.result()
    return ex


class Peer:
    "One pool the manager is measured against: submit a call, wait for one result, close (reaping its processes)."

    def __init__(self, key: str, label: str, submit, result, close):
        self.key, self.label, self.submit, self.result, self.close = key, label, submit, result, close


PEER_KEYS = ('pool', 'loky', 'ppe')
PEER_LABELS = {'pool': 'multiprocessing.Pool', 'loky': 'loky', 'ppe': 'ProcessPoolExecutor'}
PEER_SHORT = {'pool': 'Pool', 'loky': 'loky', 'ppe': 'PPE'}
LOKY_SKIPPED = "loky skipped: the loky package is not installed (pip install loky, or the 'bench' extra)"


def _warm(peer: Peer, workers: int) -> Peer:
    # 2 ms calls, several per worker, so that every worker process exists and has imported what the jobs need
    try:
        for h in [peer.submit(spin, (2.0,)) for _ in range(workers * 4)]: peer.result(h)
    except BaseException:
        peer.close(); raise
    return peer


def make_pool(workers: int) -> Peer:
    "multiprocessing.Pool with the manager's start method (spawn), used through apply_async().get()."
    pool = multiprocessing.get_context('spawn').Pool(workers)
    def close(): pool.close(); pool.join()
    return _warm(Peer('pool', PEER_LABELS['pool'], lambda fn, args: pool.apply_async(fn, args), lambda r: r.get(), close), workers)


def make_loky(workers: int):
    "loky's ProcessPoolExecutor with its default start method (a fresh interpreter per worker, as spawn), or None without loky."
    if loky is None: return None
    ex = loky.ProcessPoolExecutor(max_workers=workers)
    return _warm(Peer('loky', PEER_LABELS['loky'], lambda fn, args: ex.submit(fn, *args), lambda f: f.result(),
                      lambda: ex.shutdown(wait=True)), workers)


def make_ppe_peer(workers: int) -> Peer:
    "The ProcessPoolExecutor baseline (spawn context) as a Peer."
    ex = make_ppe(workers)
    return Peer('ppe', PEER_LABELS['ppe'], lambda fn, args: ex.submit(fn, *args), lambda f: f.result(), lambda: ex.shutdown(wait=True))


def open_peers(workers: int) -> list:
    "Every peer that can run here, warm, with `workers` processes each: Pool, loky (if installed), PPE."
    peers = []
    try:
        for make in (make_pool, make_loky, make_ppe_peer):
            p = make(workers)
            if p is not None: peers.append(p)
    except BaseException:
        close_peers(peers); raise
    return peers


def close_peers(peers) -> None:
    "Close every peer, even when one of them fails to close."
    errors = []
    for p in peers:
        try: p.close()
        except Exception as e: errors.append(e)
    if errors: raise errors[0]


def peer_rate(peer: Peer, fn, args: tuple, n: int) -> float:
    "jobs/s for n calls submitted all at once, then waited for in order."
    submit, result = peer.submit, peer.result
    t0 = time.perf_counter()
    handles = [submit(fn, args) for _ in range(n)]
    for h in handles: result(h)
    return n / (time.perf_counter() - t0)


def fastest(rates: dict, higher_is_better: bool = True):
    "The key of the best value among the peers present in rates (None values are peers that were skipped)."
    present = {k: v for k, v in rates.items() if k in PEER_KEYS and v is not None}
    return (max if higher_is_better else min)(present, key=present.get)


def target_line(text: str, met: bool, detail: str) -> str:
    return f"  {'met    ' if met else 'NOT MET'}  {text}: {detail}"


def pct(xs, q: float) -> float:
    "The q-th percentile (0-100) of xs, nearest-rank on the sorted values."
    s = sorted(xs)
    if not s: return float('nan')
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary_ms(xs_seconds) -> dict:
    "p50/p95/p99/mean/max in milliseconds."
    ms = [x * 1000 for x in xs_seconds]
    return {'n': len(ms), 'p50': pct(ms, 50), 'p95': pct(ms, 95), 'p99': pct(ms, 99),
            'mean': statistics.fmean(ms) if ms else float('nan'), 'max': max(ms) if ms else float('nan')}


def rss_kb(pid='self') -> int:
    "Resident set size in KiB from /proc/<pid>/status (VmRSS); 0 when the process is gone."
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'): return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError): pass
    return 0


def machine() -> dict:
    "Where the numbers came from."
    cpu = ''
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), '')
    except OSError: pass
    return {'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version(),
            'platform': platform.platform(), 'when': time.strftime('%Y-%m-%d %H:%M:%S')}


def fmt(v, nd=2) -> str:
    if isinstance(v, float): return f"{v:,.{nd}f}"
    if isinstance(v, int): return f"{v:,}"
    return str(v)


def table(title: str, header, rows) -> None:
    "Print a plain-text table."
    cells = [[str(h) for h in header]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print('  '.join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0: print('  '.join('-' * w for w in widths))


def emit(name: str, args, results: dict) -> None:
    "Print the one machine-readable line of a script: `JSON ` then a JSON object."
    out = {'bench': name, 'quick': bool(args.quick), 'repeat': args.repeat, 'backend': getattr(args, 'backend', 'process'),
           'machine': machine(), 'results': results}
    # Infinity and NaN are not JSON: a figure that came out empty must fail the script here, not reach results files
    print('JSON ' + json.dumps(out, sort_keys=True, allow_nan=False), flush=True)


def _is_resource_tracker(pid) -> bool:
    "multiprocessing's resource tracker lives as long as the parent by design; it is not a leak."
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f: return b'resource_tracker' in f.read()
    except OSError: return False


def leftover_children() -> list:
    "Pids of this process's children still alive (should be empty after cleanup)."
    me, kids = os.getpid(), []
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try:
            with open(f'/proc/{d}/stat') as f: stat = f.read()
            ppid = int(stat.rsplit(')', 1)[1].split()[1])
            state = stat.rsplit(')', 1)[1].split()[0]
        except (OSError, IndexError, ValueError): continue
        if ppid == me and state != 'Z' and not _is_resource_tracker(d): kids.append(int(d))
    return kids


def check_no_leftovers() -> None:
    "End a Ray instance the script started, then fail loudly if a worker process outlived its manager or executor."
    stop_ray()
    for _ in range(50):
        kids = leftover_children()
        if not kids: return
        time.sleep(0.05)
    raise SystemExit(f"leftover child processes: {kids}")
