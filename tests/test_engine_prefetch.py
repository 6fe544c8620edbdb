"""Short jobs sent ahead to busy workers: still pending until started, dropped when cancelled, requeued when the worker goes."""
import os, re, signal
from conftest import run
from engine_plugins import plugins_for_tests
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager, JobStatus


def manager(backend, **config):
    "A manager on the tests' plugins, its workers hosted by `backend` (conftest's `backend` fixture: processes, then Ray actors)."
    return JobManager('test', 'test', entry_point=plugins_for_tests, worker_config=WorkerConfig(**config), worker_backend=backend.make())


async def train(m, plugin, n=5, **params):
    "Run a few quick jobs so the manager knows the plugin is short."
    for _ in range(n): await m.wait_for_job((await m.start_job(plugin, **params)).id, 30)


async def busy_with_jobs_ahead(m, tmp_path, n=4):
    "A short-looking 'sleep' that runs for a while, with `n` 'touch' jobs sent ahead behind it."
    await train(m, 'sleep', seconds=0.001)
    await train(m, 'touch', path=str(tmp_path / 'warmup'))
    head = await m.start_job('sleep', seconds=0.5)
    ahead = [await m.start_job('touch', path=str(tmp_path / f'job{i}')) for i in range(n)]
    return head, ahead


def test_jobs_sent_ahead_are_pending_and_run_in_order(backend, tmp_path):
    async def main():
        m = manager(backend, max_workers=1, prefetch=8)
        try:
            head, ahead = await busy_with_jobs_ahead(m, tmp_path)
            sent = m.get_workers()[0]['sent_ahead']
            statuses = [j.status for j in ahead]
            stats = m.get_stats()
            for j in ahead: await m.wait_for_job(j.id, 30)
            return sent, statuses, stats, head, ahead
        finally: await m.shutdown()
    sent, statuses, stats, head, ahead = run(main())
    assert sent == 4 and statuses == [JobStatus.PENDING] * 4
    assert stats['pending'] == 4 and stats['running'] == 1
    assert all(j.status == JobStatus.COMPLETED for j in ahead)
    starts = [j.started_at for j in ahead]
    assert starts == sorted(starts) and starts[0] >= head.completed_at
    assert all(j.worker_pid == head.worker_pid for j in ahead)


def test_cancelled_job_sent_ahead_never_runs(backend, tmp_path):
    async def main():
        m = manager(backend, max_workers=1, prefetch=8)
        try:
            head, ahead = await busy_with_jobs_ahead(m, tmp_path)
            assert m.get_workers()[0]['sent_ahead'] == 4
            assert await m.cancel_job(ahead[1].id)
            for j in ahead: await m.wait_for_job(j.id, 30)
            after = await m.wait_for_job((await m.start_job('echo')).id, 30)
            return ahead, after, m.get_stats()
        finally: await m.shutdown()
    ahead, after, stats = run(main())
    assert ahead[1].status == JobStatus.CANCELLED and [s for s, _ in ahead[1].transitions] == ['pending', 'cancelled']
    assert not (tmp_path / 'job1').exists(), "a job cancelled before it started was run"
    assert all(ahead[i].status == JobStatus.COMPLETED and (tmp_path / f'job{i}').exists() for i in (0, 2, 3))
    assert after.status == JobStatus.COMPLETED and stats['pending'] == 0 and stats['running'] == 0


def test_jobs_sent_ahead_are_requeued_when_the_worker_dies(backend, tmp_path):
    async def main():
        m = manager(backend, max_workers=1, prefetch=8)
        try:
            head, ahead = await busy_with_jobs_ahead(m, tmp_path)
            assert m.get_workers()[0]['sent_ahead'] == 4
            os.kill(head.worker_pid, signal.SIGKILL)
            for j in [head] + ahead: await m.wait_for_job(j.id, 30)
            return head, ahead
        finally: await m.shutdown()
    head, ahead = run(main())
    assert head.status == JobStatus.FAILED and re.search(backend.death_cause('kill'), head.error), head.error
    assert all(j.status == JobStatus.COMPLETED and j.worker_pid != head.worker_pid for j in ahead)
    starts = [j.started_at for j in ahead]
    assert starts == sorted(starts)


def test_jobs_sent_ahead_are_requeued_when_the_running_job_is_cancelled(backend, tmp_path):
    async def main():
        m = manager(backend, max_workers=1, prefetch=8)
        try:
            head, ahead = await busy_with_jobs_ahead(m, tmp_path)
            await m.cancel_job(head.id)
            for j in ahead: await m.wait_for_job(j.id, 30)
            return head, ahead
        finally: await m.shutdown()
    head, ahead = run(main())
    assert head.status == JobStatus.CANCELLED
    assert all(j.status == JobStatus.COMPLETED and j.worker_pid != head.worker_pid for j in ahead)


def test_long_jobs_are_not_sent_ahead(backend, tmp_path):
    async def main():
        m = manager(backend, max_workers=1, prefetch=8, prefetch_max_runtime=0.01)
        try:
            await train(m, 'sleep', n=2, seconds=0.05)
            head = await m.start_job('sleep', seconds=0.5)
            queued = [await m.start_job('sleep', seconds=0.05) for _ in range(3)]
            sent = m.get_workers()[0]['sent_ahead']
            await m.cancel_job(head.id)
            for j in queued: await m.cancel_job(j.id)
            return sent
        finally: await m.shutdown()
    assert run(main()) == 0


def test_prefetch_zero_turns_it_off(backend, tmp_path):
    async def main():
        m = manager(backend, max_workers=1, prefetch=0)
        try:
            head, ahead = await busy_with_jobs_ahead(m, tmp_path)
            sent = m.get_workers()[0]['sent_ahead']
            for j in ahead: await m.wait_for_job(j.id, 30)
            return sent
        finally: await m.shutdown()
    assert run(main()) == 0


def test_a_backend_with_a_longer_round_trip_gets_jobs_sent_deeper(tmp_path):
    "A backend's `send_ahead_factor` (RayBackend's: an actor's round trip is longer) multiplies how many short jobs wait at a busy worker."
    from cjm_fasthtml_workers.core.backend import ProcessBackend

    class SlowRoundTrip(ProcessBackend): send_ahead_factor = 3

    async def sent_ahead_with(backend):
        m = JobManager('test', 'test', entry_point=plugins_for_tests, worker_config=WorkerConfig(max_workers=1, prefetch=2, prefetch_max_runtime=0.01),
                       worker_backend=backend)
        try:
            head, ahead = await busy_with_jobs_ahead(m, tmp_path, n=8)
            sent = m.get_workers()[0]['sent_ahead']
            for j in [head] + ahead: await m.wait_for_job(j.id, 30)
            return sent, all(j.status == JobStatus.COMPLETED for j in ahead)
        finally: await m.shutdown()
    assert run(sent_ahead_with(ProcessBackend('spawn'))) == (2, True)
    assert run(sent_ahead_with(SlowRoundTrip('spawn'))) == (6, True)
