"""Throughput: no-op jobs and ~1 ms CPU jobs through JobManager and its peers, 1 and 2 workers, in one run.

Peers: multiprocessing.Pool (spawn, apply_async), loky (when installed) and ProcessPoolExecutor (spawn).
Submit all, then wait for all; every pool is warm and alive for the whole cell, and the repetitions are
interleaved (who goes first rotates), so background load on a shared machine falls on all of them alike.
Reported: the median of the repetitions. Also printed: the physical bounds of bench/bounds.py.

Run: python bench/throughput.py [--quick] [--repeat N]
Prints tables and one line `JSON {...}`.
"""
import asyncio, statistics, time
from _common import (parse_args, make_manager, open_peers, close_peers, peer_rate, fastest, target_line, table, emit,
                     check_no_leftovers, noop, spin, loky, PEER_KEYS, PEER_SHORT, LOKY_SKIPPED)
from bounds import measure_echo, measure_pipeline, bounds_result, print_bounds

# (name, the call the peers make, its args, the manager's plugin, its params)
KINDS = {'noop': (noop, (), 'noop', {}), 'cpu_1ms': (spin, (1.0,), 'spin', {'ms': 1.0})}
TARGET_VS_POOL = 1.5  # no-op jobs/s, JobManager / multiprocessing.Pool, at 1 and 2 workers


class NoopBroadcaster:
    "An event broadcaster that counts the events it is sent and does nothing else."
    def __init__(self): self.count = 0
    async def broadcast(self, event_type, data): self.count += 1


async def manager_run(m, plugin: str, n: int, params: dict, batch: bool = False) -> float:
    """jobs/s for n jobs started at once on a warm manager, then awaited in order (as the peers wait for theirs: a task
    per job, as asyncio.gather makes, would be the benchmark's own cost)."""
    t0 = time.perf_counter()
    if batch: jobs = await m.start_jobs(plugin, [params] * n)
    else: jobs = [await m.start_job(plugin, **params) for _ in range(n)]
    for j in jobs: await m.wait_for_job(j)
    dt = time.perf_counter() - t0
    bad = [j for j in jobs if j.status.value != 'completed']
    if bad: raise RuntimeError(f"{len(bad)} {plugin} jobs did not complete: {bad[0].status.value} {bad[0].error}")
    return n / dt


async def measure_workers(workers: int, kinds: dict, repeat: int) -> dict:
    """For each kind (name -> jobs), the jobs/s of every repetition: {kind: {'manager': [...], 'pool': [...], ...}}.

    One manager and one of each peer, `workers` processes each, serve every kind."""
    m, peers = make_manager(workers), []
    listened = make_manager(workers, event_broadcaster=NoopBroadcaster())  # the same, with every event sent to a broadcaster
    try:
        await m.start(); await listened.start()
        peers = open_peers(workers)
        for mgr in (m, listened): await manager_run(mgr, 'spin', workers * 4, {'ms': 2.0})  # as the peers were warmed
        out = {}
        for kind, n in kinds.items():
            fn, args, plugin, params = KINDS[kind]
            # untimed: the manager learns that these jobs are short (what it sends ahead depends on it)
            await manager_run(m, plugin, min(n, 200), params)
            if kind == 'noop': await manager_run(listened, plugin, min(n, 200), params)
            for p in peers: peer_rate(p, fn, args, min(n, 200))
            runs = {'manager': [], **{p.key: [] for p in peers}}
            order = ['manager'] + peers
            for r in range(repeat):
                for who in order[r % len(order):] + order[:r % len(order)]:
                    if who == 'manager': runs['manager'].append(await manager_run(m, plugin, n, params))
                    # the peers' calls block this loop; the manager has no job then, so nothing of its waits on it
                    else: runs[who.key].append(peer_rate(who, fn, args, n))
                if kind == 'noop':
                    runs.setdefault('manager_batch', []).append(await manager_run(m, plugin, n, params, batch=True))
                    runs.setdefault('manager_events', []).append(await manager_run(listened, plugin, n, params))
            out[kind] = runs
        ran = workers * 4 + (min(kinds['noop'], 200) + repeat * kinds['noop'] if 'noop' in kinds else 0)  # every job it ran
        await listened.shutdown()  # delivers the events still queued
        if listened.event_broadcaster.count < 3 * ran:  # nothing given up: created, started, completed for every job
            raise RuntimeError(f"the broadcaster got {listened.event_broadcaster.count} events for at least {ran} jobs")
        return out
    finally:
        try: close_peers(peers)
        finally: await m.shutdown(); await listened.shutdown()


