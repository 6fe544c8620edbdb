"""Upstream cjm-fasthtml-workers 0.0.5's API, as a drop-in superset must offer it: one group of tests per point of the
compatibility issue (1 names, 2 entry points, 3 plugin manager, 4 WorkerConfig, 5 BaseJob, 6 manager surface,
7 shutdown, 8 events, 9 extensions.adapters).

Tests marked `package` use this package's own additions (several workers, priorities, timeouts, ...) with the
upstream shapes, and `later_upstream` ones an upstream module that 0.0.5 does not have (extensions.adapters); the
others use upstream 0.0.5's API only and also pass against upstream itself (`-m "not package and not later_upstream"`).
"""
import asyncio, dataclasses, inspect, json, multiprocessing, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from conftest import run, child_pids, pid_alive
from upstream_app import (need, classes, make_manager, Registry, ResourceLog, Events,
                          until, wait_done, wait_started, close)

TESTS = Path(__file__).parent
package = pytest.mark.package  # uses this package's additions beyond upstream's API
later_upstream = pytest.mark.later_upstream  # upstream API of a release after 0.0.5 (extensions.adapters)


# ---------------------------------------------------------------- 1. every public name imports and works

def test_protocol_enums_have_upstream_members_and_values():
    from cjm_fasthtml_workers.core.protocol import WorkerRequestType, WorkerResponseType
    assert {m.name: m.value for m in WorkerRequestType} == {
        'INIT': 'init', 'EXECUTE': 'execute', 'RELOAD': 'reload', 'UNLOAD': 'unload', 'GET_STATE': 'get_state', 'STOP': 'stop'}
    assert {m.name: m.value for m in WorkerResponseType} == {
        'READY': 'ready', 'RESULT': 'result', 'STREAM_CHUNK': 'stream_chunk', 'RESPONSE': 'response', 'STATE': 'state',
        'ERROR': 'error'}
    assert WorkerRequestType('execute') is WorkerRequestType.EXECUTE


def test_protocol_messages_to_dict_and_from_dict():
    from cjm_fasthtml_workers.core.protocol import (
        WorkerRequestType, WorkerResponseType, WorkerRequest, WorkerResponse, WorkerStreamChunk, WorkerResult)
    request = WorkerRequest(type=WorkerRequestType.EXECUTE, data={'job_id': 'j1', 'plugin_name': 'text', 'text': 'hi'})
    as_dict = request.to_dict()
    assert as_dict == {'type': 'execute', 'job_id': 'j1', 'plugin_name': 'text', 'text': 'hi'}
    assert WorkerRequest.from_dict(as_dict) == request and request.data == {'job_id': 'j1', 'plugin_name': 'text', 'text': 'hi'}
    response = WorkerResponse(type=WorkerResponseType.RESULT, data={'job_id': 'j1', 'status': 'success', 'data': {'x': 1}})
    assert response.to_dict() == {'type': 'result', 'job_id': 'j1', 'status': 'success', 'data': {'x': 1}}
    assert WorkerResponse.from_dict(response.to_dict()) == response
    assert WorkerStreamChunk(job_id='j2', chunk='part', is_final=False, metadata={'index': 1}).to_dict() == {
        'type': 'stream_chunk', 'job_id': 'j2', 'chunk': 'part', 'is_final': False, 'metadata': {'index': 1}}
    assert WorkerStreamChunk('j2', 'end', True).to_dict() == {
        'type': 'stream_chunk', 'job_id': 'j2', 'chunk': 'end', 'is_final': True, 'metadata': {}}
    assert WorkerResult(job_id='j3', status='success', data={'text': 'ok'}).to_dict() == {
        'type': 'result', 'job_id': 'j3', 'status': 'success', 'data': {'text': 'ok'}}
    assert WorkerResult(job_id='j4', status='error', error='bad input').to_dict() == {
        'type': 'result', 'job_id': 'j4', 'status': 'error', 'error': 'bad input'}


def test_adapters_create_simple_adapter_and_default_result_adapter():
    from cjm_fasthtml_workers.core.adapters import create_simple_adapter, default_result_adapter
    calls = []
    class Manager:  # a plugin manager of upstream's shape
        def discover_plugins(self): return [type('Meta', (), {'name': 'p'})()]
        def load_plugin(self, plugin_data, config): calls.append(('load', plugin_data.name, config))
        def execute_plugin(self, plugin_name, **params): return {'ran': plugin_name, **params}
        def execute_plugin_stream(self, plugin_name, **params): yield from ('a', 'b')
        def reload_plugin(self, plugin_name, config=None): calls.append(('reload', plugin_name, config))
        def unload_plugin(self, plugin_name): calls.append(('unload', plugin_name))
        def check_streaming_support(self, plugin_name): return plugin_name == 'p'
    adapter = create_simple_adapter(Manager())
    [meta] = adapter.discover_plugins()
    adapter.load_plugin(meta, {'k': 1}); adapter.reload_plugin('p', {'k': 2}); adapter.reload_plugin('p'); adapter.unload_plugin('p')
    assert calls == [('load', 'p', {'k': 1}), ('reload', 'p', {'k': 2}), ('reload', 'p', None), ('unload', 'p')]
    assert adapter.execute_plugin('p', x=1) == {'ran': 'p', 'x': 1}
    assert list(adapter.execute_plugin_stream('p')) == ['a', 'b']
    assert adapter.check_streaming_support('p') is True and adapter.check_streaming_support('q') is False
    wrapped = create_simple_adapter(Manager(), result_adapter=lambda r: {'wrapped': r})
    assert wrapped.execute_plugin('p') == {'wrapped': {'ran': 'p'}}
    class Result:
        text, metadata = 'Result text', {'source': 'test'}
    assert default_result_adapter({'text': 'Hello', 'metadata': {'k': 'v'}}) == {'text': 'Hello', 'metadata': {'k': 'v'}}
    assert default_result_adapter(Result()) == {'text': 'Result text', 'metadata': {'source': 'test'}}
    assert default_result_adapter('Plain text result') == {'text': 'Plain text result', 'metadata': {}}


