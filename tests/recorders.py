"""Integrations that record what the manager tells them, for the tests to check."""
import asyncio, threading, time


class Recorder:
    "An event broadcaster that records (type, data, loop time) for every event."
    def __init__(self): self.events, self._changed = [], None
    async def broadcast(self, event_type, data):
        self.events.append((event_type, data, time.monotonic()))
        if self._changed is not None: self._changed.set()
    def of(self, prefix): return [(t, d) for t, d, _ in self.events if t.startswith(prefix)]
    async def until(self, condition, timeout=30):
        "Wait (woken by each event) until `condition()` holds."
        self._changed = asyncio.Event()
        async def wait():
            while not condition():
                await self._changed.wait(); self._changed.clear()
        await asyncio.wait_for(wait(), timeout)


class ResourceLog:
    def __init__(self): self.calls, self.lock = [], threading.Lock()
    def register_worker(self, pid, worker_type): self._add(('register', pid, worker_type))
    def unregister_worker(self, pid): self._add(('unregister', pid))
    def update_worker_state(self, pid, status=None, job_id=None, plugin_name=None, plugin_id=None,
                            loaded_plugin_resource=None, config=None):
        self._add(('update', pid, status, job_id, plugin_name))
    def _add(self, call):
        with self.lock: self.calls.append(call)

    def pids(self, kind):
        "Pids of the calls of one kind ('register', 'unregister', 'update')."
        with self.lock: return [c[1] for c in self.calls if c[0] == kind]
