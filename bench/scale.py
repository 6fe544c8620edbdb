"""Scale: no-op throughput with 1, 2 and 4 workers (vs multiprocessing.Pool, loky and ProcessPoolExecutor at
the same count, as in throughput.py), and with 10, 1,000 and 10,000 jobs waiting in the queue.

Queue depth: D low-priority no-op 'filler' jobs are queued first; then N no-op jobs at a higher priority are
submitted and awaited, so every push and pop happens on a heap holding D+ entries. Reported: jobs/s, and the
cost of start_job (push) and of cancel_job on a pending job, per call. Flat across D = no linear queue cost.
Cancel is timed before that, while a `hold` job (bench_plugins) keeps the only worker busy: the D fillers and
100 more jobs behind them are queued, and those 100 are cancelled, so none of them can have started.
Each figure is the median over the repetitions.

Run: python bench/scale.py [--quick] [--repeat N]    Prints tables and one line `JSON {...}`.
"""
import asyncio, os, shutil, statistics, tempfile, time
from bench_plugins import bench_entry
from _common import parse_args, make_manager, table, emit, check_no_leftovers, loky, PEER_SHORT, LOKY_SKIPPED
from throughput import measure_workers, cell_result, rate

CANCEL_VICTIMS = 100  # pending jobs cancelled (and timed) per repetition, queued behind the D fillers
HOLD_PRIORITY = 10  # ahead of everything else, so the hold job is the one the worker takes


class WorkerHold:
    "A `hold` job keeping the manager's only worker busy until release(): meanwhile every job queued stays pending."

    def __init__(self, m):
        self.m, self.dir = m, tempfile.mkdtemp(prefix='bench-hold-')
        self.path, self.server, self.writer, self.job = os.path.join(self.dir, 'hold.sock'), None, None, None

    async def start(self) -> None:
        "Start the hold job and return once the worker is inside it."
        connected = asyncio.get_running_loop().create_future()
        def on_connect(_reader, writer):
            if not connected.done(): connected.set_result(writer)
        self.server = await asyncio.start_unix_server(on_connect, self.path)
        self.job = await self.m.start_job('hold', priority=HOLD_PRIORITY, address=self.path)
        ended = asyncio.ensure_future(self.m.wait_for_job(self.job.id))
        # the job ending first (or nothing within a minute) means the hold never began: fail instead of hanging
        done, _ = await asyncio.wait({connected, ended}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if connected not in done: raise RuntimeError(f"the hold job never reached its worker: {self.job.status.value} {self.job.error}")
        self.writer = connected.result()

    async def release(self) -> None:
        "Let the hold job end, and wait until it has."
        self.writer.close()
        await self.writer.wait_closed()
        await self.m.wait_for_job(self.job.id)
        if self.job.status.value != 'completed': raise RuntimeError(f"hold job {self.job.status.value}: {self.job.error}")

    async def close(self) -> None:
        "Also after an error: closing the connection ends a hold job still running, so shutdown need not kill its worker."
        if self.writer is not None and not self.writer.is_closing(): self.writer.close()
        if self.server is not None: self.server.close(); await self.server.wait_closed()
        shutil.rmtree(self.dir, ignore_errors=True)


async def depth_run(depth: int, n: int, repeat: int, workers: int = 1, victims: int = CANCEL_VICTIMS) -> dict:
    m = make_manager(workers, entry_point=bench_entry)
    try:
        await m.start()
        runs = {'jobs_per_s': [], 'start_job_us': [], 'cancel_pending_us': []}
        for _ in range(repeat):
            # cancel is timed on jobs that are certainly pending: the worker is held, D fillers are queued ahead of them
            hold = WorkerHold(m)
            try:
                await hold.start()
                fillers = [await m.start_job('noop', priority=-1) for _ in range(depth)]
                doomed = [await m.start_job('noop', priority=-1) for _ in range(victims)]
                if any(v.status.value != 'pending' for v in doomed): raise RuntimeError("a job left the queue while the worker was held")
                t3 = time.perf_counter()
                cancelled = [await m.cancel_job(v.id) for v in doomed]
                t4 = time.perf_counter()
                if not all(cancelled) or any(v.status.value != 'cancelled' for v in doomed): raise RuntimeError("a pending job was not cancelled")
                await hold.release()
            finally: await hold.close()
            t0 = time.perf_counter()
            jobs = [await m.start_job('noop') for _ in range(n)]
            t1 = time.perf_counter()
            await asyncio.gather(*(m.wait_for_job(j.id) for j in jobs))
            t2 = time.perf_counter()
            if any(j.status.value != 'completed' for j in jobs): raise RuntimeError("a job did not complete")
            for f in fillers:  # untimed: clear the queue for the next repetition
                if f.status.value == 'pending': await m.cancel_job(f.id)
            for f in fillers:
                if not f.is_terminal: await m.wait_for_job(f.id)
            runs['jobs_per_s'].append(n / (t2 - t0))
            runs['start_job_us'].append(1e6 * (t1 - t0) / n)
            runs['cancel_pending_us'].append(1e6 * (t4 - t3) / victims)
        return {k: statistics.median(v) for k, v in runs.items()} | {'cancelled_per_run': victims, 'runs': runs}
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
    table(f'1 worker, {n:,} no-op jobs with D jobs waiting behind them in the queue (median of {a.repeat})',
          ['D', 'jobs/s', 'start_job us/call', 'cancel pending us/call'],
          [[f"{d:,}", round(r['jobs_per_s']), r['start_job_us'], r['cancel_pending_us']] for d, r in depth.items()])
    check_no_leftovers()
    emit('scale', a, {'jobs': n, 'workers': workers, 'queue_depth': depth})


if __name__ == '__main__':
    main()
