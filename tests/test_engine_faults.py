"""Crashes, timeouts, restart policies, random cancels under load, shutdown and Ctrl-C."""
import asyncio, os, random, re, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from conftest import run, pid_alive
from recorders import Recorder
from engine_plugins import plugins_for_tests, broken_entry_point, dies_when_idle
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager, JobStatus, NoWorkersError

TERMINAL = {'completed', 'failed', 'cancelled'}


def manager(backend=None, entry_point=plugins_for_tests, broadcaster=None, **config):
    "A manager on the tests' plugins, its workers hosted by `backend` (conftest's `backend` fixture), or by processes when None."
    return JobManager('test', 'test', entry_point=entry_point, event_broadcaster=broadcaster, worker_config=WorkerConfig(**config),
                      worker_backend=None if backend is None else backend.make())


@pytest.mark.parametrize('how', ['kill', 'exit', 'segfault'])
def test_worker_death_mid_job_fails_only_that_job(backend, how):
    async def main():
        m = manager(backend, max_workers=2)
        try:
            before = [await m.start_job('spin', ms=2) for _ in range(3)]
            dying = await m.start_job('crash', how=how, delay=0.05)
            after = [await m.start_job('echo', text=str(i)) for i in range(6)]
            for j in before + [dying] + after: await m.wait_for_job(j.id, 60)
            return before, dying, after, m.get_workers()
        finally: await m.shutdown()
    before, dying, after, workers = run(main())
    assert dying.status == JobStatus.FAILED
    assert re.fullmatch(rf"the worker process \(pid {dying.worker_pid}\) {backend.death_cause(how)} while running the job", dying.error), dying.error
    assert dying.error_info['type'] == 'WorkerDied'
    assert all(j.status == JobStatus.COMPLETED for j in before + after)
    assert sum(w['restarts'] for w in workers) == 1


def test_job_timeout_fails_job_and_replaces_worker(backend):
    async def main():
        m = manager(backend, max_workers=1, job_timeout=0.3)
        try:
            slow = await m.start_job('sleep', seconds=30)
            nxt = await m.start_job('echo', text='next')
            await m.wait_for_job(nxt.id, 30)
            return slow, nxt, m.get_workers()
        finally: await m.shutdown()
    slow, nxt, workers = run(main())
    assert slow.status == JobStatus.FAILED and "ran longer than its 0.3s timeout" in slow.error
    assert (slow.completed_at - slow.started_at).total_seconds() >= 0.3
    assert nxt.status == JobStatus.COMPLETED and nxt.worker_pid != slow.worker_pid
    assert workers[0]['restarts'] == 1


def test_per_job_timeout_overrides_config(backend):
    class Timed(JobManager):
        def create_job(self, plugin_id, **kwargs):
            job = super().create_job(plugin_id, **kwargs); job.timeout = 0.2; return job
    async def main():
        m = Timed('t', 't', entry_point=plugins_for_tests, worker_backend=backend.make())
        try: return await m.wait_for_job((await m.start_job('sleep', seconds=30)).id, 30)
        finally: await m.shutdown()
    assert "its 0.2s timeout" in run(main()).error


def test_policy_never_fails_pending_jobs_when_no_worker_is_left(backend):
    async def main():
        m = manager(backend, max_workers=1, restart_policy='never')
        try:
            crash = await m.start_job('crash', how='kill', delay=0.05)
            pending = [await m.start_job('echo') for _ in range(3)]
            for j in [crash] + pending: await m.wait_for_job(j.id, 30)
            with pytest.raises(NoWorkersError, match="restart policy \\(never\\)"): await m.start_job('echo')
            return crash, pending, m.get_workers()
        finally: await m.shutdown()
    crash, pending, workers = run(main())
    assert crash.status == JobStatus.FAILED
    assert all(j.status == JobStatus.FAILED and 'NoWorkersError' in j.error for j in pending)
    assert workers[0]['state'] in ('retired', 'stopped')


def test_policy_on_cancellation_replaces_cancelled_not_crashed(backend):
    async def main():
        m = manager(backend, max_workers=1, restart_policy='on_cancellation')
        try:
            running = await m.start_job('sleep', seconds=30)
            await m.cancel_job(running.id)
            replaced = await m.wait_for_job((await m.start_job('echo')).id, 30)
            crash = await m.wait_for_job((await m.start_job('crash', how='exit')).id, 30)
            with pytest.raises(NoWorkersError): await m.start_job('echo')
            return running, replaced, crash
        finally: await m.shutdown()
    running, replaced, crash = run(main())
    assert replaced.status == JobStatus.COMPLETED and replaced.worker_pid != running.worker_pid
    assert crash.status == JobStatus.FAILED


