"""The three optional integrations: used when injected, checked at construction, isolated when they fail or hang."""
import asyncio, json, threading, time
import pytest
from conftest import run
from recorders import ResourceLog
from engine_plugins import plugins_for_tests
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager, JobStatus, UnknownPluginError


class Meta:
    def __init__(self, id, name, category): self.id, self.name, self.category = id, name, category


class Registry:
    def __init__(self):
        self.plugins = {'config-echo': Meta('config-echo', 'Config echo', 'test'), 'echo': Meta('echo', 'Echo', 'test'),
                        'vision': Meta('vision', 'Vision', 'images')}
        self.configs = {'config-echo': {'model': 'tiny'}}
    def get_plugins_by_category(self, category): return [p for p in self.plugins.values() if p.category == category]
    def get_plugin(self, plugin_id): return self.plugins.get(plugin_id)
    def load_plugin_config(self, plugin_id): return self.configs.get(plugin_id, {})


class Events:
    def __init__(self): self.events = []
    async def broadcast(self, event_type, data): self.events.append((event_type, data))


def manager(**kwargs):
    config = WorkerConfig(**kwargs.pop('config', {}))
    return JobManager('test', 'test', entry_point=plugins_for_tests, worker_config=config, **kwargs)


def test_registry_decides_plugins_and_supplies_config():
    async def main():
        m = manager(plugin_registry=Registry())
        try:
            job = await m.wait_for_job((await m.start_job('config-echo')).id, 30)
            errors = []
            for pid in ('count-primes', 'vision', 'nope'):
                with pytest.raises(UnknownPluginError) as e: await m.start_job(pid)
                errors.append(str(e.value))
            return job, errors, m.get_plugins(), m.get_plugin_name('echo'), len(m.get_all_jobs())
        finally: await m.shutdown()
    job, errors, plugins, name, held = run(main())
    assert job.result['config'] == {'model': 'tiny'}
    assert "the plugin registry does not have it" in errors[0]  # a worker plugin the registry does not list
    assert "is in category 'images'; this manager runs 'test'" in errors[1]
    assert [p['id'] for p in plugins] == ['config-echo', 'echo'] and name == 'Echo'
    assert held == 1


@pytest.mark.parametrize('failure', ['raises', 'hangs', 'bad-config'])
def test_registry_failures_refuse_the_job_clearly(failure):
    release = threading.Event()
    class Broken(Registry):
        def get_plugin(self, plugin_id):
            if failure == 'raises': raise ConnectionError("registry database is down")
            if failure == 'hangs': release.wait(30)
            return super().get_plugin(plugin_id)
        def load_plugin_config(self, plugin_id): return ['not', 'a', 'dict'] if failure == 'bad-config' else {}
    async def main():
        m = manager(plugin_registry=Broken(), config={'integration_timeout': 0.2})
        try:
            with pytest.raises((RuntimeError, TypeError)) as e: await m.start_job('echo')
            return str(e.value), len(m.get_all_jobs())
        finally:
            release.set()
            await m.shutdown()
    message, held = run(main())
    assert held == 0
    expected = {'raises': "the plugin registry failed to look up 'echo': ConnectionError: registry database is down",
                'hangs': "the plugin registry did not answer within 0.2s for 'echo'",
                'bad-config': "returned a list as the configuration of 'echo'; a dict is required"}[failure]
    assert expected in message


