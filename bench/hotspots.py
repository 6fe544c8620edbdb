"""Where the manager's time goes: cProfile of the manager process while it runs no-op jobs on 1 worker
(`start_job` in a loop, then `wait_for_job` for each, as bench/throughput.py does), top entries by own time.

cProfile slows every Python call, so the shares favour code with many small calls; read the order, not the figures.
(`py-spy record --format raw` on bench/throughput.py gives the same order without the overhead, where py-spy is installed.)

Run: python bench/hotspots.py [--quick]     (--quick: 2,000 jobs; else 3 rounds of 20,000)
Prints a table and one line `JSON {...}`.
"""
import asyncio, cProfile, os, pstats
from _common import parse_args, make_manager, table, emit, check_no_leftovers

TOP = 15


async def run(rounds: int, n: int) -> cProfile.Profile:
    m = make_manager(1)
    prof = cProfile.Profile()
    try:
        await m.start()
        jobs = [await m.start_job('noop') for _ in range(200)]  # untimed: the plugin is known to be short
        for j in jobs: await m.wait_for_job(j)
        prof.enable()
        for _ in range(rounds):
            jobs = [await m.start_job('noop') for _ in range(n)]
            for j in jobs: await m.wait_for_job(j)
        prof.disable()
    finally: await m.shutdown()
    return prof


def where(key) -> str:
    path, line, name = key
    if path == '~': return name  # a built-in
    parts = path.split(os.sep)
    short = os.sep.join(parts[parts.index('cjm_fasthtml_workers'):]) if 'cjm_fasthtml_workers' in parts else os.sep.join(parts[-2:])
    return f"{name} ({short}:{line})"


def main():
    a = parse_args(__doc__)
    rounds, n = (1, 2000) if a.quick else (3, 20_000)
    stats = pstats.Stats(asyncio.run(run(rounds, n)))
    total = stats.total_tt
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP]
    top = [{'function': where(k), 'calls': v[1], 'own_s': v[2], 'own_share': v[2] / total, 'cumulative_s': v[3]} for k, v in entries]
    table(f"cProfile of the manager, {rounds * n:,} no-op jobs on 1 worker: top {TOP} by own time ({total:.2f} s profiled)",
          ['function', 'calls', 'own s', 'own %', 'cumulative s'],
          [[t['function'], f"{t['calls']:,}", f"{t['own_s']:.3f}", f"{100 * t['own_share']:.1f}", f"{t['cumulative_s']:.3f}"] for t in top])
    check_no_leftovers()
    emit('hotspots', a, {'jobs': rounds * n, 'profiled_s': total, 'top': top})


if __name__ == '__main__':
    main()
