"""Physical bounds, measured in the same run as the benchmarks that print them.

- echo: one small message to a child process over a `socket.socketpair` and back, nothing else. No job
  system that hands work to another process over a socket can answer one job faster than this.
- pipeline: the least work any such job system does per job. Requests shaped like a job request are
  pickled and length-framed, sent 64 to a batch with 2 batches in flight; the child unpickles each and
  answers with a framed, pickled reply (one write per read); the parent unpickles the replies.
  jobs/s here is what one worker process could turn around with no engine at all around it.

On a 2-core VM a round trip costs ~4x more when the two processes sit on different CPUs (waking the
other, idle vCPU) than on the same one, and the scheduler chooses; so the echo figures record whether
parent and child last ran on the same CPU, and latency.py measures the echo interleaved with its jobs.

Both children are started with the spawn start method (as the manager's workers are) and are reaped:
closing our end of the socketpair ends the child's loop, then it is joined.
"""
import multiprocessing, pickle, socket, statistics, struct, time
from _common import summary_ms

ECHO_BYTES = 64
PIPELINE_BATCH, PIPELINE_IN_FLIGHT = 64, 2
_FRAME = struct.Struct('!I')
_PROTO = pickle.HIGHEST_PROTOCOL


def _echo_child(sock: socket.socket) -> None:
    "Send back whatever arrives until the parent closes its end."
    with sock:
        while data := sock.recv(65536): sock.sendall(data)


def _frames(buf: bytearray):
    "The complete length-framed messages at the start of buf, and how many bytes they take."
    out, pos, end = [], 0, len(buf)
    view = memoryview(buf)
    while end - pos >= 4:
        (size,) = _FRAME.unpack_from(buf, pos)
        if end - pos - 4 < size: break
        out.append(view[pos + 4:pos + 4 + size]); pos += 4 + size
    return out, pos


def _pipeline_child(sock: socket.socket) -> None:
    "Answer every framed, pickled request with a framed, pickled reply; all replies to one read go in one write."
    loads, dumps, pack, buf = pickle.loads, pickle.dumps, _FRAME.pack, bytearray()
    with sock:
        while data := sock.recv(1 << 16):
            buf += data
            msgs, used = _frames(buf)
            out = []
            for m in msgs:
                req_id, job_id, *_ = loads(m)
                reply = dumps((req_id, job_id, None), _PROTO)
                out += (pack(len(reply)), reply)
            for m in msgs: m.release()  # a bytearray cannot be resized while a view of it is alive
            del buf[:used]
            if out: sock.sendall(b''.join(out))


class Child:
    "A spawn child process serving the other end of a socketpair; `with` reaps it."

    def __init__(self, target):
        self.sock, theirs = socket.socketpair()
        self.proc = multiprocessing.get_context('spawn').Process(target=target, args=(theirs,), daemon=True)
        try: self.proc.start()
        finally: theirs.close()  # the child has its own copy; ours would keep the pair open after the child exits

    def close(self) -> None:
        self.sock.close()  # EOF ends the child's loop
        self.proc.join(10)
        if self.proc.is_alive(): self.proc.kill(); self.proc.join()

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()


class EchoChild(Child):
    "The echo child, one timed round trip at a time (latency.py alternates these with the pools' jobs)."

    def __init__(self):
        super().__init__(_echo_child)
        self._msg, self._buf = b'x' * ECHO_BYTES, bytearray(ECHO_BYTES)

    def round_trip(self) -> float:
        "Seconds for one message to the child and back."
        s, view, want, clock = self.sock, memoryview(self._buf), ECHO_BYTES, time.perf_counter
        t0 = clock()
        s.sendall(self._msg)
        got = 0
        while got < want:
            k = s.recv_into(view[got:])
            if not k: raise RuntimeError('the echo child went away')
            got += k
        return clock() - t0

    def same_cpu(self) -> bool:
        "Whether this process and the child last ran on the same CPU (field 39 of /proc/<pid>/stat)."
        def cpu(pid):
            with open(f'/proc/{pid}/stat') as f: return int(f.read().rsplit(')', 1)[1].split()[36])
        return cpu('self') == cpu(self.proc.pid)


