"""The durable job store: no-op throughput with SQLiteJobStore against the in-memory store, in the same run, and the
manager's memory and the file's size over a long run with the default retention (max_history=1000).

Throughput: 5,000 no-op jobs on 1 worker, `start_job` in a loop then `wait_for_job` for each (as bench/throughput.py),
through the memory store, SQLiteJobStore (start_job returns once the job is on disk: wait_for_disk=True, the default)
and SQLiteJobStore(wait_for_disk=False) (written within a tick); the three are interleaved, who goes first rotates;
medians. Also `start_jobs` batches of 500 with the default store (a batch waits for the disk once).
Long run: 100,000 no-op jobs in start_jobs batches of 1,000 through SQLiteJobStore; manager RSS and file size
(with its -wal file) after 10,000 and 100,000 jobs.
Targets: SQLiteJobStore throughput >= 0.5x the memory store's; manager RSS and file size flat (within 10%)
from 10,000 to 100,000 jobs.

Run: python bench/store.py [--quick] [--repeat N]     (--quick: 500 jobs; long run 1,000 -> 5,000)
Prints tables and one line `JSON {...}`.
"""
import asyncio, statistics, tempfile, time
from pathlib import Path
from _common import parse_args, make_manager, table, emit, rss_kb, check_no_leftovers, target_line
from cjm_fasthtml_workers.core.store import SQLiteJobStore

TARGET_VS_MEMORY = 0.5
KINDS = ('memory', 'sqlite', 'sqlite_nowait')


def make_store(kind: str, folder: Path):
    if kind == 'memory': return None
    return SQLiteJobStore(folder / f'{kind}.db', wait_for_disk=(kind == 'sqlite'))


async def one_by_one(m, n: int) -> float:
    t0 = time.perf_counter()
    jobs = [await m.start_job('noop') for _ in range(n)]
    for j in jobs: await m.wait_for_job(j)
    dt = time.perf_counter() - t0
    if any(j.status.value != 'completed' for j in jobs): raise RuntimeError("a job did not complete")
    return n / dt


async def in_batches(m, n: int, batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        jobs = await m.start_jobs('noop', [{}] * min(batch, n - i))
        for j in jobs: await m.wait_for_job(j)
    return n / (time.perf_counter() - t0)


async def throughput(n: int, repeat: int, folder: Path) -> dict:
    managers = {k: make_manager(1, job_store=make_store(k, folder)) for k in KINDS}
    try:
        for m in managers.values():
            await m.start()
            await one_by_one(m, min(n, 200))  # warm: the worker up, the plugin known to be short
        runs = {k: [] for k in KINDS}
        runs['sqlite_batches'] = []
        for r in range(repeat):
            for k in KINDS[r % 3:] + KINDS[:r % 3]: runs[k].append(await one_by_one(managers[k], n))
            runs['sqlite_batches'].append(await in_batches(managers['sqlite'], n, 500))
        return runs
    finally:
        for m in managers.values(): await m.shutdown()


def file_kb(path: Path) -> int:
    "The store's size on disk: the file and its write-ahead log (which SQLite reuses rather than shrinks)."
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + '-wal')) if p.exists()) // 1024


def wal_kb(path: Path) -> int:
    wal = path.with_name(path.name + '-wal')
    return wal.stat().st_size // 1024 if wal.exists() else 0


async def long_run(checkpoints, folder: Path) -> dict:
    path = folder / 'long.db'
    m = make_manager(1, job_store=SQLiteJobStore(path))
    points, done = {}, 0
    try:
        await m.start()
        t0 = time.perf_counter()
        while done < checkpoints[-1]:
            jobs = await m.start_jobs('noop', [{}] * 1000)
            for j in jobs: await m.wait_for_job(j)
            done += 1000
            if done in checkpoints:
                await m.store.committed()
                points[done] = {'manager_rss_kb': rss_kb(), 'file_kb': file_kb(path), 'wal_kb': wal_kb(path), 'held_jobs': m.get_stats()['held']}
        secs = time.perf_counter() - t0
    finally: await m.shutdown()
    return {'points': points, 'seconds': secs, 'jobs_per_s': done / secs, 'max_history': m.config.max_history}


def growth(points, a, b, key) -> float: return 100 * (points[b][key] - points[a][key]) / points[a][key]


def main():
    a = parse_args(__doc__)
    n, checkpoints = (500, [1000, 5000]) if a.quick else (5000, [10_000, 100_000])
    with tempfile.TemporaryDirectory() as d:
        runs = asyncio.run(throughput(n, a.repeat, Path(d)))
        long = asyncio.run(long_run(checkpoints, Path(d)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = {k: med[k] / med['memory'] for k in med}
    table(f'No-op throughput by job store (jobs/s, 1 worker, {n:,} jobs, median of {a.repeat}, interleaved)',
          ['store', 'jobs/s', 'vs memory'],
          [['memory (MemoryJobStore, the default)', round(med['memory']), '1.00x'],
           ['SQLiteJobStore (start_job waits for the disk)', round(med['sqlite']), f"{ratio['sqlite']:.2f}x"],
           ['SQLiteJobStore(wait_for_disk=False)', round(med['sqlite_nowait']), f"{ratio['sqlite_nowait']:.2f}x"],
           ['SQLiteJobStore, start_jobs batches of 500', round(med['sqlite_batches']), f"{ratio['sqlite_batches']:.2f}x"]])
    pts, (c0, c1) = long['points'], checkpoints
    table(f"SQLiteJobStore over {c1:,} jobs (max_history={long['max_history']}; {long['jobs_per_s']:,.0f} jobs/s in batches of 1,000)",
          ['jobs', 'manager RSS MiB', 'file + -wal KiB', 'of which -wal', 'jobs held'],
          [[f'{k:,}', p['manager_rss_kb'] / 1024, p['file_kb'], p['wal_kb'], p['held_jobs']] for k, p in pts.items()])
    rss_growth, file_growth = growth(pts, c0, c1, 'manager_rss_kb'), growth(pts, c0, c1, 'file_kb')
    targets = [{'target': f'no-op throughput, SQLiteJobStore >= {TARGET_VS_MEMORY}x the memory store', 'value': ratio['sqlite'],
                'limit': TARGET_VS_MEMORY, 'met': ratio['sqlite'] >= TARGET_VS_MEMORY,
                'detail': f"{ratio['sqlite']:.2f}x ({med['sqlite']:,.0f} vs {med['memory']:,.0f} jobs/s; wait_for_disk=False: {ratio['sqlite_nowait']:.2f}x)"},
               {'target': f'manager RSS with SQLiteJobStore flat from {c0:,} to {c1:,} jobs (within 10%)', 'value': rss_growth, 'limit': 10,
                'met': abs(rss_growth) <= 10, 'detail': f"{rss_growth:+.1f}%"},
               {'target': f'store file size bounded by retention from {c0:,} to {c1:,} jobs (within 10%)', 'value': file_growth, 'limit': 10,
                'met': file_growth <= 10, 'detail': f"{file_growth:+.1f}% ({pts[c0]['file_kb']:,} -> {pts[c1]['file_kb']:,} KiB)"}]
    print('\nTargets (printed, never asserted):')
    for t in targets: print(target_line(t['target'], t['met'], t['detail']))
    check_no_leftovers()
    emit('store', a, {'jobs': n, 'runs': runs, 'median_jobs_per_s': med, 'ratio_vs_memory': ratio, 'long_run': long, 'targets': targets,
                      'statistic': 'median'})


if __name__ == '__main__':
    main()