def test_worker_base_worker_process_signature():
    from cjm_fasthtml_workers.core.worker import base_worker_process
    params = inspect.signature(base_worker_process).parameters
    assert list(params) == ['request_queue', 'result_queue', 'response_queue', 'plugin_manager_factory',
                            'result_adapter', 'supports_streaming']
    assert params['result_adapter'].default is None and params['supports_streaming'].default is False


def test_managers_base_jobtype_and_generic_manager():
    from typing import TypeVar
    from cjm_fasthtml_workers.managers.base import JobType, BaseJob, BaseJobManager
    from cjm_fasthtml_workers.core.config import RestartPolicy, WorkerConfig
    from cjm_fasthtml_workers.extensions.protocols import (  # noqa: F401 (importable is the point)
        PluginRegistryProtocol, ResourceManagerProtocol, EventBroadcasterProtocol)
    from cjm_fasthtml_workers.core.protocol import PluginManagerAdapter  # noqa: F401
    assert isinstance(JobType, TypeVar) and JobType.__bound__ is BaseJob
    assert {m.name: m.value for m in RestartPolicy} == {
        'NEVER': 'never', 'ON_CANCELLATION': 'on_cancellation', 'ALWAYS': 'always', 'BACKOFF': 'backoff'}
    init = list(inspect.signature(BaseJobManager.__init__).parameters)
    assert init[:8] == ['self', 'worker_type', 'category', 'supports_streaming', 'worker_config', 'plugin_registry',
                        'resource_manager', 'event_broadcaster']

    @dataclasses.dataclass
    class MyJob(BaseJob):
        input_text: str = ''

    class MyJobManager(BaseJobManager[MyJob]):  # upstream's documented usage example
        def create_job(self, plugin_id, **kwargs): return MyJob(id='j1', plugin_id=plugin_id, input_text=kwargs.get('input_text', ''))
        def get_worker_entry_point(self): return None
        def prepare_execute_request(self, job): return {'text': job.input_text}
        def extract_job_result(self, job, result_data): return result_data

    manager = MyJobManager(worker_type="text_processing", category="processing", worker_config=WorkerConfig())
    try:
        assert manager.worker_type == 'text_processing' and manager.category == 'processing'
        assert manager.create_job('p', input_text='Hello').input_text == 'Hello'
    finally:
        outcome = manager.shutdown()  # nothing was started: plain code may shut it down
        if inspect.isawaitable(outcome): run(outcome)


# ---------------------------------------------------------------- 2. both worker entry point shapes

def test_process_target_entry_point_runs_jobs_and_maps_plugin_ids_to_names():
    async def main():
        m = make_manager()
        try:
            text = await wait_done(m, await m.start_job('test-text', text='hello'))
            shout = await wait_done(m, await m.start_job('test-shout', text='hello'))
            return text, shout
        finally: await close(m)
    text, shout = run(main())
    assert text.status == 'completed' and shout.status == 'completed'
    # the registry's metadata .name is what the worker's PluginManager knows; its config is the registry's, by unique id
    assert text.result['text'] == '>hello' and text.result['metadata']['plugin'] == 'text'
    assert text.result['metadata']['config'] == {'prefix': '>', 'model_id': 'text-model-v1'}
    assert shout.result['text'] == 'HELLO' and shout.result['metadata']['plugin'] == 'shout'
    assert set(text.result) == {'text', 'metadata'}  # an object result with .text/.metadata becomes a dict


@package
def test_process_target_runs_on_several_workers_with_cancel(tmp_path):
    async def main():
        m = make_manager({'max_workers': 2})
        try:
            a = await m.start_job('test-text', text='a', mode='slow', seconds=60, started_file=str(tmp_path / 'a'))
            b = await m.start_job('test-text', text='b', mode='slow', seconds=60, started_file=str(tmp_path / 'b'))
            pids = {await wait_started(tmp_path / 'a'), await wait_started(tmp_path / 'b')}  # both run at once
            cancelled = await m.cancel_job(a.id)
            assert b.status == 'running'
            assert await m.cancel_job(b.id)
            after = [await wait_done(m, await m.start_job('test-text', text=str(i))) for i in range(4)]
            return a, b, pids, cancelled, after
        finally: await close(m)
    a, b, pids, cancelled, after = run(main())
    assert len(pids) == 2 and {a.worker_pid, b.worker_pid} == pids
    assert cancelled is True and a.status == 'cancelled' and b.status == 'cancelled'
    assert all(j.status == 'completed' for j in after) and not pids & {j.worker_pid for j in after}


@package
def test_process_target_priorities(tmp_path):
    async def main():
        m = make_manager({'max_workers': 1})
        try:
            blocker = await m.start_job('test-text', mode='slow', seconds=60, started_file=str(tmp_path / 'blocker'))
            await wait_started(tmp_path / 'blocker')
            low = [await m.start_job('test-text', text=f'low{i}') for i in range(2)]
            high = await m.start_job('test-text', text='high', priority=5)
            await m.cancel_job(blocker.id)
            for j in low + [high]: await wait_done(m, j)
            return low, high
        finally: await close(m)
    low, high = run(main())
    assert all(j.status == 'completed' for j in low + [high])
    assert high.started_at < low[0].started_at < low[1].started_at


