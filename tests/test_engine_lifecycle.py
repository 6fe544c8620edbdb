"""Job lifecycle, queueing, priorities, streaming, retention and refused requests."""
import asyncio, json, threading
import pytest
from conftest import run
from engine_plugins import plugins_for_tests
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import (JobManager, JobStatus, QueueFullError,
                                                ManagerClosedError, BaseJob)

TERMINAL = {'completed', 'failed', 'cancelled'}


def manager(backend, **config):
    "A manager on the tests' plugins, its workers hosted by `backend` (conftest's `backend` fixture: processes, then Ray actors)."
    streaming = config.pop('streaming', False)
    return JobManager('test', 'test', entry_point=plugins_for_tests, supports_streaming=streaming,
                      worker_config=WorkerConfig(**config), worker_backend=backend.make())


def statuses(job): return [s for s, _ in job.transitions]


def test_every_lifecycle_path(backend):
    async def main():
        m = manager(backend, max_workers=1)
        try:
            done = await m.wait_for_job((await m.start_job('echo', text='x')).id, 30)
            failed = await m.wait_for_job((await m.start_job('fail')).id, 30)
            running = await m.start_job('sleep', seconds=60)
            pending = await m.start_job('echo')
            assert (running.status, pending.status) == (JobStatus.RUNNING, JobStatus.PENDING)
            assert await m.cancel_job(pending.id)
            assert await m.cancel_job(running.id)
            after = await m.wait_for_job((await m.start_job('echo', text='after')).id, 30)
            return done, failed, running, pending, after
        finally: await m.shutdown()
    done, failed, running, pending, after = run(main())
    assert statuses(done) == ['pending', 'running', 'completed']
    assert statuses(failed) == ['pending', 'running', 'failed']
    assert statuses(running) == ['pending', 'running', 'cancelled']
    assert statuses(pending) == ['pending', 'cancelled']
    assert statuses(after) == ['pending', 'running', 'completed']
    for job in (done, failed, running, pending, after):
        times = [t for _, t in job.transitions]
        assert times == sorted(times) and all(t.tzinfo is not None for t in times)
        assert job.completed_at == times[-1]
    assert failed.error == 'RuntimeError: this plugin always fails'
    assert pending.started_at is None and pending.worker_pid is None


def test_priority_order_and_fifo_within_priority(backend):
    async def main():
        m = manager(backend, max_workers=1)
        try:
            blocker = await m.start_job('sleep', seconds=60)
            jobs = [await m.start_job('echo', priority=p, text=str(i)) for i, p in enumerate([0, 5, 0, 5, 1])]
            await m.cancel_job(blocker.id)
            for j in jobs: await m.wait_for_job(j.id, 30)
            return sorted(jobs, key=lambda j: j.started_at)
        finally: await m.shutdown()
    order = run(main())
    assert [j.result['text'] for j in order] == ['1', '3', '4', '0', '2']


def test_streaming_chunks_arrive_while_running_and_in_order(backend):
    async def main():
        m = manager(backend, streaming=True)
        try:
            job = await m.start_job('stream-words', text=' '.join(f'w{i}' for i in range(30)), delay=0.005)
            seen, status_at_first = [], None
            async for chunk in m.stream_job(job.id):
                if not seen: status_at_first = job.status
                seen.append(chunk)
            await m.wait_for_job(job.id, 30)
            return job, seen, status_at_first
        finally: await m.shutdown()
    job, seen, status_at_first = run(main())
    assert status_at_first == JobStatus.RUNNING
    assert seen == [f'w{i} ' for i in range(30)]
    assert job.result == ''.join(seen) and job.streamed
    assert job.chunks == [], "a completed stream keeps its output once, in result"
    assert job.progress == 1.0


