"""The two backends side by side, in one run: the same JobManager with its workers as local processes and as Ray actors
(RayBackend on a private Ray instance of this machine, started once for the run), both warm and alive for the whole run.

- throughput: no-op jobs, 1 worker, submit all then wait all (5,000; --quick 500), with the default send-ahead
  (WorkerConfig's prefetch, times the backend's send_ahead_factor: 4 for Ray) and a shallow one (prefetch=8);
  repetitions interleaved, median reported
- latency: start_job -> completion of one no-op job, sequential (1,000; --quick 200), blocks of 50 alternated between them
- streaming: the delay from a chunk leaving the worker to the stream consumer (stamps paced 2 ms apart, 1,000; --quick 200),
  and chunks/s of a flood (20,000; --quick 2,000)
- cancel -> next job: a running CPU-bound job is cancelled with a no-op job pending behind it, 1 worker: the worker is replaced
  (a new process, a new actor) or, with standby_workers=1, a spare takes the slot at once (20 runs each; --quick 3)

Targets of issue 11 for RayBackend on this 2-core machine (printed, never asserted): no-op throughput >= 5,000 jobs/s with
1 actor, latency p50 <= 1.5 ms, a chunk from an actor to the manager p95 <= 5 ms.

Run: python bench/backends.py [--quick] [--repeat N]     Prints tables and one line `JSON {...}`.
"""
import asyncio, importlib.util, statistics, time
from datetime import datetime, timezone
from cjm_fasthtml_workers.core.config import WorkerConfig
from _common import parse_args, make_manager, table, emit, summary_ms, check_no_leftovers, target_line, start_ray, BACKENDS
from bench_plugins import bench_entry
from throughput import manager_run
from streaming import consume
from cancel import all_idle

DEFAULT_PREFETCH = WorkerConfig().prefetch
TARGETS = {'jobs_per_s': 5000, 'latency_p50_ms': 1.5, 'chunk_p95_ms': 5.0}


async def throughput(n: int, repeat: int, prefetch: int) -> dict:
    "jobs/s of every repetition, per backend, with both managers warm and alive."
    ms = {b: make_manager(1, backend=b, prefetch=prefetch) for b in BACKENDS}
    try:
        for m in ms.values():
            await m.start()
            await manager_run(m, 'noop', min(n, 500), {})  # untimed: every worker up, the plugin known to be short
        runs = {b: [] for b in BACKENDS}
        for r in range(repeat):
            for b in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]): runs[b].append(await manager_run(ms[b], 'noop', n, {}))
        return runs
    finally:
        for m in ms.values(): await m.shutdown()


async def latency(n: int, block: int = 50) -> dict:
    "Seconds per sequential no-op job, per backend, in alternating blocks."
    ms = {b: make_manager(1, backend=b) for b in BACKENDS}
    out = {b: [] for b in BACKENDS}
    try:
        for m in ms.values():
            await m.start()
            for _ in range(50): await m.wait_for_job((await m.start_job('noop')).id)
        clock = time.perf_counter
        while len(out['ray']) < n:
            for b, m in ms.items():
                for _ in range(min(block, n - len(out[b]))):
                    t0 = clock()
                    j = await m.start_job('noop')
                    await m.wait_for_job(j.id)
                    out[b].append(clock() - t0)
        return out
    finally:
        for m in ms.values(): await m.shutdown()


async def streaming(n_paced: int, n_flood: int) -> dict:
    "Per backend: the worker -> consumer delay of paced chunks and the chunks/s of a flood."
    out = {}
    for b in BACKENDS:
        m = make_manager(1, streaming=True, entry_point=bench_entry, backend=b)
        try:
            await m.start()
            await consume(m, 'stamps', n=100)  # warm-up
            got, _ = await consume(m, 'stamps', n=n_paced, delay=0.002)
            paced = summary_ms([recv - sent for sent, recv in got])
            got, dt = await consume(m, 'stamps', n=n_flood)
            out[b] = {'paced_delay_ms': paced, 'flood_chunks_per_s': n_flood / dt, 'flood_delay_ms': summary_ms([r - s for s, r in got])}
        finally: await m.shutdown()
    return out


async def cancel_to_next(runs: int, standby: bool) -> dict:
    "Per backend: cancel a running 'spin' with a no-op pending behind it on the only worker; cancel -> that job started, completed."
    out = {}
    for b in BACKENDS:
        m = make_manager(1, backend=b, standby_workers=1 if standby else 0)
        started, done = [], []
        try:
            await m.start()
            await m.wait_for_job((await m.start_job('noop')).id)
            for _ in range(runs):
                await all_idle(m, 60)
                victim = await m.start_job('spin', ms=60_000)
                nxt = await m.start_job('noop')
                await asyncio.sleep(0.03)  # the worker is inside the job
                wall0, t0 = datetime.now(timezone.utc), time.perf_counter()
                await m.cancel_job(victim.id)
                await m.wait_for_job(nxt.id, 60)
                done.append(time.perf_counter() - t0)
                started.append((nxt.started_at - wall0).total_seconds())
                if victim.status.value != 'cancelled' or nxt.status.value != 'completed':
                    raise RuntimeError(f"{b}: victim {victim.status.value}, next {nxt.status.value} {nxt.error}")
        finally: await m.shutdown()
        out[b] = {'next_started_ms': summary_ms(started), 'next_completed_ms': summary_ms(done)}
    return out