@package
def test_process_target_job_timeout_and_crash_recovery():
    async def main():
        m = make_manager({'max_workers': 1, 'job_timeout': 0.5})
        try:
            slow = await wait_done(m, await m.start_job('test-text', mode='slow', seconds=60))
            killed = await wait_done(m, await m.start_job('test-text', mode='kill'))
            exited = await wait_done(m, await m.start_job('test-text', mode='exit'))
            ok = await wait_done(m, await m.start_job('test-text', text='still works'))
            return slow, killed, exited, ok
        finally: await close(m)
    slow, killed, exited, ok = run(main())
    assert slow.status == 'failed' and 'timeout' in slow.error.lower()
    assert killed.status == 'failed' and exited.status == 'failed' and killed.worker_pid != exited.worker_pid
    assert ok.status == 'completed' and ok.result['text'] == '>still works'
    assert len({slow.worker_pid, killed.worker_pid, exited.worker_pid, ok.worker_pid}) == 4


@package
def test_process_target_streams_chunks():
    async def main():
        m = make_manager()
        try:
            job = await wait_done(m, await m.start_job('test-text', text='one two three', stream=True))
            return job
        finally: await close(m)
    job = run(main())
    assert job.status == 'completed'
    assert [c for c in job.chunks if c] == ['>one ', 'two ', 'three ']


@package
def test_process_target_standby_worker_takes_over_at_once():
    async def main():
        m = make_manager({'max_workers': 1, 'standby_workers': 1})
        try:
            await wait_done(m, await m.start_job('test-text'))
            spare = [w['pid'] for w in m.get_workers() if w['standby']]
            crashed = await wait_done(m, await m.start_job('test-text', mode='kill'))
            after = await wait_done(m, await m.start_job('test-text', text='next'))
            return spare, crashed, after
        finally: await close(m)
    spare, crashed, after = run(main())
    assert crashed.status == 'failed' and after.status == 'completed'
    assert len(spare) == 1 and after.worker_pid == spare[0]


@package
def test_process_target_sends_short_jobs_ahead(tmp_path):
    async def main():
        m = make_manager({'max_workers': 1, 'prefetch': 8, 'prefetch_max_runtime': 0.1})
        try:
            for _ in range(5): await wait_done(m, await m.start_job('test-text'))  # the plugin is known to be short
            head = await m.start_job('test-text', mode='slow', seconds=0.5, started_file=str(tmp_path / 'head'))
            await wait_started(tmp_path / 'head')
            ahead = [await m.start_job('test-text', text=f'q{i}') for i in range(4)]
            sent = m.get_workers()[0]['sent_ahead']
            statuses = [str(j.status) for j in ahead]
            for j in ahead: await wait_done(m, j)
            return head, ahead, sent, statuses
        finally: await close(m)
    head, ahead, sent, statuses = run(main())
    assert sent == 4 and statuses == ['pending'] * 4
    assert [j.result['text'] for j in ahead] == ['>q0', '>q1', '>q2', '>q3']
    assert all(j.worker_pid == head.worker_pid for j in ahead)


@package
def test_zero_argument_factory_entry_point_still_runs():
    from engine_plugins import plugins_for_tests
    from cjm_fasthtml_workers.managers.base import JobManager
    async def main():
        m = JobManager('test', 'test', entry_point=plugins_for_tests)
        try: return await m.wait_for_job((await m.start_job('echo', text='hi')).id, 30)
        finally: await m.shutdown()
    job = run(main())
    assert job.status == 'completed' and job.result['text'] == 'hi'


# ---------------------------------------------------------------- 3. upstream's plugin manager protocol (real PluginManager)

def test_real_plugin_manager_load_execute_stream_reload_unload():
    async def main():
        m = make_manager()
        try:
            first = await wait_done(m, await m.start_job('test-text', text='x'))
            streamed = await wait_done(m, await m.start_job('test-text', text='p q', stream=True))
            failed = await wait_done(m, await m.start_job('test-text', mode='fail'))
            reloaded = await m.reload_plugin('text', {'prefix': 'B:'})
            second = await wait_done(m, await m.start_job('test-text', text='x'))
            unloaded = await m.unload_plugin('shout')
            return first, streamed, failed, reloaded, second, unloaded
        finally: await close(m)
    first, streamed, failed, reloaded, second, unloaded = run(main())
    assert first.result['text'] == '>x' and first.result['metadata']['loads'] == 1  # loaded once, with the registry's config
    assert streamed.status == 'completed'
    assert failed.status == 'failed' and failed.error  # a plugin exception fails the job, not the worker
    assert reloaded is True and unloaded is True
    assert second.result['text'] == 'B:x' and second.result['metadata']['config'] == {'prefix': 'B:'}
    assert second.result['metadata']['loads'] == 2 and second.worker_pid == first.worker_pid == failed.worker_pid


@package
def test_real_plugin_manager_worker_crash_fails_the_job_and_a_new_worker_loads_the_plugin():
    async def main():
        m = make_manager()
        try:
            first = await wait_done(m, await m.start_job('test-text', text='a'))
            crashed = await wait_done(m, await m.start_job('test-text', mode='exit'))
            after = await wait_done(m, await m.start_job('test-text', text='b'))
            return first, crashed, after
        finally: await close(m)
    first, crashed, after = run(main())
    assert first.status == 'completed'
    assert crashed.status == 'failed' and crashed.error
    assert after.status == 'completed' and after.result['text'] == '>b' and after.worker_pid != first.worker_pid
    assert after.result['metadata']['loads'] == 1  # the new worker's PluginManager loaded the plugin afresh


