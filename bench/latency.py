"""Latency: start_job -> completion of one no-op job on a warm 1-worker pool, awaited with wait_for_job (no polling),
over sequential jobs; against its peers with 1 worker each in the same run: multiprocessing.Pool (spawn)
apply_async().get(), loky submit().result() (when installed) and ProcessPoolExecutor (spawn) submit().result(),
and against the bound: one raw socketpair echo round trip to a spawn child (bench/bounds.py).

Run: python bench/latency.py [--quick] [--repeat N]   (1,000 sequential jobs per run; --quick 200)
Every run starts fresh pools; each statistic reported is the median over the runs.
Prints tables and one line `JSON {...}`.
"""
import asyncio, statistics, time
from _common import (parse_args, make_manager, open_peers, close_peers, fastest, target_line, table, emit, summary_ms,
                     check_no_leftovers, noop, loky, PEER_KEYS, PEER_SHORT, LOKY_SKIPPED)
from bounds import EchoChild, echo_summary, measure_pipeline, bounds_result, print_bounds

TARGET_P50_VS_ECHO = 3.0  # JobManager p50 <= 3x the socketpair echo p50
TARGET_P99_VS_POOL = 1.0  # JobManager p99 <= multiprocessing.Pool's p99
STATS = ('p50', 'p95', 'p99', 'mean', 'max')


async def measure(n: int, block: int = 50) -> dict:
    """Seconds per job (per round trip for 'echo') of n sequential jobs on each: {'manager': [...], 'pool': [...], ..., 'echo': [...]},
    and whether the echo child last ran on this process's CPU.

    Everything is warm and alive at once, and blocks of `block` jobs take turns, so background load hits all alike."""
    m, peers, echo = make_manager(1), [], None
    try:
        await m.start()
        peers = open_peers(1)
        echo = EchoChild()
        for _ in range(50):  # warm-up: imports, plugin load, allocator, the echo child coming up
            j = await m.start_job('noop'); await m.wait_for_job(j.id)
            for p in peers: p.result(p.submit(noop, ()))
            echo.round_trip()
        out, clock = {'manager': [], **{p.key: [] for p in peers}, 'echo': []}, time.perf_counter
        mgr = out['manager']
        while len(mgr) < n:
            k = min(block, n - len(mgr))
            for _ in range(k):
                t0 = clock()
                j = await m.start_job('noop')
                await m.wait_for_job(j.id)
                mgr.append(clock() - t0)
                if j.status.value != 'completed': raise RuntimeError(f"job {j.id} {j.status.value}: {j.error}")
            for p in peers:
                submit, result, xs = p.submit, p.result, out[p.key]
                for _ in range(k):
                    t0 = clock()
                    result(submit(noop, ()))
                    xs.append(clock() - t0)
            out['echo'] += [echo.round_trip() for _ in range(k)]
        return out, echo.same_cpu()
    finally:
        try:
            if echo is not None: echo.close()
        finally:
            try: close_peers(peers)
            finally: await m.shutdown()


def median_summary(summaries: list) -> dict:
    "Each statistic's median over the runs."
    out = {q: statistics.median(s[q] for s in summaries) for q in STATS}
    out['n'] = summaries[0]['n']
    return out


