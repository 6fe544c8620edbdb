"""Scale: no-op throughput with 1, 2 and 4 workers (vs multiprocessing.Pool, loky and ProcessPoolExecutor at
the same count, as in throughput.py), and with 10, 1,000 and 10,000 jobs waiting in the queue.

Queue depth: D low-priority no-op 'filler' jobs are queued first; then N no-op jobs at a higher priority are
submitted and awaited, so every push and pop happens on a heap holding D+ entries. Reported: jobs/s, and the
cost of start_job (push) and of cancel_job on a pending job, per call. Flat across D = no linear queue cost.

Run: python bench/scale.py [--quick] [--repeat N]    Prints tables and one line `JSON {...}`.
"""
import asyncio, time
from _common import parse_args, make_manager, table, emit, check_no_leftovers, loky, PEER_SHORT, LOKY_SKIPPED
from throughput import measure_workers, cell_result, rate


async def depth_run(depth: int, n: int, repeat: int, workers: int = 1) -> dict:
    m = make_manager(workers)
    try:
        await m.start()
        best = {'jobs_per_s': 0.0, 'start_job_us': float('inf'), 'cancel_pending_us': float('inf')}
        for _ in range(repeat):
            fillers = [await m.start_job('noop', priority=-1) for _ in range(depth)]
            t0 = time.perf_counter()
            jobs = [await m.start_job('noop') for _ in range(n)]
            t1 = time.perf_counter()
            await asyncio.gather(*(m.wait_for_job(j.id) for j in jobs))
            t2 = time.perf_counter()
            pending = [f for f in fillers if f.status.value == 'pending']
            t3 = time.perf_counter()
            for f in pending: await m.cancel_job(f.id)
            t4 = time.perf_counter()
            if any(j.status.value != 'completed' for j in jobs): raise RuntimeError("a job did not complete")
            running = [f for f in fillers if not f.is_terminal]  # at most the one filler that started first
            for f in running: await m.wait_for_job(f.id)
            best['jobs_per_s'] = max(best['jobs_per_s'], n / (t2 - t0))
            best['start_job_us'] = min(best['start_job_us'], 1e6 * (t1 - t0) / n)
            if pending: best['cancel_pending_us'] = min(best['cancel_pending_us'], 1e6 * (t4 - t3) / len(pending))
        return best
    finally: await m.shutdown()


def main():
    a = parse_args(__doc__)
    n = 500 if a.quick else 5000
    depths = (10, 1000) if a.quick else (10, 1000, 10_000)
    if loky is None: print(LOKY_SKIPPED)
    workers = {w: cell_result(n, w, asyncio.run(measure_workers(w, {'noop': n}, a.repeat))['noop']) for w in (1, 2, 4)}
    table(f'No-op throughput by worker count (jobs/s, {n:,} jobs, median of {a.repeat}, runs interleaved)',
          ['workers', 'JobManager', 'Pool(spawn)', 'loky', 'PPE(spawn)', 'vs fastest peer', 'vs PPE'],
          [[w, rate(r['manager_jobs_per_s']), rate(r['pool_jobs_per_s']), rate(r['loky_jobs_per_s']), rate(r['ppe_jobs_per_s']),
            f"{r['ratio_vs_fastest']:.2f}x ({PEER_SHORT[r['fastest_peer']]})", f"{r['ratio']:.2f}x"] for w, r in workers.items()])
    depth = {d: asyncio.run(depth_run(d, n, a.repeat)) for d in depths}
    table(f'1 worker, {n:,} no-op jobs with D jobs waiting behind them in the queue (best of {a.repeat})',
          ['D', 'jobs/s', 'start_job us/call', 'cancel pending us/call'],
          [[f"{d:,}", round(r['jobs_per_s']), r['start_job_us'], r['cancel_pending_us']] for d, r in depth.items()])
    check_no_leftovers()
    emit('scale', a, {'jobs': n, 'workers': workers, 'queue_depth': depth})


if __name__ == '__main__':
    main()