def test_resource_manager_sees_every_worker_and_state():
    log = ResourceLog()
    async def main():
        m = manager(resource_manager=log, config={'max_workers': 1})
        try:
            done = await m.wait_for_job((await m.start_job('echo')).id, 30)
            crash = await m.wait_for_job((await m.start_job('crash', how='kill')).id, 30)
            again = await m.wait_for_job((await m.start_job('echo')).id, 30)
            return done, crash, again
        finally: await m.shutdown()
    done, crash, again = run(main())
    first, second = done.worker_pid, again.worker_pid
    assert first == crash.worker_pid != second
    calls = log.calls
    assert calls[:4] == [('register', first, 'test'), ('update', first, 'idle', None, None),
                         ('update', first, 'running', done.id, 'echo'), ('update', first, 'idle', None, None)]
    assert ('update', first, 'running', crash.id, 'crash') in calls
    assert calls.index(('unregister', first)) < calls.index(('register', second, 'test'))
    assert ('unregister', second) == calls[-1]
    registered = [c[1] for c in calls if c[0] == 'register']
    unregistered = [c[1] for c in calls if c[0] == 'unregister']
    assert sorted(registered) == sorted(unregistered)


def test_broadcaster_gets_every_transition_in_order_as_json():
    events = Events()
    async def main():
        m = manager(event_broadcaster=events, supports_streaming=True, config={'max_workers': 1})
        try:
            ok = await m.start_job('stream-words', text='a b', delay=0, owner='ada')
            bad = await m.start_job('fail')
            gone = await m.start_job('sleep', seconds=30)
            await m.wait_for_job(bad.id, 30)
            await m.cancel_job(gone.id)
            await m.wait_for_job((await m.start_job('echo')).id, 30)
            return ok, bad, gone
        finally: await m.shutdown()
    ok, bad, gone = run(main())
    for _, data in events.events: json.dumps(data)
    for kind, data in events.events:
        assert ('pid' in data) if kind.startswith('test:worker:') else ('job_id' in data)
        assert 'status' in data and data['worker_type'] == 'test'
    of = lambda job: [k for k, d in events.events if d.get('job_id') == job.id]
    ends = lambda kinds: [k for k in kinds if k not in ('test:progress', 'test:chunk')]
    assert ends(of(ok)) == ['test:created', 'test:started', 'test:completed']
    assert {'test:progress', 'test:chunk'} <= set(of(ok)[2:-1])  # between start and end, merged when they arrive together
    assert of(bad) == ['test:created', 'test:started', 'test:failed']
    assert of(gone) == ['test:created', 'test:started', 'test:cancelled']
    kinds = [k for k, _ in events.events]
    assert kinds[0] == 'test:worker:started' and 'test:worker:restarted' in kinds and kinds[-1] == 'test:worker:stopped'
    chunks = [d for k, d in events.events if k == 'test:chunk']
    assert ''.join(d['chunk'] for d in chunks) == 'a b ' and (chunks[0]['seq'], chunks[-1]['last_seq']) == (0, 1)
    assert [d['progress'] for k, d in events.events if k == 'test:progress'][-1] == 1.0
    assert {d['owner'] for k, d in events.events if d.get('job_id') == ok.id} == {'ada'}  # progress and chunks too: a page filters by owner


@pytest.mark.parametrize('which', ['resource_manager', 'event_broadcaster'])
@pytest.mark.parametrize('failure', ['raises', 'hangs'])
def test_failing_integrations_never_fail_jobs_or_block(which, failure):
    release = threading.Event()
    class BadResources(ResourceLog):
        def _add(self, call):
            if failure == 'raises': raise RuntimeError("monitor crashed")
            release.wait(30)
    class BadEvents:
        async def broadcast(self, event_type, data):
            if failure == 'raises': raise RuntimeError("socket closed")
            await asyncio.Event().wait()
    integration = {'resource_manager': BadResources(), 'event_broadcaster': BadEvents()}[which]
    async def main():
        m = manager(config={'max_workers': 2, 'integration_timeout': 0.1, 'shutdown_grace': 2}, **{which: integration})
        try:
            jobs = [await m.start_job('echo', text=str(i)) for i in range(20)]
            crash = await m.start_job('crash', how='exit')
            jobs += [await m.start_job('echo') for _ in range(5)]
            for j in jobs + [crash]: await m.wait_for_job(j.id, 30)
            return jobs, crash
        finally:
            start = time.monotonic()
            await m.shutdown()
            release.set()
            assert time.monotonic() - start < 5
    jobs, crash = run(main())
    assert all(j.status == JobStatus.COMPLETED for j in jobs)
    assert crash.status == JobStatus.FAILED