def main():
    a = parse_args(__doc__)
    if importlib.util.find_spec('ray') is None:  # an optional extra: without it there is nothing to compare
        print("backends: skipped, Ray is not installed (pip install -e '.[ray]')")
        return emit('backends', a, {'skipped': 'ray is not installed'})
    n, n_lat, n_paced, n_flood, runs = (500, 200, 200, 2000, 3) if a.quick else (5000, 1000, 1000, 20_000, 20)
    start_ray()  # once, before anything is timed
    r = {'throughput': {f'prefetch_{p}': asyncio.run(throughput(n, a.repeat, p)) for p in (DEFAULT_PREFETCH, 8)}}
    lat_runs = [asyncio.run(latency(n_lat)) for _ in range(a.repeat)]
    r['latency_ms'] = {b: {q: statistics.median(summary_ms(run[b])[q] for run in lat_runs) for q in ('p50', 'p95', 'p99', 'max')}
                       for b in BACKENDS}
    r['streaming'] = asyncio.run(streaming(n_paced, n_flood))
    r['cancel'] = {case: asyncio.run(cancel_to_next(runs, case == 'standby')) for case in ('replace', 'standby')}

    tp = {p: {b: statistics.median(v) for b, v in runs_.items()} for p, runs_ in r['throughput'].items()}
    rows = [[f'no-op jobs/s, 1 worker, {p.replace("_", "=")} (median of {a.repeat})'] + [f"{tp[p][b]:,.0f}" for b in BACKENDS] for p in tp]
    L = r['latency_ms']
    rows += [[f'latency p{q[1:]}, ms ({n_lat:,} sequential, median of {a.repeat})'] + [f"{L[b][q]:.3f}" for b in BACKENDS]
             for q in ('p50', 'p95', 'p99')]
    S = r['streaming']
    rows += [[f'chunk worker -> consumer {q}, ms (paced 2 ms, {n_paced:,})'] + [f"{S[b]['paced_delay_ms'][q]:.3f}" for b in BACKENDS]
             for q in ('p50', 'p95')]
    rows += [[f'chunks/s, flood of {n_flood:,}'] + [f"{S[b]['flood_chunks_per_s']:,.0f}" for b in BACKENDS]]
    C = r['cancel']
    for case in ('replace', 'standby'):
        rows += [[f'cancel -> next job started p{q[1:]}, ms ({case}, {runs} runs)'] + [f"{C[case][b]['next_started_ms'][q]:.1f}" for b in BACKENDS]
                 for q in ('p50', 'p95')]
    table('JobManager on each backend, same run (2 cores, shared machine)', ['', 'processes', 'Ray actors'], rows)

    ray_tp = tp[f'prefetch_{DEFAULT_PREFETCH}']['ray']
    targets = [{'target': f'RayBackend no-op throughput, 1 actor, default WorkerConfig (prefetch={DEFAULT_PREFETCH})', 'value': ray_tp,
                'limit': TARGETS['jobs_per_s'], 'met': ray_tp >= TARGETS['jobs_per_s'], 'detail': f"{ray_tp:,.0f} jobs/s (>= {TARGETS['jobs_per_s']:,})"},
               {'target': 'RayBackend latency p50', 'value': L['ray']['p50'], 'limit': TARGETS['latency_p50_ms'],
                'met': L['ray']['p50'] <= TARGETS['latency_p50_ms'], 'detail': f"{L['ray']['p50']:.3f} ms (<= {TARGETS['latency_p50_ms']} ms)"},
               {'target': 'RayBackend chunk actor -> manager p95', 'value': S['ray']['paced_delay_ms']['p95'], 'limit': TARGETS['chunk_p95_ms'],
                'met': S['ray']['paced_delay_ms']['p95'] <= TARGETS['chunk_p95_ms'],
                'detail': f"{S['ray']['paced_delay_ms']['p95']:.3f} ms (<= {TARGETS['chunk_p95_ms']} ms)"}]
    print('\nTargets (printed, never asserted):')
    for t in targets: print(target_line(t['target'], t['met'], t['detail']))
    r.update(targets=targets, throughput_median=tp, statistic='median')
    check_no_leftovers()
    emit('backends', a, r)


if __name__ == '__main__':
    main()