def test_refused_requests_create_no_job(backend):
    async def main():
        m = manager(backend, max_workers=1, max_queue_size=2)
        try:
            errors = {}
            for name, call in {
                'unknown': lambda: m.start_job('does-not-exist'),
                'lock': lambda: m.start_job('echo', lock=threading.Lock()),
                'lambda': lambda: m.start_job('echo', fn=lambda: 1),
                'priority': lambda: m.start_job('echo', priority=1.5),
                'plugin_id': lambda: m.start_job(''),
            }.items():
                with pytest.raises((ValueError, TypeError)) as e: await call()
                errors[name] = str(e.value)
            blocker = await m.start_job('sleep', seconds=60)
            queued = [await m.start_job('echo') for _ in range(2)]
            with pytest.raises(QueueFullError, match=r"2 jobs are already pending \(max_queue_size=2\)"): await m.start_job('echo')
            held = len(m.get_all_jobs())
            await m.cancel_job(blocker.id)
            return errors, held
        finally: await m.shutdown()
    errors, held = run(main())
    assert "unknown plugin 'does-not-exist'" in errors['unknown'] and "available: [" in errors['unknown']
    assert "parameter 'lock'" in errors['lock'] and "not picklable" in errors['lock']
    assert "parameter 'fn'" in errors['lambda']
    assert "priority must be an integer" in errors['priority']
    assert "plugin_id must be a non-empty string" in errors['plugin_id']
    assert held == 3


def test_unpicklable_result_fails_the_job_not_the_worker(backend):
    async def main():
        m = manager(backend)
        try:
            bad = await m.wait_for_job((await m.start_job('unpicklable')).id, 30)
            good = await m.wait_for_job((await m.start_job('echo', text='ok')).id, 30)
            return bad, good
        finally: await m.shutdown()
    bad, good = run(main())
    assert bad.status == JobStatus.FAILED and "cannot be sent to the manager" in bad.error
    assert good.status == JobStatus.COMPLETED and good.worker_pid == bad.worker_pid


def test_history_retention_keeps_memory_bounded(backend):
    async def main():
        m = manager(backend, max_workers=2, max_history=10)
        try:
            jobs = [await m.start_job('noop') for _ in range(60)]
            for j in jobs: await m.wait_for_job(j.id, 30) if m.get_job(j.id) else None
            return m, jobs
        finally: await m.shutdown()
    m, jobs = run(main())
    held = m.get_all_jobs()
    assert len(held) == 10
    latest = sorted(jobs, key=lambda j: j.completed_at)[-10:]
    assert {j.id for j in held} == {j.id for j in latest}
    assert m.get_job_result(jobs[0].id) is None and m.get_job(jobs[0].id) is None  # forgotten under retention
    assert m.get_job_result(latest[-1].id) == {'status': 'success', 'data': None}


def test_history_max_age_and_clear_completed(backend):
    async def main():
        m = manager(backend, history_max_age=0.0)
        try:
            job = await m.wait_for_job((await m.start_job('noop')).id, 30)
            return m, job
        finally: await m.shutdown()
    m, job = run(main())
    assert m.get_job(job.id) is None
    async def second():
        m = manager(backend)
        try:
            for _ in range(3): await m.wait_for_job((await m.start_job('noop')).id, 30)
            return m.clear_completed_jobs(), len(m.get_all_jobs())
        finally: await m.shutdown()
    assert run(second()) == (3, 0)


def test_wait_for_job_timeout_and_unknown_job(backend):
    async def main():
        m = manager(backend)
        try:
            job = await m.start_job('sleep', seconds=60)
            with pytest.raises(TimeoutError, match="did not finish within 0.05s"): await m.wait_for_job(job.id, 0.05)
            with pytest.raises(KeyError, match="no job 'nope'"): await m.wait_for_job('nope')
            assert await m.cancel_job('nope') is False  # an unknown job is not cancelled (as cjm-fasthtml-workers 0.0.5 answered)
        finally: await m.shutdown()
        return job
    job = run(main())
    assert job.status == JobStatus.CANCELLED and job.error == 'the job manager shut down'


