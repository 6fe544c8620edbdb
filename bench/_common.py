"""Shared helpers for the bench/ scripts: argument parsing, percentiles, tables, the JSON line, RSS from /proc.

Every script prints a small table for people and exactly one line `JSON {...}` for machines
(`run_all.py` collects these). Timings are never asserted; a script exits non-zero only on errors.
"""
import argparse, json, os, platform, statistics, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path: sys.path.insert(0, ROOT)  # run from a clone without installing

from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager
from cjm_fasthtml_workers.demo.plugins import demo_plugins, noop, spin


def parse_args(description: str, **extra):
    "Standard options: --quick (small sizes, one repeat: the CI smoke test) and --repeat."
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--quick', action='store_true', help='small sizes and one repeat (CI smoke test; numbers are not meaningful)')
    p.add_argument('--repeat', type=int, default=None, help='repeat each measurement this many times and keep the best (default 3, 1 with --quick)')
    for name, kw in extra.items(): p.add_argument(name, **kw)
    a = p.parse_args()
    if a.repeat is None: a.repeat = 1 if a.quick else 3
    return a


def make_manager(workers: int = 1, streaming: bool = False, entry_point=demo_plugins, event_broadcaster=None, **config) -> JobManager:
    "A JobManager on the demo plugins (or another entry point), spawn start method."
    cfg = WorkerConfig(max_workers=workers, start_method='spawn', **config)
    return JobManager('bench', 'bench', entry_point=entry_point, supports_streaming=streaming, worker_config=cfg,
                      event_broadcaster=event_broadcaster)


def make_ppe(workers: int) -> ProcessPoolExecutor:
    "The baseline: ProcessPoolExecutor with the spawn context, warmed so every worker process exists."
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn'))
    for f in [ex.submit(spin, 2.0) for _ in range(workers * 4)]: f.result()
    return ex


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
    out = {'bench': name, 'quick': bool(args.quick), 'repeat': args.repeat, 'machine': machine(), 'results': results}
    print('JSON ' + json.dumps(out, sort_keys=True), flush=True)


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
    "Fail loudly if a worker process outlived its manager or executor."
    for _ in range(50):
        kids = leftover_children()
        if not kids: return
        time.sleep(0.05)
    raise SystemExit(f"leftover child processes: {kids}")
