"""Streaming: chunks/s from a worker into the manager's per-job stream (`stream_job`), and the delay from a
chunk leaving the worker to the stream consumer getting it. When `cjm_fasthtml_workers.web` exists, the
worker -> SSE client delay is measured too (sse_latency(): uvicorn + SSEBroadcaster + sse_route, a raw HTTP client).

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


async def sse_latency(n_paced: int) -> dict:
    """Worker -> SSE client delay: a uvicorn server (same process) streams the manager's events through SSEBroadcaster
    and sse_route; an HTTP client on the same event loop reads /events over TCP and timestamps each bench:chunk (the manager's worker_type is 'bench')."""
    import json, socket, uvicorn
    from fasthtml.common import FastHTML
    from cjm_fasthtml_workers.web.sse import SSEBroadcaster, sse_route
    b = SSEBroadcaster(max_queue=100_000)
    app = FastHTML(); sse_route(app, b, "/events")
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning', lifespan='off'))
    serve = asyncio.ensure_future(server.serve())
    m = make_manager(1, streaming=True, entry_point=bench_entry, event_broadcaster=b)
    delays, clock = [], time.perf_counter
    writer = None
    try:
        while not server.started: await asyncio.sleep(0.01)
        await m.start()
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        writer.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        job = await m.start_job('stamps', n=n_paced, delay=0.002)
        event = None
        while len(delays) < n_paced:
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line: raise RuntimeError("the SSE stream ended")
            line = line.decode().strip()
            if line.startswith('event: '): event = line[7:]
            elif line.startswith('data: ') and event == 'bench:chunk':
                data = json.loads(line[6:])
                if data.get('job_id') == job.id: delays.append(clock() - float(data['chunk']))
        await m.wait_for_job(job.id)
    finally:
        if writer is not None: writer.close()
        await m.shutdown()
        b.close(); server.should_exit = True
        await serve
    return summary_ms(delays)


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
    if r['web_module']:
        r['sse_delay_ms'] = d = asyncio.run(sse_latency(n_paced))
        table('Delay from worker yield to an SSE client (HTTP over loopback), ms', ['', 'p50', 'p95', 'p99', 'max', 'target'],
              [[f"paced, 1 chunk / 2 ms ({n_paced})", d['p50'], d['p95'], d['p99'], d['max'], 'p95 < 50 ms']])
        r['target_sse_p95_ms'] = 50
    else: print("worker -> SSE client delay: not measured (cjm_fasthtml_workers.web does not exist yet)")
    check_no_leftovers()
    emit('streaming', a, r)


if __name__ == '__main__':
    main()