def test_custom_result_adapter_shapes_the_result():
    _, base = classes()
    class Tagged(base):
        entry_point_name = 'worker_process_tagged'
    async def main():
        m = make_manager(cls=Tagged)
        try: return await wait_done(m, await m.start_job('test-shout', text='hey'))
        finally: await close(m)
    job = run(main())
    assert job.status == 'completed' and job.result == {'tagged': 'HEY', 'plugin': 'shout'}


# ---------------------------------------------------------------- 4. WorkerConfig with upstream's field names

UPSTREAM_CONFIG = dict(request_queue_size=0, result_queue_size=100, response_queue_size=10, max_restart_attempts=3,
                       restart_backoff_base_seconds=2.0, restart_backoff_max_seconds=9.0, max_workers=1,
                       worker_start_timeout_seconds=12.0, reload_timeout_seconds=7.0, unload_timeout_seconds=3.0,
                       shutdown_timeout_seconds=4.0, result_monitor_poll_interval_seconds=0.5)


def test_worker_config_accepts_upstream_fields():
    from cjm_fasthtml_workers.core.config import WorkerConfig, RestartPolicy
    config = WorkerConfig(restart_policy=RestartPolicy.BACKOFF, **UPSTREAM_CONFIG)
    for name, value in UPSTREAM_CONFIG.items(): assert getattr(config, name) == value, name
    assert config.restart_policy is RestartPolicy.BACKOFF
    with pytest.raises(ValueError): WorkerConfig(restart_backoff_base_seconds=-1.0)
    with pytest.raises(ValueError): WorkerConfig(max_workers=0)
    with pytest.raises(ValueError): WorkerConfig(max_restart_attempts=-1)


@package
def test_worker_config_upstream_fields_keep_their_meaning():
    from cjm_fasthtml_workers.core.config import WorkerConfig, RestartPolicy, restart_delay
    config = WorkerConfig(restart_policy=RestartPolicy.BACKOFF, max_workers=2, restart_backoff_base_seconds=2.0,
                          restart_backoff_max_seconds=5.0)
    assert [restart_delay(config, n, False) for n in (1, 2, 3)] == [2.0, 4.0, 5.0]


@package
def test_request_queue_size_bounds_pending_jobs_and_zero_means_none(tmp_path):
    from cjm_fasthtml_workers.managers.base import QueueFullError
    async def main(size, extra):
        m = make_manager({'max_workers': 1, 'request_queue_size': size})
        try:
            await m.start_job('test-text', mode='slow', seconds=60, started_file=str(tmp_path / f'b{size}'))
            await wait_started(tmp_path / f'b{size}')
            pending = [await m.start_job('test-text') for _ in range(extra)]
            refused = None
            try: await m.start_job('test-text')
            except QueueFullError as e: refused = e
            return pending, refused, len(m.get_all_jobs())
        finally: await close(m)
    pending, refused, held = run(main(2, 2))
    assert refused is not None and held == 3
    pending, refused, held = run(main(0, 30))
    assert refused is None and held == 32


@package
def test_timeouts_in_upstream_fields_bound_start_reload_unload_and_shutdown(tmp_path):
    from cjm_fasthtml_workers.managers.base import NoWorkersError
    _, base = classes()
    class NeverReady(base):
        entry_point_name = 'worker_process_never_ready'
    async def never_ready():
        m = make_manager({'worker_start_timeout_seconds': 0.5}, cls=NeverReady)
        start = time.monotonic()
        try:
            with pytest.raises(NoWorkersError): await m.start_job('test-text')
            return time.monotonic() - start
        finally: await close(m)
    assert run(never_ready()) < 5
    async def commands():
        m = make_manager({'reload_timeout_seconds': 0.5, 'unload_timeout_seconds': 0.5, 'max_workers': 1,
                           'shutdown_timeout_seconds': 0.5})
        try:
            await wait_done(m, await m.start_job('test-text'))
            await m.reload_plugin('shout', {'cleanup_seconds': 60})
            t0 = time.monotonic(); unloaded = await m.unload_plugin('shout'); t_unload = time.monotonic() - t0
            t0 = time.monotonic(); reloaded = await m.reload_plugin('text', {'init_seconds': 60}); t_reload = time.monotonic() - t0
            return unloaded, t_unload, reloaded, t_reload
        finally: await close(m)
    unloaded, t_unload, reloaded, t_reload = run(commands())
    assert unloaded is False and t_unload < 5 and reloaded is False and t_reload < 5
    async def stubborn():
        m = make_manager({'shutdown_timeout_seconds': 0.3})
        try:
            await m.start_job('test-text', mode='stubborn', seconds=60, started_file=str(tmp_path / 'stubborn'))
            await wait_started(tmp_path / 'stubborn')
        except BaseException:
            await close(m); raise
        t0 = time.monotonic(); await close(m)
        return time.monotonic() - t0
    assert run(stubborn()) < 4


@package
def test_result_queue_sizes_and_poll_interval_bound_and_poll_nothing():
    async def main():
        m = make_manager({'result_queue_size': 1, 'response_queue_size': 1, 'result_monitor_poll_interval_seconds': 30})
        try:
            t0 = time.monotonic()
            job = await wait_done(m, await m.start_job('test-text', text=' '.join(['w'] * 200), stream=True))
            reloaded = await m.reload_plugin('text', {'prefix': ''})
            return job, reloaded, time.monotonic() - t0
        finally: await close(m)
    job, reloaded, took = run(main())
    assert job.status == 'completed' and len([c for c in job.chunks if c]) == 200 and reloaded is True and took < 10


