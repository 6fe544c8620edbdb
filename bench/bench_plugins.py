"""Worker entry point for benchmarks: the demo plugins plus `stamps`, a streaming plugin whose chunks are
the time (time.perf_counter(), CLOCK_MONOTONIC: comparable across processes on Linux) they left the worker."""
import time
from cjm_fasthtml_workers.core.adapters import PluginSet
from cjm_fasthtml_workers.demo.plugins import demo_plugins


def stamps(n: int = 1000, delay: float = 0.0, **_):
    "Yield n timestamps, `delay` seconds apart (0: as fast as possible); no progress reports."
    clock, sleep = time.perf_counter, time.sleep
    for _ in range(int(n)):
        if delay: sleep(delay)
        yield clock()


def bench_entry() -> PluginSet:
    "The demo plugins and `stamps`."
    plugins = demo_plugins()
    plugins.add('stamps', stamps, name='Timestamps')
    return plugins