def test_policy_always_gives_up_after_max_restart_attempts_of_idle_crashes(backend):
    async def main():
        rec = Recorder()
        m = manager(backend, entry_point=dies_when_idle, max_workers=1, restart_policy='always', max_restart_attempts=2, broadcaster=rec)
        try:
            await m.start()
            await rec.until(lambda: [t for t, _ in rec.of('test:worker:')].count('test:worker:stopped') == 3)
            with pytest.raises(NoWorkersError) as refused: await m.start_job('echo')
            return str(refused.value), rec, m.get_workers()
        finally: await m.shutdown()
    message, rec, workers = run(main())
    assert "every worker slot is retired, as its workers failed 3 times in a row without finishing a job" in message
    assert "max_restart_attempts=2 under the always policy" in message
    assert [t for t, _ in rec.of('test:worker:')].count('test:worker:restarted') == 2
    assert workers[0]['state'] == 'retired' and workers[0]['pid'] is None and workers[0]['crashes'] == 3


def test_crashes_during_jobs_never_retire_the_pool(backend):
    async def main():
        m = manager(backend, max_workers=2, restart_policy='always', max_restart_attempts=2)
        try:
            crashes = [await m.start_job('crash', how='exit') for _ in range(20)]
            for c in crashes: await m.wait_for_job(c.id, 60)
            after = await m.wait_for_job((await m.start_job('echo', text='still here')).id, 30)
            return crashes, after, m.get_workers()
        finally: await m.shutdown()
    crashes, after, workers = run(main(), timeout=240)
    assert all(c.status == JobStatus.FAILED and re.search(backend.death_cause('exit'), c.error) for c in crashes)
    assert after.status == JobStatus.COMPLETED
    assert sum(w['crashes'] for w in workers) == 20 and all(w['state'] != 'retired' for w in workers)


def test_successful_job_resets_crash_count(backend):
    async def main():
        m = manager(backend, max_workers=1, restart_policy='always', max_restart_attempts=1)
        try:
            for _ in range(3):
                await m.wait_for_job((await m.start_job('crash', how='exit')).id, 30)
                ok = await m.wait_for_job((await m.start_job('echo')).id, 30)
                assert ok.status == JobStatus.COMPLETED
            return m.get_workers()
        finally: await m.shutdown()
    assert run(main())[0]['restarts'] == 3


def test_policy_backoff_waits_before_restarting(backend):
    async def main():
        rec = Recorder()
        m = manager(backend, max_workers=1, restart_policy='backoff', restart_backoff_base=0.3, restart_backoff_max=0.6, broadcaster=rec)
        try:
            for _ in range(2): await m.wait_for_job((await m.start_job('crash', how='exit')).id, 30)
            await m.wait_for_job((await m.start_job('echo')).id, 30)
            return rec
        finally: await m.shutdown()
    rec = run(main())
    stops = [t for kind, _, t in rec.events if kind == 'test:worker:stopped']
    restarts = [t for kind, _, t in rec.events if kind == 'test:worker:restarted']
    assert len(restarts) == 2
    assert restarts[0] - stops[0] >= 0.3 and restarts[1] - stops[1] >= 0.6


def test_entry_point_failure_is_reported_clearly(backend):
    async def main():
        m = manager(backend, entry_point=broken_entry_point, max_workers=1, restart_policy='always', max_restart_attempts=1)
        try:
            with pytest.raises(NoWorkersError, match="RuntimeError: cannot load the model weights"): await m.start_job('echo')
            return m.get_all_jobs()
        finally: await m.shutdown()
    assert run(main()) == []