def main():
    a = parse_args(__doc__)
    n = 200 if a.quick else 1000
    if loky is None: print(LOKY_SKIPPED)
    runs = []
    for _ in range(a.repeat):
        samples, same_cpu = asyncio.run(measure(n))
        runs.append({k: (echo_summary(v, same_cpu) if k == 'echo' else summary_ms(v)) for k, v in samples.items()})
    med = {k: median_summary([r[k] for r in runs]) for k in runs[0]}
    med['echo']['message_bytes'] = runs[0]['echo']['message_bytes']
    same = sum(r['echo']['same_cpu'] for r in runs)
    med['echo']['same_cpu'] = same == len(runs) if same in (0, len(runs)) else f'{same} of {len(runs)} runs'

    mgr, echo = med['manager'], med['echo']
    peers = {k: med.get(k) for k in PEER_KEYS}
    best = fastest({k: v and v['p50'] for k, v in peers.items()}, higher_is_better=False)
    ratio = {q: mgr[q] / peers['ppe'][q] for q in ('p50', 'p95', 'p99')}
    ratio_best = {q: mgr[q] / peers[best][q] for q in ('p50', 'p95', 'p99')}

    def row(label, s): return [label] + [f"{s[q]:.3f}" for q in ('p50', 'p95', 'p99', 'max')]
    rows = [row('JobManager (start_job + wait_for_job)', mgr),
            row('multiprocessing.Pool(1, spawn) apply_async().get()', peers['pool']),
            row('loky(1) submit().result()', peers['loky']) if peers['loky'] else ['loky: skipped (not installed)', '', '', '', ''],
            row('PPE(1, spawn) submit().result()', peers['ppe']),
            row('bound: socketpair echo round trip', echo),
            [f'JobManager / fastest peer ({PEER_SHORT[best]})'] + [f"{ratio_best[q]:.2f}x" for q in ('p50', 'p95', 'p99')] + [''],
            ['JobManager / PPE'] + [f"{ratio[q]:.2f}x" for q in ('p50', 'p95', 'p99')] + [''],
            ['JobManager / echo', f"{mgr['p50'] / echo['p50']:.2f}x", '', f"{mgr['p99'] / echo['p99']:.2f}x", ''],
            ['target', f'<= {TARGET_P50_VS_ECHO:g}x echo', '', "<= Pool's", '']]
    table(f'Latency of one no-op job on 1 worker, ms ({n:,} sequential jobs per run, median of {a.repeat} runs, blocks of 50 alternated)',
          ['', 'p50', 'p95', 'p99', 'max'], rows)

    p50_vs_echo, p99_vs_pool = mgr['p50'] / echo['p50'], mgr['p99'] / peers['pool']['p99']
    targets = [{'target': f'JobManager p50 <= {TARGET_P50_VS_ECHO:g}x the socketpair echo p50', 'value': p50_vs_echo,
                'limit': TARGET_P50_VS_ECHO, 'met': p50_vs_echo <= TARGET_P50_VS_ECHO,
                'detail': f"{mgr['p50']:.3f} ms vs {TARGET_P50_VS_ECHO:g} x {echo['p50']:.3f} ms ({p50_vs_echo:.2f}x)"},
               {'target': "JobManager p99 <= multiprocessing.Pool's p99", 'value': p99_vs_pool,
                'limit': TARGET_P99_VS_POOL, 'met': p99_vs_pool <= TARGET_P99_VS_POOL,
                'detail': f"{mgr['p99']:.3f} ms vs {peers['pool']['p99']:.3f} ms ({p99_vs_pool:.2f}x)"}]
    print('\nTargets (printed, never asserted):')
    for t in targets: print(target_line(t['target'], t['met'], t['detail']))

    bounds = bounds_result(echo, measure_pipeline(2000 if a.quick else 20_000, a.repeat), latency_p50_ms=mgr['p50'])
    print_bounds(bounds)

    check_no_leftovers()
    emit('latency', a, {'jobs': n, 'statistic': 'median', 'manager_ms': mgr, 'ppe_ms': peers['ppe'], 'ratio': ratio,
                        'pool_ms': peers['pool'], 'loky_ms': peers['loky'], 'peers_ms': peers,
                        'fastest_peer': best, 'ratio_vs_fastest': ratio_best, 'bounds': bounds, 'targets': targets,
                        'all_runs': [{f'{k}_ms': v for k, v in r.items()} for r in runs],
                        'target': {'p50_ratio': 2.0, 'p99_ratio': 5.0, 'p50_vs_echo': TARGET_P50_VS_ECHO, 'p99_vs_pool': TARGET_P99_VS_POOL},
                        'loky_version': getattr(loky, '__version__', None)})


if __name__ == '__main__':
    main()