def test_malformed_integrations_are_rejected_at_construction():
    class SyncEvents:
        def broadcast(self, event_type, data): pass
    class Partial:
        def register_worker(self, pid): pass
    with pytest.raises(TypeError, match=r"event_broadcaster \(SyncEvents\) does not satisfy EventBroadcasterProtocol"):
        manager(event_broadcaster=SyncEvents())
    with pytest.raises(TypeError) as e: manager(resource_manager=Partial())
    assert "missing method `unregister_worker`" in str(e.value) and "register_worker(pid)" in str(e.value)
    with pytest.raises(TypeError, match="missing method `load_plugin_config`"):
        manager(plugin_registry=type('R', (), {'get_plugin': lambda s, i: None, 'get_plugins_by_category': lambda s, c: []})())
    with pytest.raises(TypeError, match="worker_config must be a WorkerConfig"):
        JobManager('t', 't', entry_point=plugins_for_tests, worker_config={'max_workers': 2})


def test_shutdown_is_bounded_when_the_broadcaster_ignores_cancellation():
    async def main():
        release = asyncio.Event()
        class Stubborn:
            async def broadcast(self, event_type, data):
                while not release.is_set():
                    try: await release.wait()
                    except asyncio.CancelledError: pass  # never gives up on its own
        m = manager(event_broadcaster=Stubborn(), config={'integration_timeout': 0.2})
        try: job = await m.wait_for_job((await m.start_job('echo')).id, 30)
        finally:
            start = time.monotonic()
            await asyncio.wait_for(m.shutdown(), 20)
            took = time.monotonic() - start
            release.set()
        return job, took
    job, took = run(main())
    assert job.status == JobStatus.COMPLETED and took < 5, took


def test_a_broadcast_call_past_the_timeout_is_skipped_and_the_rest_still_go_out_in_order():
    from cjm_fasthtml_workers.core.events import EventPump
    async def main():
        got, hang = [], asyncio.Event()
        async def broadcast(event_type, data):
            if data['n'] == 1: await hang.wait()  # never set: only the watchdog ends this call
            got.append(data['n'])
        pump = EventPump(broadcast, timeout=0.05)
        for n in range(5): pump.emit('test:event', {'n': n})
        left = await pump.close(timeout=5)
        return got, left, pump.delivered
    got, left, delivered = run(main())
    assert (got, left, delivered) == ([0, 2, 3, 4], 0, 4)


def test_a_cancel_from_outside_still_ends_the_pump():
    from cjm_fasthtml_workers.core.events import EventPump
    async def main():
        started = asyncio.Event()
        async def broadcast(event_type, data):
            started.set(); await asyncio.Event().wait()
        pump = EventPump(broadcast, timeout=60)
        pump.emit('test:event', {})
        await started.wait()
        pump._task.cancel()
        with pytest.raises(asyncio.CancelledError): await pump._task
    run(main())


def test_a_full_backlog_of_state_events_drops_the_oldest_and_keeps_order():
    from cjm_fasthtml_workers.core.events import EventPump
    async def main():
        got, gate, busy = [], asyncio.Event(), asyncio.Event()
        async def broadcast(event_type, data):
            busy.set(); await gate.wait(); got.append(data['n'])
        pump = EventPump(broadcast, max_events=100, timeout=60)
        pump.emit('test:event', {'n': -1})
        await busy.wait()  # the pump has taken the first event and waits in broadcast
        for n in range(5000): pump.emit('test:event', {'n': n})
        gate.set()
        await pump.close(timeout=10)
        return got, pump.dropped
    got, dropped = run(main())
    assert (got, dropped) == ([-1] + list(range(4900, 5000)), 4900)