def cell_result(n: int, workers: int, runs: dict, target_ratio=None) -> dict:
    "One cell of the JSON line from its runs: medians, per-peer rates, ratios (the old keys kept as they were)."
    med = {k: statistics.median(v) for k, v in runs.items()}
    mgr, peers = med['manager'], {k: med.get(k) for k in PEER_KEYS}
    best = fastest(peers)
    return {'jobs': n, 'workers': workers, 'statistic': 'median', 'runs': runs,
            'manager_jobs_per_s': mgr, 'ppe_jobs_per_s': peers['ppe'], 'ratio': mgr / peers['ppe'], 'target_ratio': target_ratio,
            'pool_jobs_per_s': peers['pool'], 'loky_jobs_per_s': peers['loky'], 'peers_jobs_per_s': peers,
            'fastest_peer': best, 'fastest_peer_jobs_per_s': peers[best], 'ratio_vs_fastest': mgr / peers[best],
            'ratio_vs_pool': mgr / peers['pool'],
            'manager_batch_jobs_per_s': med.get('manager_batch'), 'manager_events_jobs_per_s': med.get('manager_events')}


def rate(v) -> str: return 'skipped' if v is None else f"{v:,.0f}"


def main():
    a = parse_args(__doc__)
    sizes = {'noop': 500, 'cpu_1ms': 200} if a.quick else {'noop': 5000, 'cpu_1ms': 2000}
    if loky is None: print(LOKY_SKIPPED)
    results, rows = {}, []
    measured = {w: asyncio.run(measure_workers(w, sizes, a.repeat)) for w in (1, 2)}
    for kind, n in sizes.items():
        for w in (1, 2):
            c = results[f'{kind}_w{w}'] = cell_result(n, w, measured[w][kind], 2.0 if kind == 'noop' else None)
            rows.append([kind, w, n, rate(c['manager_jobs_per_s']), rate(c['pool_jobs_per_s']), rate(c['loky_jobs_per_s']),
                         rate(c['ppe_jobs_per_s']), f"{c['ratio_vs_fastest']:.2f}x ({PEER_SHORT[c['fastest_peer']]})",
                         f"{c['ratio_vs_pool']:.2f}x", f"{c['ratio']:.2f}x",
                         f'>= {TARGET_VS_POOL}x Pool' if kind == 'noop' else '-'])
    table(f'Throughput (jobs/s, median of {a.repeat}, runs interleaved; submit all then wait all)',
          ['jobs', 'workers', 'n', 'JobManager', 'Pool(spawn)', 'loky', 'PPE(spawn)', 'vs fastest peer', 'vs Pool', 'vs PPE', 'target'], rows)

    n1, n2 = results['noop_w1'], results['noop_w2']
    targets = [{'target': f'no-op, {c["workers"]} worker{"s" if c["workers"] > 1 else ""}: JobManager >= {TARGET_VS_POOL}x multiprocessing.Pool',
                'value': c['ratio_vs_pool'], 'limit': TARGET_VS_POOL, 'met': c['ratio_vs_pool'] >= TARGET_VS_POOL,
                'detail': f"{c['ratio_vs_pool']:.2f}x"} for c in (n1, n2)]
    for c in (n1, n2):
        ratio = c['manager_events_jobs_per_s'] / c['manager_jobs_per_s']
        targets.append({'target': f"no-op, {c['workers']} worker{'s' if c['workers'] > 1 else ''}: with an event broadcaster attached >= 0.8x without",
                        'value': ratio, 'limit': 0.8, 'met': ratio >= 0.8,
                        'detail': f"{ratio:.2f}x ({c['manager_events_jobs_per_s']:,.0f} vs {c['manager_jobs_per_s']:,.0f} jobs/s)"})
    targets.append({'target': 'no-op: JobManager with 2 workers >= with 1 worker',
                    'value': n2['manager_jobs_per_s'] / n1['manager_jobs_per_s'], 'limit': 1.0,
                    'met': n2['manager_jobs_per_s'] >= n1['manager_jobs_per_s'],
                    'detail': f"{n2['manager_jobs_per_s']:,.0f} vs {n1['manager_jobs_per_s']:,.0f} jobs/s"})
    print('\nstart_jobs (one call for the batch) beside start_job one by one, no-op jobs, median:')
    for c in (n1, n2):
        print(f"  {c['workers']} worker{'s' if c['workers'] > 1 else ''}: start_jobs {c['manager_batch_jobs_per_s']:,.0f} jobs/s, "
              f"start_job {c['manager_jobs_per_s']:,.0f} jobs/s ({c['manager_batch_jobs_per_s'] / c['manager_jobs_per_s']:.2f}x)")
    print('\nTargets (printed, never asserted):')
    for t in targets: print(target_line(t['target'], t['met'], t['detail']))

    echo_n, pipe_n = (500, 2000) if a.quick else (2000, 20_000)
    bounds = bounds_result(measure_echo(echo_n), measure_pipeline(pipe_n, a.repeat))
    bounds['noop_w1_vs_pipeline'] = n1['manager_jobs_per_s'] / bounds['pipeline_jobs_per_s']
    print_bounds(bounds)
    print(f"  JobManager no-op, 1 worker: {bounds['noop_w1_vs_pipeline']:.1%} of the pipeline's jobs/s")

    results.update({'bounds': bounds, 'targets': targets, 'peers': [k for k in PEER_KEYS if n1[f'{k}_jobs_per_s'] is not None],
                    'loky_version': getattr(loky, '__version__', None), 'statistic': 'median'})
    check_no_leftovers()
    emit('throughput', a, results)


if __name__ == '__main__':
    main()