# ---------------------------------------------------------------- 5. BaseJob: upstream's fields first, status as a string

UPSTREAM_JOB_FIELDS = ['id', 'plugin_id', 'status', 'created_at', 'started_at', 'completed_at', 'result', 'error',
                       'metadata', 'worker_pid']


def test_base_job_fields_in_upstream_order_and_positional_construction():
    from cjm_fasthtml_workers.managers.base import BaseJob
    assert [f.name for f in dataclasses.fields(BaseJob)][:10] == UPSTREAM_JOB_FIELDS
    job = BaseJob('j1', 'p1', 'running')
    assert (job.id, job.plugin_id, job.status) == ('j1', 'p1', 'running')
    fresh = BaseJob(id='j2', plugin_id='p2')
    assert fresh.status == 'pending' and fresh.started_at is None and fresh.completed_at is None
    assert fresh.result is None and fresh.error is None and fresh.worker_pid is None and fresh.created_at is not None
    fresh.metadata['k'] = 1
    assert BaseJob(id='j3', plugin_id='p3').metadata == {}  # a fresh dict per job


def test_job_status_from_a_plain_string_reads_as_one():
    from cjm_fasthtml_workers.managers.base import BaseJob
    for value in ('pending', 'running', 'completed', 'failed', 'cancelled'):
        job = BaseJob(id='j', plugin_id='p', status=value)
        assert job.status == value and str(job.status) == value and f"{job.status}" == value
        assert '%s' % job.status == value and json.dumps({'s': job.status}) == json.dumps({'s': value})
    assert str(BaseJob(id='j', plugin_id='p').status) == 'pending'


def test_job_subclasses_as_upstream_users_write_them():
    from cjm_fasthtml_workers.managers.base import BaseJob
    @dataclasses.dataclass
    class TextProcessingJob(BaseJob):  # the shape of upstream's demo job
        text: str = ""
        plugin_name: str = ""
    job = TextProcessingJob(id='j', plugin_id='mock-text', text='hello', plugin_name='text')
    assert (job.text, job.plugin_name, str(job.status)) == ('hello', 'text', 'pending')
    assert [f.name for f in dataclasses.fields(job)][:10] == UPSTREAM_JOB_FIELDS


def test_finished_job_status_formats_as_plain_value():
    async def main():
        m = make_manager()
        try:
            ok = await wait_done(m, await m.start_job('test-text'))
            bad = await wait_done(m, await m.start_job('test-text', mode='fail'))
            return ok, bad, sorted(m.get_all_jobs(), key=lambda j: j.created_at)
        finally: await close(m)
    ok, bad, ordered = run(main())
    assert str(ok.status) == 'completed' and f"{ok.status}" == 'completed' and ok.status == 'completed'
    assert f"{bad.status}" == 'failed' and [j.id for j in ordered] == [ok.id, bad.id]


# ---------------------------------------------------------------- 6. the manager's upstream surface

def test_validate_resources_hook_is_awaited_before_a_job_exists_and_refuses_with_a_message():
    _, base = classes()
    class Validating(base):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.validated = []
        async def _validate_resources(self, plugin_id, plugin_config):
            await asyncio.sleep(0)  # really awaited
            self.validated.append((plugin_id, plugin_config, len(self.get_all_jobs()), self.created))
            return "GPU memory is in use" if plugin_id == 'test-shout' else None
    async def main():
        m = make_manager(cls=Validating)
        try:
            with pytest.raises(RuntimeError, match="GPU memory is in use"): await m.start_job('test-shout', text='x')
            refused = (len(m.get_all_jobs()), m.created)
            ok = await wait_done(m, await m.start_job('test-text', text='y'))
            return m.validated, refused, ok
        finally: await close(m)
    validated, refused, ok = run(main())
    assert refused == (0, 0)  # no job was made for the refused start
    assert validated == [('test-shout', {'model': 'shout-model'}, 0, 0),
                         ('test-text', {'prefix': '>', 'model_id': 'text-model-v1'}, 0, 0)]
    assert ok.status == 'completed'


def test_on_job_completed_hook_after_a_successful_result_only(tmp_path):
    _, base = classes()
    class Hooked(base):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.completed = []
        def _on_job_completed(self, job_id):
            job = self.get_job(job_id)
            self.completed.append((job_id, str(job.status), job.result, self.get_job_result(job_id)))
    async def main(tmp):
        m = make_manager(cls=Hooked)
        try:
            ok = await wait_done(m, await m.start_job('test-text', text='done'))
            await wait_done(m, await m.start_job('test-text', mode='fail'))  # no hook for a failure
            gone = await m.start_job('test-text', mode='slow', seconds=60, started_file=str(tmp / 'gone'))
            await wait_started(tmp / 'gone')
            await m.cancel_job(gone.id)
            last = await wait_done(m, await m.start_job('test-text', text='last'))
            await until(lambda: len(m.completed) >= 2, 10, 'the completion hook')
            return m.completed, ok, last
        finally: await close(m)
    completed, ok, last = run(main(tmp_path))
    assert completed == [(ok.id, 'completed', ok.result, {'status': 'success', 'data': ok.result}),
                         (last.id, 'completed', last.result, {'status': 'success', 'data': last.result})]