def test_reload_and_unload_plugin_with_new_config(backend):
    async def main():
        m = manager(backend, max_workers=1)
        try:
            first = await m.wait_for_job((await m.start_job('config-echo')).id, 30)
            reloaded = await m.reload_plugin('config-echo', {'model': 'large'})
            second = await m.wait_for_job((await m.start_job('config-echo')).id, 30)
            unloaded = await m.unload_plugin('config-echo')
            third = await m.wait_for_job((await m.start_job('config-echo')).id, 30)
            with pytest.raises(TypeError, match="config must be a dict"): await m.reload_plugin('config-echo', 'large')
            unknown = await m.reload_plugin('no-such-plugin'), await m.unload_plugin('no-such-plugin')
            by_name = await m.reload_plugin('Count primes')  # the name the workers report works too
            return first.result, reloaded, second.result, unloaded, third.result, unknown, by_name
        finally: await m.shutdown()
    first, reloaded, second, unloaded, third, unknown, by_name = run(main())
    assert first['config'] == {} and first['loads'] == 1
    assert reloaded is True and unloaded is True and by_name is True and unknown == (False, False)
    assert second['config'] == {'model': 'large'} and second['loads'] == 2
    assert third['config'] == {'model': 'large'} and third['loads'] == 3
    assert first['pid'] == second['pid'] == third['pid']


def test_custom_subclass_contract(backend):
    class TranscriptionJob(BaseJob):
        pass
    class TranscriptionManager(JobManager):
        def create_job(self, plugin_id, **kwargs):
            return TranscriptionJob(self.new_job_id(), plugin_id, params=kwargs, metadata={'source': 'upload'})
        def prepare_execute_request(self, job): return {'text': job.params['audio'].upper()}
        def extract_job_result(self, job, result_data): return result_data['text'] + '!'
    async def main():
        m = TranscriptionManager('transcription', 'test', entry_point=plugins_for_tests, worker_backend=backend.make())
        try: return await m.wait_for_job((await m.start_job('echo', audio='hello')).id, 30)
        finally: await m.shutdown()
    job = run(main())
    assert isinstance(job, TranscriptionJob) and job.result == 'HELLO!' and job.metadata == {'source': 'upload'}


def test_extract_job_result_error_fails_job_cleanly(backend):
    class Picky(JobManager):
        def extract_job_result(self, job, result_data): raise ValueError("unexpected shape")
    async def main():
        m = Picky('t', 't', entry_point=plugins_for_tests, worker_backend=backend.make())
        try: return await m.wait_for_job((await m.start_job('echo')).id, 30)
        finally: await m.shutdown()
    job = run(main())
    assert job.status == JobStatus.FAILED and job.error == "extract_job_result failed: ValueError: unexpected shape"


def test_job_to_dict_is_json_serialisable(backend):
    async def main():
        m = manager(backend)
        try: return await m.wait_for_job((await m.start_job('echo')).id, 30)
        finally: await m.shutdown()
    d = run(main()).to_dict()
    assert json.loads(json.dumps(d))['status'] == 'completed'


def test_manager_refuses_use_after_shutdown_and_from_another_loop(backend):
    m = manager(backend)
    async def first():
        await m.start()
    async def other_loop():
        with pytest.raises(RuntimeError, match="bound to the event loop it was first used on"): await m.start_job('echo')
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(first())
        asyncio.run(other_loop())
        loop.run_until_complete(m.shutdown())
    finally: loop.close()
    async def after():
        with pytest.raises(ManagerClosedError, match="has been shut down"): await m.start_job('echo')
    run(after())


def test_wait_for_job_accepts_a_job_that_retention_already_forgot(backend):
    async def main():
        m = manager(backend, max_workers=1, max_history=5)
        try:
            jobs = [await m.start_job('noop') for _ in range(50)]
            await m.wait_for_job(jobs[-1], 30)  # one worker: every earlier job has finished, most are forgotten
            assert m.get_job(jobs[0].id) is None
            done = [await m.wait_for_job(j, 30) for j in jobs]
            return m, done
        finally: await m.shutdown()
    m, done = run(main())
    assert all(j.status == JobStatus.COMPLETED for j in done)
    assert m.get_job(done[0].id) is None
