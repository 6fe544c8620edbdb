"""App side of the upstream-compatibility tests: a manager subclass written the way upstream's docs write one, the
integrations as upstream's docs and demo shape them, and waiting helpers that work on upstream's manager too.

The tests using this module must also pass, where they only use upstream's API, against upstream's
cjm-fasthtml-workers 0.0.5 itself: nothing here uses this package's own additions unless a test asks for them.
"""
import asyncio, importlib, inspect, os, threading, time, uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional
import pytest

CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')
TERMINAL = ('completed', 'failed', 'cancelled')


def need(module: str):
    "Import a test dependency: skip the test without it, except under CI=true, where a missing one fails it."
    try: return importlib.import_module(module)
    except ImportError as e:
        if CI: pytest.fail(f"{module} is not installed (CI=true: the upstream-compatibility tests must run): {e}")
        pytest.skip(f"{module} is not installed", allow_module_level=True)


def worker_module():
    "The worker-side test module (needs cjm-plugin-system; an import error of this package's own names is a failure)."
    need('cjm_plugin_system')
    import upstream_plugins
    return upstream_plugins


# --- the integrations, shaped as upstream's docs and demo shape them ---

class PluginMeta:
    "Registry metadata as upstream's manager reads it: `.name` (what the worker knows), `.category`, `.is_configured`, `get_unique_id()`."
    def __init__(self, name: str, category: str = 'text', is_configured: bool = True):
        self.name, self.category, self.is_configured = name, category, is_configured
    def get_unique_id(self) -> str: return f"test-{self.name}"


class Registry:
    "A plugin registry keyed by unique id ('test-text'), whose metadata names the worker's plugins ('text')."
    def __init__(self, configs: Optional[Dict[str, Dict[str, Any]]] = None):
        self.metas = [PluginMeta('text'), PluginMeta('shout'), PluginMeta('vision', category='images')]
        self.configs = configs if configs is not None else {
            'test-text': {'prefix': '>', 'model_id': 'text-model-v1'}, 'test-shout': {'model': 'shout-model'}}
    def get_plugins_by_category(self, category) -> list: return [m for m in self.metas if m.category == category]
    def get_plugin(self, plugin_id: str): return next((m for m in self.metas if m.get_unique_id() == plugin_id), None)
    def load_plugin_config(self, plugin_id: str) -> Dict[str, Any]: return dict(self.configs.get(plugin_id, {}))


class ResourceLog:
    """A resource manager that records every call. Past `pid`, `update_worker_state` takes keywords only: the real
    ResourceManager orders these parameters differently from the protocol, so only keyword calls reach both right."""
    def __init__(self): self.calls, self.lock = [], threading.Lock()
    def register_worker(self, pid, worker_type): self._add('register', pid=pid, worker_type=worker_type)
    def unregister_worker(self, pid): self._add('unregister', pid=pid)
    def update_worker_state(self, pid, *, status=None, job_id=None, plugin_name=None, plugin_id=None,
                            loaded_plugin_resource=None, config=None):
        self._add('update', pid=pid, status=status, job_id=job_id, plugin_name=plugin_name, plugin_id=plugin_id,
                  loaded_plugin_resource=loaded_plugin_resource, config=config)
    def _add(self, kind, **call):
        with self.lock: self.calls.append((kind, call))
    def of(self, kind) -> List[Dict[str, Any]]:
        with self.lock: return [c for k, c in self.calls if k == kind]


class Events:
    "An event broadcaster that records what it is sent."
    def __init__(self): self.events = []
    async def broadcast(self, event_type: str, data: Dict[str, Any]) -> None: self.events.append((event_type, dict(data)))
    def types(self) -> List[str]: return [t for t, _ in self.events]
    def of(self, event_type: str) -> List[Dict[str, Any]]: return [d for t, d in self.events if t == event_type]


# --- the manager subclass, as upstream's docs write one ---

@lru_cache(maxsize=None)
def classes():
    "TextJob and TextJobManager (built on first use, so a missing upstream name fails the tests that use them, not the import)."
    from cjm_fasthtml_workers.managers.base import BaseJobManager, BaseJob

    @dataclass
    class TextJob(BaseJob):
        "A job with domain fields of its own, after BaseJob's."
        text: str = ''
        options: Dict[str, Any] = field(default_factory=dict)

    class TextJobManager(BaseJobManager[TextJob]):
        "Runs the 'text' plugins of upstream_plugins in upstream-style worker processes."
        entry_point_name = 'worker_process'

        def __init__(self, worker_config=None, plugin_registry=None, resource_manager=None, event_broadcaster=None,
                     supports_streaming: bool = True):
            super().__init__(worker_type='text', category='text', supports_streaming=supports_streaming,
                             worker_config=worker_config, plugin_registry=plugin_registry or Registry(),
                             resource_manager=resource_manager, event_broadcaster=event_broadcaster)
            self.created = 0

        def create_job(self, plugin_id: str, **kwargs) -> TextJob:
            self.created += 1
            text = kwargs.pop('text', '')
            return TextJob(id=str(uuid.uuid4()), plugin_id=plugin_id, text=text, options=kwargs)

        def get_worker_entry_point(self) -> Callable:
            import upstream_plugins
            return getattr(upstream_plugins, self.entry_point_name)

        def prepare_execute_request(self, job: TextJob) -> Dict[str, Any]:
            return {'text': job.text, **job.options}

        def extract_job_result(self, job: TextJob, result_data: Dict[str, Any]) -> Dict[str, Any]:
            return result_data

    return TextJob, TextJobManager


def make_manager(config: Optional[Dict[str, Any]] = None, cls=None, **kwargs):
    "A TextJobManager (or subclass `cls`) with `WorkerConfig(**config)`; the worker module must be importable."
    worker_module()
    from cjm_fasthtml_workers.core.config import WorkerConfig
    cls = cls or classes()[1]
    return cls(worker_config=WorkerConfig(**(config or {})), **kwargs)


# --- waiting, in a way that works on upstream's manager too ---

async def until(cond: Callable[[], Any], timeout: float = 20.0, what: str = 'a condition'):
    "Poll `cond` until it is truthy, or fail after `timeout` seconds."
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value: return value
        if time.monotonic() > deadline: raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def wait_done(manager, job, timeout: float = 30.0):
    "Wait until `job` has finished: the manager's own wait where it has one, else poll its status."
    waiter = getattr(manager, 'wait_for_job', None)
    if waiter is not None: return await waiter(job.id, timeout)
    await until(lambda: job.status in TERMINAL, timeout, f"job {job.id} to finish")
    return job


async def wait_started(path, timeout: float = 20.0) -> int:
    "Wait until a plugin given `started_file=path` has begun executing; returns the worker's pid."
    await until(lambda: os.path.exists(path) and open(path).read(), timeout, f"the plugin to start ({path})")
    return int(open(path).read())


async def close(manager) -> None:
    "Shut a manager down from async code: awaited where shutdown() returns an awaitable, called where it is plain."
    outcome = manager.shutdown()
    if inspect.isawaitable(outcome): await outcome
