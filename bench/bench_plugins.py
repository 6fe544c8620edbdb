"""Worker entry point for benchmarks: the demo plugins plus `stamps`, a streaming plugin whose chunks are
the time (time.perf_counter(), CLOCK_MONOTONIC: comparable across processes on Linux) they left the worker,
and `hold`, a job that keeps its worker busy for exactly as long as the benchmark wants."""
import socket, time
from cjm_fasthtml_workers.core.adapters import PluginSet
from cjm_fasthtml_workers.demo.plugins import demo_plugins


def stamps(n: int = 1000, delay: float = 0.0, **_):
    "Yield n timestamps, `delay` seconds apart (0: as fast as possible); no progress reports."
    clock, sleep = time.perf_counter, time.sleep
    for _ in range(int(n)):
        if delay: sleep(delay)
        yield clock()


def hold(address: str, **_) -> None:
    "Connect to the benchmark's Unix socket at `address`, then block until the benchmark closes its end."
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(address)  # the benchmark sees the connection: this worker is inside the job now
        s.recv(1)  # returns b'' on close: released by an event, not by a timer


def bench_entry() -> PluginSet:
    "The demo plugins, `stamps` and `hold`."
    plugins = demo_plugins()
    plugins.add('stamps', stamps, name='Timestamps')
    plugins.add('hold', hold, name='Hold the worker')
    return plugins
