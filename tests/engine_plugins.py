"""Worker entry points and plugins used only by the tests (importable by spawned workers)."""
import os, signal, threading, time
from dataclasses import dataclass
from cjm_fasthtml_workers.core.adapters import Plugin
from cjm_fasthtml_workers.managers.base import BaseJob, JobManager
from cjm_fasthtml_workers.demo.plugins import demo_plugins


class ConfigEcho(Plugin):
    "Returns the configuration it was loaded with and how many times it was loaded in this process."
    loads = 0
    def initialize(self, config):
        ConfigEcho.loads += 1
        self.config = config
    def execute(self, **params):
        return {'config': self.config, 'loads': ConfigEcho.loads, 'pid': os.getpid(), 'params': params}


def unpicklable_result(**_):
    return threading.Lock()


def stubborn_sleep(seconds: float = 60, **_):
    "Ignores SIGTERM, so only SIGKILL ends it (a Ray actor runs jobs outside its main thread, where no signal handler can be set)."
    if threading.current_thread() is threading.main_thread(): signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def plugins_for_tests():
    plugins = demo_plugins()
    plugins.add('config-echo', ConfigEcho)
    plugins.add('unpicklable', unpicklable_result)
    plugins.add('stubborn', stubborn_sleep)
    plugins.add('touch', touch)
    return plugins


def broken_entry_point():
    raise RuntimeError("cannot load the model weights")


def touch(path: str, **_):
    "A side effect that shows whether the job ran at all."
    with open(path, 'a') as f: f.write('ran\n')
    return path


def dies_when_idle():
    "A worker entry point whose workers become ready, then die 0.2 s later while idle (a broken install, say)."
    threading.Timer(0.2, os._exit, args=(3,)).start()
    return plugins_for_tests()


def with_child(how: str = 'subprocess', seconds: float = 60, **_):
    "Streams the pid of a child it starts (a `sleep` subprocess, or a forked copy of the worker), then sleeps."
    if how == 'fork':
        child = os.fork()
        if child == 0:
            time.sleep(seconds); os._exit(0)
    else:
        import subprocess
        child = subprocess.Popen(['sleep', str(seconds)]).pid
    yield child
    time.sleep(seconds)


def size(blob: bytes = b'', **_):
    return len(blob)


def worker_pid(**_):
    return os.getpid()


def resident_bytes(**_):
    "This worker's resident memory, in bytes."
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


_held = []

def leak(mb: int = 50, **_):
    "Keeps `mb` megabytes alive in the worker for good (a leaking plugin)."
    _held.append(b'\x01' * (mb * 2**20))
    return len(_held)


def out_of_memory(**_):
    raise MemoryError()


def flood(n: int = 1000, **_):
    "Streams n tiny chunks as fast as it can."
    for i in range(n): yield f"{i % 10}"


def reliability_plugins():
    plugins = plugins_for_tests()
    for name, fn in [('with-child', with_child), ('size', size), ('pid', worker_pid), ('rss', resident_bytes),
                     ('leak', leak), ('oom', out_of_memory), ('flood', flood)]:
        plugins.add(name, fn)
    return plugins


def flaky(path: str, fail_times: int = 1, **_):
    "Fails its first `fail_times` runs (counted in a file), then returns how many runs it took."
    n = (int(open(path).read()) if os.path.exists(path) else 0) + 1
    with open(path, 'w') as f: f.write(str(n))
    if n <= fail_times: raise RuntimeError(f"failure {n}")
    return n


def permanent(**_):
    from cjm_fasthtml_workers.core.worker import PermanentError
    raise PermanentError("this input can never work")


class FlakyPlugin(Plugin):
    "A plugin that says its jobs may be retried twice."
    max_retries, retry_backoff = 2, 0.01
    def execute(self, path: str, fail_times: int = 1, **_): return flaky(path, fail_times)



@dataclass(eq=False)
class Transcript(BaseJob):
    "A job subclass with a field of its own (importable, so a store can rebuild it)."
    filename: str = ''


class TranscriptManager(JobManager):
    def create_job(self, plugin_id, filename='', **kwargs):
        return Transcript(self.new_job_id(), plugin_id, params=kwargs, filename=filename)
    def prepare_execute_request(self, job): return {'text': job.filename}


def store_plugins():
    plugins = reliability_plugins()
    plugins.add('flaky', flaky).add('permanent', permanent).add('flaky-plugin', FlakyPlugin)
    return plugins