def test_500_jobs_random_cancels_each_end_exactly_once(backend):
    rng = random.Random(1234)
    async def main():
        m = manager(backend, max_workers=2, start_method='fork')
        try:
            jobs, cancelled_running = [], 0
            for i in range(500):
                kind = rng.random()
                if kind < 0.02: jobs.append(await m.start_job('sleep', seconds=30))
                elif kind < 0.05: jobs.append(await m.start_job('fail'))
                else: jobs.append(await m.start_job('spin', ms=rng.choice([0, 0.2, 1])))
                if rng.random() < 0.15:
                    victim = rng.choice(jobs)
                    was_running = victim.status == JobStatus.RUNNING
                    if await m.cancel_job(victim.id): cancelled_running += was_running
                if i % 50 == 0: await asyncio.sleep(0.001)
            for j in jobs:
                if j.plugin_id == 'sleep': await m.cancel_job(j.id)
            for j in jobs: await m.wait_for_job(j.id, 60)
            return jobs, m.get_stats(), cancelled_running
        finally: await m.shutdown()
    jobs, stats, cancelled_running = run(main(), timeout=300)
    assert stats['pending'] == 0 and stats['running'] == 0
    for j in jobs:
        ends = [s for s, _ in j.transitions if s in TERMINAL]
        assert len(ends) == 1 and ends[0] == j.status.value, (j.id, j.transitions)
    counts = {s: sum(j.status.value == s for j in jobs) for s in TERMINAL}
    assert counts['completed'] > 300 and counts['cancelled'] > 10 and counts['failed'] > 0, counts
    assert all(j.status != JobStatus.FAILED or j.plugin_id == 'fail' for j in jobs), "only the failing plugin may fail"


def test_shutdown_cancels_everything_and_kills_stubborn_workers(backend):
    async def main():
        m = manager(backend, max_workers=2, start_method='fork')
        stubborn = await m.start_job('stubborn', seconds=60)
        running = await m.start_job('sleep', seconds=60)
        pending = [await m.start_job('echo') for _ in range(3)]
        pids = [w['pid'] for w in m.get_workers()]
        start = time.monotonic()
        await m.shutdown(grace=0.5)
        return stubborn, running, pending, pids, time.monotonic() - start
    stubborn, running, pending, pids, took = run(main())
    assert all(j.status == JobStatus.CANCELLED for j in [stubborn, running] + pending)
    assert took < 3, f"shutdown took {took:.2f}s"
    assert not any(pid_alive(p) for p in pids)


def test_ctrl_c_of_the_app_leaves_no_process(tmp_path):
    script = tmp_path / 'app.py'
    script.write_text(textwrap.dedent(f'''
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from engine_plugins import plugins_for_tests
        from cjm_fasthtml_workers.core.config import WorkerConfig
        from cjm_fasthtml_workers.managers.base import JobManager
        async def main():
            m = JobManager('app', 'app', entry_point=plugins_for_tests, worker_config=WorkerConfig(max_workers=2))
            await m.start_job('sleep', seconds=60)
            await m.start_job('sleep', seconds=60)
            await m.start_job('echo')
            print(' '.join(str(w['pid']) for w in m.get_workers()), flush=True)
            await asyncio.Event().wait()
        if __name__ == '__main__':
            asyncio.run(main())
    '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    app = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        pids = [int(p) for p in app.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        os.killpg(app.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        app.wait(timeout=30)
    finally:
        if app.poll() is None: os.killpg(app.pid, signal.SIGKILL); app.wait()
        app.stdout.close()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline: time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids), "worker processes survived Ctrl-C of the app"


@pytest.mark.parametrize('method', ['fork', 'forkserver'])
def test_other_start_methods_run_and_recover(method):
    async def main():
        m = manager(max_workers=1, start_method=method)
        try:
            crash = await m.wait_for_job((await m.start_job('crash', how='kill')).id, 30)
            ok = await m.wait_for_job((await m.start_job('echo', text=method)).id, 30)
            return crash, ok
        finally: await m.shutdown()
    crash, ok = run(main())
    assert crash.status == JobStatus.FAILED and ok.status == JobStatus.COMPLETED and ok.result['text'] == method


def test_standby_worker_replaces_a_stopped_worker_at_once(backend):
    async def main():
        m = manager(backend, max_workers=1, standby_workers=1)
        try:
            await m.start()
            workers = m.get_workers()
            assert [w['state'] for w in workers] == ['idle', 'standby'] and workers[1]['standby']
            spare_pid = workers[1]['pid']
            running = await m.start_job('sleep', seconds=30)
            nxt = await m.start_job('echo', text='next')
            await m.cancel_job(running.id)
            await m.wait_for_job(nxt.id, 30)
            crash = await m.wait_for_job((await m.start_job('crash', how='exit')).id, 30)
            after = await m.wait_for_job((await m.start_job('echo')).id, 30)
            return spare_pid, running, nxt, crash, after, m.get_workers()
        finally: await m.shutdown()
    spare_pid, running, nxt, crash, after, workers = run(main())
    assert nxt.status == JobStatus.COMPLETED and nxt.worker_pid == spare_pid != running.worker_pid
    assert crash.worker_pid == spare_pid and after.status == JobStatus.COMPLETED and after.worker_pid not in (spare_pid, running.worker_pid)
    assert workers[0]['restarts'] == 2
