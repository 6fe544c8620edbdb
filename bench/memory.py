"""Memory: the manager process's RSS after 1k, 10k and 100k completed no-op jobs with history retention on
(WorkerConfig default max_history=1000), and each worker's RSS. RSS is VmRSS from /proc/<pid>/status.

Jobs are submitted in batches of 1,000 and awaited, so at most 1,000 are pending at a time.
Target: manager RSS flat within 10% after warm-up (the 10k -> 100k change).

Run: python bench/memory.py [--quick]    (--quick: 1k and 5k)   Prints a table and one line `JSON {...}`.
"""
import asyncio, time
from _common import parse_args, make_manager, table, emit, rss_kb, check_no_leftovers

BATCH = 1000


async def measure(checkpoints, workers: int = 2) -> dict:
    m = make_manager(workers)
    series, points = [], {}
    try:
        base = rss_kb()
        await m.start()
        started = rss_kb()
        done, t0, step = 0, time.perf_counter(), max(1, checkpoints[-1] // 50)
        while done < checkpoints[-1]:
            jobs = [await m.start_job('echo', text='x' * 100) for _ in range(BATCH)]
            await asyncio.gather(*(m.wait_for_job(j.id) for j in jobs))
            if any(j.status.value != 'completed' for j in jobs): raise RuntimeError("a job did not complete")
            done += BATCH
            if done % step == 0 or done in checkpoints: series.append((done, rss_kb()))
            if done in checkpoints:
                points[done] = {'manager_rss_kb': rss_kb(), 'held_jobs': m.get_stats()['held'],
                                'worker_rss_kb': [rss_kb(w['pid']) for w in m.get_workers()]}
        secs = time.perf_counter() - t0
    finally: await m.shutdown()
    return {'before_start_kb': base, 'after_start_kb': started, 'points': points, 'series': series, 'seconds': secs,
            'max_history': m.config.max_history}


def main():
    a = parse_args(__doc__)
    checkpoints = [1000, 5000] if a.quick else [1000, 10_000, 100_000]
    r = asyncio.run(measure(checkpoints))
    pts = r['points']
    warmup = checkpoints[1] if len(checkpoints) > 2 else checkpoints[0]  # the first 10k jobs (1k in --quick) are warm-up
    warm, last = pts[warmup]['manager_rss_kb'], pts[checkpoints[-1]]['manager_rss_kb']
    r['growth_after_warmup_pct'] = 100 * (last - warm) / warm
    rows = [[f"{n:,}", p['manager_rss_kb'] / 1024, p['held_jobs'], ' / '.join(f"{k / 1024:.1f}" for k in p['worker_rss_kb'])]
            for n, p in pts.items()]
    table(f"RSS after N completed jobs (MiB; manager before start {r['before_start_kb'] / 1024:.1f}, after start {r['after_start_kb'] / 1024:.1f})",
          ['jobs', 'manager', 'jobs held', 'workers'], rows)
    print(f"manager growth {warmup:,} -> {checkpoints[-1]:,} jobs: {r['growth_after_warmup_pct']:+.1f}% (target within 10%)")
    r['target_growth_pct'] = 10
    check_no_leftovers()
    emit('memory', a, r)


if __name__ == '__main__':
    main()