def test_extract_plugin_resource_identifier_default_and_override_reach_the_resource_manager():
    _, base = classes()
    m = make_manager()
    try:
        extract = m._extract_plugin_resource_identifier
        assert extract({'resource_id': 'r', 'model_id': 'm', 'model': 'x', 'model_name': 'n'}) == 'r'
        assert extract({'model_id': 'm', 'model': 'x', 'model_name': 'n'}) == 'm'
        assert extract({'model': 'x', 'model_name': 'n'}) == 'x' and extract({'model_name': 'n'}) == 'n'
        assert extract({}) == 'unknown'
    finally:
        outcome = m.shutdown()
        if inspect.isawaitable(outcome): run(outcome)
    class Custom(base):
        def _extract_plugin_resource_identifier(self, config): return f"resource:{config.get('model_id')}"
    log = ResourceLog()
    async def main():
        m = make_manager(cls=Custom, resource_manager=log)
        try: return await wait_done(m, await m.start_job('test-text', text='r'))
        finally: await close(m)
    job = run(main())
    running = [c for c in log.of('update') if c['status'] == 'running']
    assert running and running[0] == {
        'pid': job.worker_pid, 'status': 'running', 'job_id': job.id, 'plugin_name': 'text', 'plugin_id': 'test-text',
        'loaded_plugin_resource': 'resource:text-model-v1', 'config': {'prefix': '>', 'model_id': 'text-model-v1'}}


def test_get_job_result_shapes_and_cancel_of_unknown_or_finished_jobs(tmp_path):
    async def main():
        m = make_manager()
        try:
            ok = await wait_done(m, await m.start_job('test-text', text='r'))
            bad = await wait_done(m, await m.start_job('test-text', mode='fail'))
            slow = await m.start_job('test-text', mode='slow', seconds=60, started_file=str(tmp_path / 'slow'))
            await wait_started(tmp_path / 'slow')
            while_running = m.get_job_result(slow.id)
            cancelled = await m.cancel_job(slow.id)
            unknown_cancel = await m.cancel_job('no-such-job')
            finished_cancel = await m.cancel_job(ok.id)
            shapes = {j.id: m.get_job_result(j.id) for j in (ok, bad, slow)}
            return ok, bad, slow, while_running, cancelled, unknown_cancel, finished_cancel, shapes, m.get_job_result('nope'), m
        finally: await close(m)
    ok, bad, slow, while_running, cancelled, unknown_cancel, finished_cancel, shapes, unknown, m = run(main())
    assert shapes[ok.id] == {'status': 'success', 'data': ok.result} and ok.result['text'] == '>r'
    assert shapes[bad.id] == {'status': 'error', 'error': bad.error} and isinstance(bad.error, str) and bad.error
    assert shapes[slow.id] == {'status': 'cancelled'}
    assert while_running is None and unknown is None
    assert cancelled is True and unknown_cancel is False and finished_cancel is False
    assert m.jobs[ok.id] is ok and m.results[ok.id] == shapes[ok.id] and m.results[slow.id] == {'status': 'cancelled'}


def test_reload_and_unload_by_name_return_bools():
    async def main():
        m = make_manager()
        try:
            await wait_done(m, await m.start_job('test-text'))
            outcomes = {'reload': await m.reload_plugin('text', {'prefix': 'N:'})}
            reloaded = await wait_done(m, await m.start_job('test-text', text='x'))
            outcomes['unload'] = await m.unload_plugin('shout')
            outcomes['unload unknown'] = await m.unload_plugin('no-such-plugin')
            outcomes['reload unknown'] = await m.reload_plugin('no-such-plugin', {})
            return outcomes, reloaded
        finally: await close(m)
    outcomes, reloaded = run(main())
    assert outcomes == {'reload': True, 'unload': True, 'unload unknown': False, 'reload unknown': False}
    assert reloaded.result['text'] == 'N:x'


@package
def test_reload_and_unload_by_plugin_id_return_bools():
    async def main():
        m = make_manager({'max_workers': 2})
        try:
            await wait_done(m, await m.start_job('test-text'))
            outcomes = {'reload': await m.reload_plugin('test-text', {'prefix': 'I:'})}
            after = [await m.start_job('test-text', text=str(i)) for i in range(4)]
            for j in after: await wait_done(m, j)
            outcomes['unload'] = await m.unload_plugin('test-shout')
            return outcomes, after
        finally: await close(m)
    outcomes, after = run(main())
    assert outcomes == {'reload': True, 'unload': True}
    assert [j.result['text'] for j in after] == ['I:0', 'I:1', 'I:2', 'I:3']  # every worker has the new config


def test_broadcast_event_streaming_support_and_read_access():
    events = Events()
    async def main():
        m = make_manager({'max_workers': 1}, event_broadcaster=events)
        plain = make_manager(supports_streaming=False)
        try:
            await m.broadcast_event('custom:thing', {'x': 1})
            return (m.check_streaming_support('test-text'), plain.check_streaming_support('test-text'), m.worker_config,
                    m.jobs, m.results, m.worker_type, m.category, m.supports_streaming, m.plugin_registry,
                    m.event_broadcaster, m.resource_manager)
        finally:
            await close(m); await close(plain)
    streams, plain_streams, config, jobs, results, *attrs = run(main())
    assert streams is True and plain_streams is False
    from cjm_fasthtml_workers.core.config import WorkerConfig
    assert isinstance(config, WorkerConfig) and config.max_workers == 1
    assert jobs == {} and results == {}
    worker_type, category, supports, registry, broadcaster, resources = attrs
    assert (worker_type, category, supports, broadcaster, resources) == ('text', 'text', True, events, None)
    assert isinstance(registry, Registry)
    assert [(t, d['x']) for t, d in events.events if t == 'custom:thing'] == [('custom:thing', 1)]