def pipeline_rate(child: Child, n: int, batch: int = PIPELINE_BATCH, in_flight: int = PIPELINE_IN_FLIGHT) -> float:
    "jobs/s for n request/reply pairs through the pipeline child, `in_flight` batches of `batch` outstanding."
    sock, dumps, loads, pack = child.sock, pickle.dumps, pickle.loads, _FRAME.pack
    params, config = dumps({}, _PROTO), {}

    def send(first: int, count: int) -> None:
        parts = []
        for i in range(first, first + count):
            req = dumps((i, f'job-{i}', 'noop', params, config, False), _PROTO)
            parts += (pack(len(req)), req)
        sock.sendall(b''.join(parts))

    t0 = time.perf_counter()
    sent = done = 0
    buf = bytearray()
    while done < n:
        # a new batch goes out as soon as a whole batch's worth of replies is back
        while sent < n and sent - done <= batch * (in_flight - 1):
            k = min(batch, n - sent); send(sent, k); sent += k
        data = sock.recv(1 << 16)
        if not data: raise RuntimeError('the pipeline child went away')
        buf += data
        msgs, used = _frames(buf)
        for m in msgs:
            req_id = loads(m)[0]
            if req_id != done: raise RuntimeError(f'pipeline reply {req_id} out of order (expected {done})')
            done += 1
            m.release()
        del buf[:used]
    return n / (time.perf_counter() - t0)


def echo_summary(rtts, same_cpu: bool) -> dict:
    "The echo figures kept in the JSON line: milliseconds, from round-trip times in seconds."
    return {**summary_ms(rtts), 'message_bytes': ECHO_BYTES, 'same_cpu': same_cpu}


def measure_pipeline(n: int, repeat: int) -> dict:
    "Median jobs/s of `repeat` pipeline runs of n jobs on one child."
    with Child(_pipeline_child) as child:
        pipeline_rate(child, PIPELINE_BATCH * PIPELINE_IN_FLIGHT * 4)  # warm-up; also waits until the child is up
        runs = [pipeline_rate(child, n) for _ in range(repeat)]
    return {'jobs': n, 'batch': PIPELINE_BATCH, 'in_flight': PIPELINE_IN_FLIGHT, 'runs': runs,
            'jobs_per_s': statistics.median(runs)}


def measure_echo(n: int, warm: int = 100) -> dict:
    "n timed echo round trips on one child, after `warm` untimed ones."
    with EchoChild() as echo:
        for _ in range(warm): echo.round_trip()
        rtts = [echo.round_trip() for _ in range(n)]
        return echo_summary(rtts, echo.same_cpu())


def bounds_result(echo: dict, pipeline: dict, latency_p50_ms=None) -> dict:
    "The `bounds` object of the JSON line (the same shape in throughput.py and latency.py)."
    return {'echo_rtt_ms': echo, 'echo_rtt_p50_ms': echo['p50'], 'echo_rtt_p99_ms': echo['p99'],
            'pipeline': pipeline, 'pipeline_jobs_per_s': pipeline['jobs_per_s'],
            'latency_p50_vs_echo': None if latency_p50_ms is None else latency_p50_ms / echo['p50']}


def print_bounds(b: dict) -> None:
    "The bounds, in two lines under the tables."
    e, p = b['echo_rtt_ms'], b['pipeline']
    print(f"\nBounds measured in this run (spawn child over socket.socketpair):")
    where = {True: 'on the same CPU', False: 'on different CPUs'}.get(e['same_cpu'], f"on the same CPU in {e['same_cpu']}")
    print(f"  echo round trip of {e['message_bytes']} bytes, {e['n']:,} times: p50 {e['p50']:.3f} ms, p99 {e['p99']:.3f} ms"
          f" (parent and child last ran {where})")
    print(f"  pickled request/reply pipeline ({p['batch']} per batch, {p['in_flight']} batches in flight, {p['jobs']:,} jobs, "
          f"median of {len(p['runs'])}): {p['jobs_per_s']:,.0f} jobs/s")
