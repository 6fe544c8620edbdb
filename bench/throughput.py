"""Throughput: no-op jobs and ~1 ms CPU jobs through JobManager vs ProcessPoolExecutor (spawn), 1 and 2 workers.

Submit all, then wait for all. Run: python bench/throughput.py [--quick] [--repeat N]
Prints a table and one line `JSON {...}`.
"""
import asyncio, time
from _common import parse_args, make_manager, make_ppe, table, emit, check_no_leftovers, noop, spin


async def manager_rate(workers: int, plugin: str, n: int, repeat: int, **params) -> float:
    "Best jobs/s of `repeat` runs of n jobs on one warm manager."
    m = make_manager(workers)
    try:
        await m.start()
        best = 0.0
        for _ in range(repeat):
            t0 = time.perf_counter()
            jobs = [await m.start_job(plugin, **params) for _ in range(n)]
            await asyncio.gather(*(m.wait_for_job(j.id) for j in jobs))
            dt = time.perf_counter() - t0
            bad = [j for j in jobs if j.status.value != 'completed']
            if bad: raise RuntimeError(f"{len(bad)} {plugin} jobs did not complete: {bad[0].status.value} {bad[0].error}")
            best = max(best, n / dt)
        return best
    finally: await m.shutdown()


def ppe_rate(workers: int, fn, n: int, repeat: int, *args) -> float:
    "Best jobs/s of `repeat` runs of n calls on one warm ProcessPoolExecutor."
    ex = make_ppe(workers)
    try:
        best = 0.0
        for _ in range(repeat):
            t0 = time.perf_counter()
            futs = [ex.submit(fn, *args) for _ in range(n)]
            for f in futs: f.result()
            best = max(best, n / (time.perf_counter() - t0))
        return best
    finally: ex.shutdown(wait=True)


def main():
    a = parse_args(__doc__)
    n_noop, n_cpu = (500, 200) if a.quick else (5000, 2000)
    rows, results = [], {}
    for kind, n, fn, plugin, args, params in [('noop', n_noop, noop, 'noop', (), {}),
                                               ('cpu_1ms', n_cpu, spin, 'spin', (1.0,), {'ms': 1.0})]:
        for w in (1, 2):
            mgr = asyncio.run(manager_rate(w, plugin, n, a.repeat, **params))
            ppe = ppe_rate(w, fn, n, a.repeat, *args)
            ratio = mgr / ppe
            results[f'{kind}_w{w}'] = {'jobs': n, 'workers': w, 'manager_jobs_per_s': mgr, 'ppe_jobs_per_s': ppe, 'ratio': ratio,
                                       'target_ratio': 2.0 if kind == 'noop' else None}
            rows.append([kind, w, n, round(mgr), round(ppe), f"{ratio:.2f}x", '>= 2.0x' if kind == 'noop' else '-'])
    table('Throughput (jobs/s, best of %d; submit all then wait all)' % a.repeat,
          ['jobs', 'workers', 'n', 'JobManager', 'PPE(spawn)', 'ratio', 'target'], rows)
    check_no_leftovers()
    emit('throughput', a, results)


if __name__ == '__main__':
    main()