def test_resource_manager_is_called_with_upstream_keywords_and_states():
    log = ResourceLog()
    async def main():
        m = make_manager({'max_workers': 1}, resource_manager=log)
        try:
            ok = await wait_done(m, await m.start_job('test-text', text='a'))
            def idle_after_running():
                updates = [c for c in log.of('update') if c['pid'] == ok.worker_pid]
                states = [c['status'] for c in updates]
                return 'running' in states and 'idle' in states[states.index('running'):]
            await until(idle_after_running, 10, 'the idle update after the job')
            return ok
        finally: await close(m)
    ok = run(main())
    registered = log.of('register')
    assert {'pid': ok.worker_pid, 'worker_type': 'text'} in registered
    running = [c for c in log.of('update') if c['status'] == 'running']
    assert running[0] == {'pid': ok.worker_pid, 'status': 'running', 'job_id': ok.id, 'plugin_name': 'text',
                          'plugin_id': 'test-text', 'loaded_plugin_resource': 'text-model-v1',
                          'config': {'prefix': '>', 'model_id': 'text-model-v1'}}
    kinds = [k for k, c in log.calls if c['pid'] == ok.worker_pid]
    assert kinds.index('register') < kinds.index('update') and kinds[-1] == 'unregister'
    assert sorted(c['pid'] for c in registered) == sorted(c['pid'] for c in log.of('unregister'))


# ---------------------------------------------------------------- 7. shutdown from both worlds

def _assert_no_children(before=frozenset()):
    assert multiprocessing.active_children() == []
    assert child_pids() - set(before) == set()


@package
def test_shutdown_awaited_in_async_code():
    async def main():
        m = make_manager({'max_workers': 1})
        job = await wait_done(m, await m.start_job('test-text'))
        outcome = m.shutdown()
        assert inspect.isawaitable(outcome), "shutdown() in async code returns something to await"
        await outcome
        _assert_no_children()
        return job
    assert run(main()).status == 'completed'


def test_shutdown_from_plain_code_after_the_loop_ended():
    log = ResourceLog()
    async def main():
        m = make_manager({'max_workers': 1}, resource_manager=log)
        job = await wait_done(m, await m.start_job('test-text'))
        return m, job
    m, job = run(main())
    assert pid_alive(job.worker_pid)
    outcome = m.shutdown()  # plain synchronous code: finished when it returns
    assert not inspect.iscoroutine(outcome), "a coroutine returned to plain code would never run"
    _assert_no_children()
    assert not pid_alive(job.worker_pid)
    assert sorted(c['pid'] for c in log.of('register')) == sorted(c['pid'] for c in log.of('unregister'))
    m.shutdown()  # a second call is harmless


def test_shutdown_from_a_sync_handler_inside_the_loop():
    async def main():
        m = make_manager({'max_workers': 1})
        job = await wait_done(m, await m.start_job('test-text'))
        def on_shutdown():  # a synchronous shutdown handler, called on the loop's thread
            m.shutdown()
        on_shutdown()
        _assert_no_children()
        return job
    assert run(main()).status == 'completed'


