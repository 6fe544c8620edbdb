"""Streaming: chunks/s from a worker into the manager's per-job stream (`stream_job`), and the delay from a
chunk leaving the worker to the stream consumer getting it. When `cjm_fasthtml_workers.web` exists, the
worker -> SSE client delay is measured by sse_latency() (see the note printed otherwise).

- rate, 'stream-words' (demo): one chunk + one progress report per word (2 messages per chunk)
- rate, 'stamps' (bench_plugins): chunks only
- delay, 'stamps' paced 2 ms apart: perf_counter() at the consumer minus the stamp taken in the worker

Run: python bench/streaming.py [--quick] [--repeat N]    Prints a table and one line `JSON {...}`.
"""
import asyncio, importlib.util, time
from _common import parse_args, make_manager, table, emit, summary_ms, check_no_leftovers
from bench_plugins import bench_entry


async def consume(m, plugin, **params):
    "Start a streaming job and read its stream to the end; (chunks, seconds, per-chunk receive times)."
    t0 = time.perf_counter()
    job = await m.start_job(plugin, **params)
    got, clock = [], time.perf_counter
    async for chunk in m.stream_job(job.id): got.append((chunk, clock()))
    dt = time.perf_counter() - t0
    await m.wait_for_job(job.id)
    if job.status.value != 'completed': raise RuntimeError(f"{plugin} job {job.status.value}: {job.error}")
    return got, dt


async def measure(n: int, n_paced: int, repeat: int) -> dict:
    m = make_manager(1, streaming=True, entry_point=bench_entry)
    try:
        await m.start()
        await consume(m, 'stamps', n=100)  # warm-up
        words = stamps = 0.0
        for _ in range(repeat):
            got, dt = await consume(m, 'stream-words', text='w', delay=0, repeat=n)
            if len(got) != n: raise RuntimeError(f"stream-words: {len(got)} chunks, expected {n}")
            words = max(words, n / dt)
            got, dt = await consume(m, 'stamps', n=n)
            if len(got) != n: raise RuntimeError(f"stamps: {len(got)} chunks, expected {n}")
            stamps = max(stamps, n / dt)
        flood = summary_ms([recv - sent for sent, recv in got])  # last flood run: queueing included
        got, _ = await consume(m, 'stamps', n=n_paced, delay=0.002)
        paced = summary_ms([recv - sent for sent, recv in got])
    finally: await m.shutdown()
    return {'chunks': n, 'stream_words_chunks_per_s': words, 'stamps_chunks_per_s': stamps,
            'paced_delay_ms': paced, 'flood_delay_ms': flood, 'paced_chunks': n_paced}


def main():
    a = parse_args(__doc__)
    n, n_paced = (5_000, 200) if a.quick else (100_000, 1000)
    r = asyncio.run(measure(n, n_paced, a.repeat))
    table(f'Streaming worker -> manager stream ({n:,} chunks, best of {a.repeat})', ['plugin', 'chunks/s', 'target'],
          [['stream-words (chunk + progress)', round(r['stream_words_chunks_per_s']), '>= 10,000/s'],
           ['stamps (chunks only)', round(r['stamps_chunks_per_s']), '>= 10,000/s']])
    p, f = r['paced_delay_ms'], r['flood_delay_ms']
    table('Delay from worker yield to stream consumer, ms', ['', 'p50', 'p95', 'p99', 'max'],
          [[f"paced, 1 chunk / 2 ms ({n_paced})", p['p50'], p['p95'], p['p99'], p['max']],
           [f"flood ({n:,} as fast as possible)", f['p50'], f['p95'], f['p99'], f['max']]])
    r['target_chunks_per_s'] = 10_000
    r['web_module'] = importlib.util.find_spec('cjm_fasthtml_workers.web') is not None
    if not r['web_module']:
        print("worker -> SSE client delay: not measured (cjm_fasthtml_workers.web does not exist yet)")
    check_no_leftovers()
    emit('streaming', a, r)


if __name__ == '__main__':
    main()
