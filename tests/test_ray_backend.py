"""What is particular to RayBackend: batching, results through Ray's object store, an entry point the nodes cannot import,
cancelling one of two busy actors, worker events with their node, shutdown without an event loop, a manager's process that
dies without shutting down. The engine's own tests run on Ray too (conftest's `backend` fixture)."""
import asyncio, os, re, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from conftest import run, wait_until, pid_alive
from recorders import Recorder
from engine_plugins import plugins_for_tests

ray = pytest.importorskip('ray')
from cjm_fasthtml_workers.backends.ray import RayBackend, RayWorker
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager, JobStatus, NoWorkersError


@pytest.fixture(autouse=True)
def cluster(ray_cluster): return ray_cluster


def manager(entry_point=plugins_for_tests, broadcaster=None, streaming=False, **config):
    return JobManager('test', 'test', entry_point=entry_point, worker_backend=RayBackend(), event_broadcaster=broadcaster,
                      supports_streaming=streaming, worker_config=WorkerConfig(**config))


def test_requests_and_replies_travel_in_batches(monkeypatch):
    calls, items = [], []
    flush, deliver = RayWorker._flush, RayWorker._deliver
    def counting_flush(self):
        if self._frames: calls.append(len(self._frames))
        flush(self)
    def counting_deliver(self, frames, decoder):
        items.append(frames)
        deliver(self, frames, decoder)
    monkeypatch.setattr(RayWorker, '_flush', counting_flush)
    monkeypatch.setattr(RayWorker, '_deliver', counting_deliver)
    async def main():
        m = manager(max_workers=1)
        try:
            await m.start()
            calls.clear(); items.clear()
            jobs = [await m.start_job('noop') for _ in range(300)]
            for j in jobs: await m.wait_for_job(j.id, 60)
            return jobs
        finally: await m.shutdown()
    jobs = run(main())
    assert all(j.status is JobStatus.COMPLETED for j in jobs)
    assert sum(calls) >= 300 and len(calls) < 300 / 2, f"{len(calls)} deliver calls carried {sum(calls)} requests"
    assert len(items) < 300, f"{len(items)} streamed items for 300 results"


def test_results_larger_than_ray_inlines_go_through_its_object_store():
    async def main():
        m = manager(max_workers=1)
        try:
            big = await m.wait_for_job((await m.start_job('echo', text='x' * (5 * 2**20))).id, 60)
            small = await m.wait_for_job((await m.start_job('echo', text='ok')).id, 60)
            return big, small
        finally: await m.shutdown()
    big, small = run(main())
    assert big.status is JobStatus.COMPLETED and len(big.result['text']) == 5 * 2**20
    assert small.status is JobStatus.COMPLETED and small.worker_pid == big.worker_pid


def test_an_entry_point_the_nodes_cannot_import_fails_clearly(tmp_path, monkeypatch):
    (tmp_path / 'only_here.py').write_text("from engine_plugins import plugins_for_tests\ndef plugins(): return plugins_for_tests()\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable here, not on the nodes (their PYTHONPATH lacks tmp_path)
    import only_here
    async def main():
        m = manager(entry_point=only_here.plugins, max_workers=1, restart_policy='never')
        try:
            with pytest.raises(NoWorkersError) as refused: await m.start_job('echo')
            return str(refused.value)
        finally: await m.shutdown()
    message = run(main())
    assert "the worker entry point failed: ModuleNotFoundError: No module named 'only_here'" in message, message


def test_cancelling_a_running_job_kills_only_its_actor():
    async def main():
        m = manager(max_workers=2)
        try:
            await m.start()
            a, b = await m.start_job('sleep', seconds=60), await m.start_job('sleep', seconds=0.8)
            before = {w['worker_id']: w['pid'] for w in m.get_workers()}
            assert await m.cancel_job(a.id)
            nxt = await m.wait_for_job((await m.start_job('echo', text='next')).id, 30)
            await m.wait_for_job(b.id, 30)
            return a, b, nxt, before, m.get_workers()
        finally: await m.shutdown()
    a, b, nxt, before, after = run(main())
    assert a.status is JobStatus.CANCELLED and b.status is JobStatus.COMPLETED
    assert nxt.status is JobStatus.COMPLETED and nxt.worker_pid != a.worker_pid
    kept = {w['worker_id'] for w in after} & set(before)
    assert len(kept) == 1 and before[kept.pop()] == b.worker_pid  # the other actor lived on
    assert not pid_alive(a.worker_pid)


def test_worker_events_say_where_each_worker_ran(ray_cluster):
    rec = Recorder()
    async def main():
        m = manager(broadcaster=rec, max_workers=1)
        try:
            crash = await m.wait_for_job((await m.start_job('crash', how='exit')).id, 30)
            await m.wait_for_job((await m.start_job('echo')).id, 30)
            return crash
        finally: await m.shutdown()
    crash = run(main())
    head = ray_cluster.head_node.node_id
    started = [d for t, d in rec.of('test:worker:started')]
    stopped = [d for t, d in rec.of('test:worker:stopped')]
    assert started and all(d['node'] == head and re.fullmatch('[0-9a-f]{32}', d['worker_id']) for d in started)
    crashed = next(d for d in stopped if d['reason'] == 'crashed')
    assert crashed['pid'] == crash.worker_pid and crashed['exitcode'] is None
    assert crashed['cause'].startswith(f"died on node {head[:12]} at ") and 'ended unexpectedly' in crashed['cause']
    assert stopped[-1]['reason'] == 'shutdown' and stopped[-1]['cause'].endswith('when asked to stop')


def test_shutdown_from_plain_code_after_the_loop_closed():
    m = manager(max_workers=2)
    async def use():
        await m.wait_for_job((await m.start_job('echo')).id, 30)
        await m.start_job('sleep', seconds=60)
        return [w['pid'] for w in m.get_workers()]
    loop = asyncio.new_event_loop()
    try: pids = loop.run_until_complete(use())
    finally: loop.close()
    start = time.monotonic()
    m.shutdown(grace=0.5)
    assert time.monotonic() - start < 15
    assert pids and not any(pid_alive(p) for p in pids if p)


def test_a_manager_process_that_dies_without_shutdown_leaves_no_actor(tmp_path, ray_cluster):
    script = tmp_path / 'app.py'
    script.write_text(textwrap.dedent(f'''
        import asyncio, os, sys
        import ray
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from engine_plugins import plugins_for_tests
        from cjm_fasthtml_workers.backends.ray import RayBackend
        from cjm_fasthtml_workers.core.config import WorkerConfig
        from cjm_fasthtml_workers.managers.base import JobManager
        async def main():
            m = JobManager('app', 'app', entry_point=plugins_for_tests, worker_config=WorkerConfig(max_workers=2),
                           worker_backend=RayBackend(address={ray_cluster.address!r}, init_options={{'log_to_driver': False}}))
            await m.start_job('sleep', seconds=60)
            await m.start_job('echo')
            print(' '.join(str(w['pid']) for w in m.get_workers()), flush=True)
            os._exit(1)  # no shutdown, no atexit: the manager's process is simply gone
        asyncio.run(main())
    '''))
    app = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pids = [int(p) for p in app.stdout.readline().split()]
        app.wait(timeout=60)
    finally:
        if app.poll() is None: os.killpg(app.pid, signal.SIGKILL); app.wait()
        app.stdout.close()
    assert len(pids) == 2
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 30), "worker actors outlived their manager's process"