def test_shutdown_from_an_atexit_hook_leaves_no_process(tmp_path):
    need('cjm_plugin_system')
    script = tmp_path / 'app.py'
    script.write_text(textwrap.dedent(f"""
        import asyncio, atexit, json, multiprocessing, os, sys
        sys.path.insert(0, {str(TESTS)!r})
        from upstream_app import make_manager, wait_done
        from conftest import child_pids

        async def main():
            m = make_manager({{'max_workers': 1}})
            job = await wait_done(m, await m.start_job('test-text', text='bye'))
            return m, job

        if __name__ == '__main__':
            m, job = asyncio.run(main())
            def hook():
                m.shutdown()
                alive = sorted(child_pids())
                print(json.dumps({{'worker': job.worker_pid, 'status': str(job.status), 'alive_after_shutdown': alive}}), flush=True)
            atexit.register(hook)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['status'] == 'completed' and report['alive_after_shutdown'] == []
    assert not pid_alive(report['worker'])


# ---------------------------------------------------------------- 8. events

def test_upstream_started_and_cancelled_events(tmp_path):
    events = Events()
    async def main():
        m = make_manager(event_broadcaster=events)
        try:
            job = await m.start_job('test-text', mode='slow', seconds=60, started_file=str(tmp_path / 'job'))
            await wait_started(tmp_path / 'job')
            await m.cancel_job(job.id)
            return job
        finally: await close(m)
    job = run(main())
    started = [d for d in events.of('text:started') if d.get('job_id') == job.id]
    cancelled = [d for d in events.of('text:cancelled') if d.get('job_id') == job.id]
    assert len(started) == 1 and started[0]['plugin_id'] == 'test-text'
    assert len(cancelled) == 1


@package
def test_every_event_follows_the_worker_type_naming_scheme_and_carries_worker_type():
    from engine_plugins import plugins_for_tests
    from cjm_fasthtml_workers.managers.base import JobManager
    events = Events()
    async def main():
        m = JobManager('tx', 'tx', entry_point=plugins_for_tests, event_broadcaster=events, supports_streaming=True)
        try:
            ok = await m.start_job('stream-words', text='a b', delay=0)
            bad = await m.start_job('fail')
            crash = await m.start_job('crash', how='exit')
            for j in (ok, bad, crash): await m.wait_for_job(j.id, 30)
            gone = await m.start_job('sleep', seconds=30)
            await until(lambda: gone.status == 'running', 20, 'the sleep job to run')
            await m.cancel_job(gone.id)
            return ok, bad, crash, gone
        finally: await m.shutdown()
    ok, bad, crash, gone = run(main())
    job_events = {'tx:created', 'tx:started', 'tx:progress', 'tx:chunk', 'tx:completed', 'tx:failed', 'tx:cancelled'}
    worker_events = {'tx:worker:started', 'tx:worker:restarted', 'tx:worker:stopped'}
    assert set(events.types()) == job_events | worker_events
    assert all(d.get('worker_type') == 'tx' for _, d in events.events)
    of = lambda job: [t for t, d in events.events if d.get('job_id') == job.id and t != 'tx:progress']
    collapsed = [t for i, t in enumerate(of(ok)) if not (t == 'tx:chunk' and of(ok)[i - 1] == 'tx:chunk')]
    assert collapsed == ['tx:created', 'tx:started', 'tx:chunk', 'tx:completed']  # chunks that arrive together are merged
    assert ''.join(d['chunk'] for t, d in events.events if t == 'tx:chunk' and d['job_id'] == ok.id) == 'a b '
    assert of(bad) == ['tx:created', 'tx:started', 'tx:failed'] and of(crash) == ['tx:created', 'tx:started', 'tx:failed']
    assert of(gone) == ['tx:created', 'tx:started', 'tx:cancelled']
    assert all(d['plugin_id'] == 'sleep' for d in events.of('tx:started') if d['job_id'] == gone.id)


# ---------------------------------------------------------------- 9. extensions.adapters

class StandInResourceManager:
    "cjm-fasthtml-resources' ResourceManager as documented: these signatures, state kept per pid (a stand-in; the package is not on the index)."
    def __init__(self, gpu_memory_threshold_percent: float = 45.0):
        self.gpu_memory_threshold_percent, self.workers, self.by_job = gpu_memory_threshold_percent, {}, {}

    def register_worker(self, pid, worker_type, job_id=None, plugin_id=None, plugin_name=None,
                        loaded_plugin_resource=None, config=None, plugin_instance=None):
        self.workers[pid] = dict(pid=pid, worker_type=worker_type, job_id=job_id, plugin_id=plugin_id, plugin_name=plugin_name,
                                 loaded_plugin_resource=loaded_plugin_resource, config=config, status='idle')
        if job_id: self.by_job[job_id] = pid

    def update_worker_state(self, pid, job_id=None, plugin_id=None, plugin_name=None, loaded_plugin_resource=None,
                            config=None, status=None):
        worker = self.workers.get(pid)
        if worker is None: return  # an unknown pid is ignored
        for key, value in dict(job_id=job_id, plugin_id=plugin_id, plugin_name=plugin_name, config=config, status=status,
                               loaded_plugin_resource=loaded_plugin_resource).items():
            if value is not None: worker[key] = value
        if job_id: self.by_job[job_id] = pid

    def unregister_worker(self, pid):
        worker = self.workers.pop(pid, None)
        if worker and worker['job_id']: self.by_job.pop(worker['job_id'], None)

    def get_worker_by_pid(self, pid): return self.workers.get(pid)
    def get_worker_by_job(self, job_id): return self.workers.get(self.by_job.get(job_id))
    def get_all_workers(self): return list(self.workers.values())


@later_upstream
def test_resource_manager_adapter_drives_a_resource_manager(tmp_path):
    from cjm_fasthtml_workers.extensions.adapters import ResourceManagerAdapter
    rm = StandInResourceManager(gpu_memory_threshold_percent=45.0)
    async def main():
        m = make_manager({'max_workers': 1}, resource_manager=ResourceManagerAdapter(rm))
        try:
            job = await m.start_job('test-text', mode='slow', seconds=60, started_file=str(tmp_path / 'job'))
            pid = await wait_started(tmp_path / 'job')
            await until(lambda: (rm.get_worker_by_job(job.id) or {}).get('status') == 'running', 10, 'the running state')
            running = dict(rm.get_worker_by_pid(pid))
            await m.cancel_job(job.id)
            ok = await wait_done(m, await m.start_job('test-text', text='k'))
            await until(lambda: (rm.get_worker_by_pid(ok.worker_pid) or {}).get('status') == 'idle', 10, 'the idle state')
            return pid, running, ok
        finally: await close(m)
    pid, running, ok = run(main())
    assert running['worker_type'] == 'text' and running['plugin_name'] == 'text' and running['plugin_id'] == 'test-text'
    assert running['loaded_plugin_resource'] == 'text-model-v1' and running['config'] == {'prefix': '>', 'model_id': 'text-model-v1'}
    assert pid not in rm.workers and rm.get_all_workers() == []  # every worker unregistered, the cancelled one first


@later_upstream
def test_sse_broadcaster_adapter_with_the_real_sse_manager():
    need('cjm_fasthtml_sse')
    from cjm_fasthtml_sse.core import SSEBroadcastManager
    from cjm_fasthtml_workers.extensions.adapters import SSEBroadcasterAdapter
    async def main():
        sse = SSEBroadcastManager()
        connection = await sse.register_connection()
        m = make_manager(event_broadcaster=SSEBroadcasterAdapter(sse))
        try:
            job = await wait_done(m, await m.start_job('test-text', text='sse'))
            await m.broadcast_event('text:custom', {'n': 1})
        finally: await close(m)
        received = []
        while not connection.empty(): received.append(connection.get_nowait())
        return job, received, sse.get_history()
    job, received, history = run(main())
    assert all(set(msg) == {'type', 'timestamp', 'data'} for msg in received)
    started = [msg['data'] for msg in received if msg['type'] == 'text:started']
    assert started and started[0]['job_id'] == job.id and started[0]['plugin_id'] == 'test-text'
    assert {'type': 'text:custom', 'data': {'n': 1}} in [{'type': h['type'], 'data': h['data']} for h in history]
