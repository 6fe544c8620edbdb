"""The edges that used to hang or leak: shutdown while workers start, a plugin's own children, forkserver orphans,
short jobs behind a long one, stale worker records, what finished jobs keep, and recycling workers."""
import asyncio, contextlib, os, signal, subprocess, sys, threading, time
from pathlib import Path
import pytest
from conftest import run, pid_alive, descendants, wait_until, kill_left
from recorders import Recorder, ResourceLog
from engine_plugins import reliability_plugins
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers import base
from cjm_fasthtml_workers.managers.base import JobManager, JobStatus, ManagerClosedError

HERE = Path(__file__).parent


def manager(streaming=False, broadcaster=None, resources=None, entry_point=reliability_plugins, **config):
    return JobManager('test', 'test', entry_point=entry_point, supports_streaming=streaming, event_broadcaster=broadcaster,
                      resource_manager=resources, worker_config=WorkerConfig(**config))


async def train(m, plugin, n=5, **params):
    "Run a few quick jobs so the manager knows the plugin is short."
    for _ in range(n): await m.wait_for_job((await m.start_job(plugin, **params)).id, 30)


# 1. A start_job waiting for the pool when shutdown runs ends at once, with the right error.
@pytest.mark.parametrize('delay', [0, 0.01, 0.05])
def test_start_job_waiting_for_the_pool_ends_when_shutdown_runs(delay):
    async def main():
        m = manager(max_workers=2)
        waiting = asyncio.ensure_future(m.start_job('echo'))
        await asyncio.sleep(delay)  # shut down at this instant of the start
        t0 = time.monotonic()
        await m.shutdown()
        with pytest.raises(ManagerClosedError, match="shut down"): await waiting
        return time.monotonic() - t0, m.get_workers()
    took, workers = run(main(), timeout=30)
    assert took < 5, f"shutdown and the waiting start_job took {took:.1f}s"
    assert all(w['state'] == 'stopped' and w['pid'] is None for w in workers)


# 2. Only what was registered is unregistered, only what was announced started is announced stopped.
def _balanced(log, rec):
    assert sorted(log.pids('register')) == sorted(log.pids('unregister')), log.calls
    started = [d['pid'] for t, d in rec.of('test:worker:') if t in ('test:worker:started', 'test:worker:restarted')]
    stopped = [d['pid'] for t, d in rec.of('test:worker:') if t == 'test:worker:stopped']
    assert sorted(set(started)) == sorted(stopped), rec.events


@pytest.mark.parametrize('delay', [0, 0.02, 0.06, 0.15])
def test_shutdown_during_start_unregisters_only_registered_workers(delay):
    log, rec = ResourceLog(), Recorder()
    async def main():
        m = manager(max_workers=2, standby_workers=1, resources=log, broadcaster=rec)
        starting = asyncio.ensure_future(m.start())
        await asyncio.sleep(delay)
        await m.shutdown()
        with contextlib.suppress(ManagerClosedError): await starting
    run(main())
    _balanced(log, rec)


@pytest.mark.parametrize('delay', [0, 0.02, 0.05])
def test_shutdown_during_a_replacement_unregisters_only_registered_workers(delay):
    log, rec = ResourceLog(), Recorder()
    async def main():
        m = manager(max_workers=1, resources=log, broadcaster=rec)
        try:
            crashed = await m.wait_for_job((await m.start_job('crash', how='kill')).id, 30)
            assert m.get_workers()[0]['state'] in ('placing', 'starting', 'restarting')  # the replacement is on its way
            await asyncio.sleep(delay)  # shut down at this instant of the replacement's start
            assert m.get_workers()[0]['state'] in ('placing', 'starting')
        finally: await m.shutdown()
        return crashed
    assert run(main()).status == JobStatus.FAILED
    _balanced(log, rec)
    assert len(log.pids('register')) == 1, "the replacement never became ready, so it was never registered"


# 3. A plugin's subprocess or forked child ends with its worker; the slot stays usable.
@pytest.mark.parametrize('how', ['subprocess', 'fork'])
@pytest.mark.parametrize('end', ['cancel', 'timeout', 'shutdown'])
def test_a_plugins_children_end_with_its_worker(how, end):
    async def main():
        m = manager(streaming=True, max_workers=1, job_timeout=1.0 if end == 'timeout' else None)
        try:
            job = await m.start_job('with-child', how=how)
            child = await m.stream_job(job.id).__anext__()
            assert pid_alive(child)
            after = None
            if end == 'cancel': assert await m.cancel_job(job.id)
            if end == 'timeout': await m.wait_for_job(job.id, 30)
            if end != 'shutdown': after = await m.wait_for_job((await m.start_job('echo', text='next')).id, 30)
        finally:
            t0 = time.monotonic()
            await m.shutdown()
        return job, child, after, time.monotonic() - t0
    job, child, after, took = run(main())
    assert wait_until(lambda: not pid_alive(child), 5), f"the plugin's child {child} outlived its worker"
    expected = {'cancel': JobStatus.CANCELLED, 'timeout': JobStatus.FAILED, 'shutdown': JobStatus.CANCELLED}[end]
    assert job.status == expected
    if after is not None: assert after.status == JobStatus.COMPLETED, "the slot was wedged"
    assert took < 3, f"shutdown took {took:.1f}s"


# 4. Killing the app leaves nothing behind, under every start method.
APP = '''
import asyncio, sys
sys.path.insert(0, {tests!r})
from engine_plugins import reliability_plugins
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager
async def main():
    m = JobManager('app', 'app', entry_point=reliability_plugins, supports_streaming=True,
                   worker_config=WorkerConfig(max_workers=2, start_method={method!r}))
    busy = await m.start_job('sleep', seconds=60)
    child_job = await m.start_job('with-child', seconds=60)
    await m.start()
    print(busy.worker_pid, flush=True)
    await asyncio.Event().wait()
if __name__ == '__main__':
    asyncio.run(main())
'''

@pytest.mark.parametrize('method', ['forkserver', 'spawn', 'fork'])
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_app_leaves_no_process(tmp_path, method, sig):
    script = tmp_path / 'app.py'
    script.write_text(APP.format(tests=str(HERE), method=method))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    app = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        worker = int(app.stdout.readline())
        assert wait_until(lambda: len(descendants(app.pid)) >= 2, 10)
        family = descendants(app.pid) | {worker}
        assert pid_alive(worker)
        os.kill(app.pid, sig)
        app.wait(timeout=30)
    finally:
        if app.poll() is None: os.killpg(app.pid, signal.SIGKILL); app.wait()
        app.stdout.close()
    left = lambda: [p for p in family if pid_alive(p)]
    try: assert wait_until(lambda: not left(), 5), f"{signal.Signals(sig).name} of a {method} app left alive: {[describe(p) for p in left()]}"
    finally: kill_left(family)


def describe(pid: int) -> str:
    "What a process is, for a failure message: its command line, state, parent and process group."
    try:
        cmdline = Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace').strip()
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError: return f"{pid} (gone)"
    state, ppid, pgrp = stat[stat.rindex(')') + 2:].split()[:3]
    return f"{pid} {cmdline[:120]!r} state {state} parent {ppid} group {pgrp}"


# 5. Short jobs sent ahead behind a job that runs long are taken back for an idle worker, and run once.
def test_short_jobs_are_not_held_behind_a_long_one_while_a_worker_is_idle(tmp_path):
    async def main():
        m = manager(max_workers=2, prefetch=8)
        try:
            await train(m, 'sleep', seconds=0.001)
            await train(m, 'touch', path=str(tmp_path / 'warmup'))
            long = await m.start_job('sleep', seconds=3)
            shorts = [await m.start_job('touch', path=str(tmp_path / f'short{i}')) for i in range(40)]
            for j in shorts: await m.wait_for_job(j.id, 30)
            long_status = long.status
            await m.cancel_job(long.id)
            return long, long_status, shorts
        finally: await m.shutdown()
    long, long_status, shorts = run(main())
    assert long_status == JobStatus.RUNNING, "a short job waited for the long one to end"
    assert all(j.status == JobStatus.COMPLETED for j in shorts)
    assert all((tmp_path / f'short{i}').read_text() == 'ran\n' for i in range(40)), "a job taken back ran twice"
    assert max((j.completed_at - j.created_at).total_seconds() for j in shorts) < 2.5


# 6. No pid is reported for a slot without a live worker.
def test_no_pid_for_a_slot_without_a_live_worker():
    async def main():
        m = manager(max_workers=1, restart_policy='backoff', restart_backoff_base=0.5)
        never = manager(max_workers=1, restart_policy='never')
        try:
            await m.wait_for_job((await m.start_job('crash', how='kill')).id, 30)
            restarting = m.get_workers()[0]
            await never.wait_for_job((await never.start_job('crash', how='kill')).id, 30)
            retired = never.get_workers()[0]
            return restarting, retired, m.get_workers()[0]
        finally:
            await m.shutdown(); await never.shutdown()
    restarting, retired, stopped = run(main())
    assert (restarting['state'], restarting['pid']) == ('restarting', None)
    assert (retired['state'], retired['pid']) == ('retired', None)
    assert stopped['pid'] is None


# 7. What finished jobs keep: parameters as a summary once sent, pickled off the loop when large; bounded events.
def test_large_parameters_are_summarized_once_sent_and_pickled_off_the_loop(monkeypatch):
    threads = []
    real = base._pickle_params
    def recording(plugin_id, params):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(plugin_id, params)
    monkeypatch.setattr(base, '_pickle_params', recording)
    async def main():
        m = manager(max_workers=1)
        try:
            big = await m.wait_for_job((await m.start_job('size', blob=b'\x01' * 5_000_000)).id, 30)
            small = await m.wait_for_job((await m.start_job('size', blob=b'ab')).id, 30)
            return big, small, dict(m._payloads)
        finally: await m.shutdown()
    big, small, payloads = run(main())
    assert (big.result, small.result) == (5_000_000, 2)
    assert big.params == {'blob': '<5,000,000 bytes>'} and small.params == {'blob': b'ab'}
    assert payloads == {}, "a finished job's pickled parameters were kept"
    assert threads == [False, True], "large parameters must be pickled on a thread, small ones on the loop"


def test_a_chunk_flood_reaches_a_slow_broadcaster_whole_without_drops():
    class Slow(Recorder):
        async def broadcast(self, event_type, data):
            await asyncio.sleep(0.002)
            await super().broadcast(event_type, data)
    rec = Slow()
    async def main():
        m = manager(streaming=True, broadcaster=rec, max_workers=1)
        try:
            job = await m.wait_for_job((await m.start_job('flood', n=200_000)).id, 60)
            return job, m._events.dropped
        finally: await m.shutdown()
    job, dropped = run(main(), timeout=180)
    chunks = [d for t, d in rec.of('test:chunk')]
    assert dropped == 0
    assert ''.join(d['chunk'] for d in chunks) == ''.join(str(i % 10) for i in range(200_000))
    assert len(chunks) < 2000, f"{len(chunks)} chunk events: bursts were not merged"
    assert job.status == JobStatus.COMPLETED and len(job.result) == 200_000 and job.chunks == []


# 8. Workers are recycled between jobs: after max_jobs_per_worker, over max_worker_memory, after a MemoryError.
def test_max_jobs_per_worker_recycles_without_failing_a_job():
    rec = Recorder()
    async def main():
        m = manager(max_workers=1, max_jobs_per_worker=3, broadcaster=rec)
        try:
            one_by_one = [(await m.wait_for_job((await m.start_job('pid')).id, 30)) for _ in range(7)]
            batch = [await m.start_job('pid') for _ in range(12)]
            for j in batch: await m.wait_for_job(j.id, 30)
            return one_by_one, batch
        finally: await m.shutdown()
    one_by_one, batch = run(main())
    assert all(j.status == JobStatus.COMPLETED for j in one_by_one + batch)
    pids = [j.result for j in one_by_one]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    per_worker = {}
    for j in one_by_one + batch: per_worker[j.result] = per_worker.get(j.result, 0) + 1
    assert max(per_worker.values()) <= 3
    assert any(d.get('reason') == 'recycled' for t, d in rec.of('test:worker:stopped'))


def test_max_worker_memory_recycles_a_leaking_worker_between_jobs():
    rec = Recorder()
    async def main():
        probe = manager(max_workers=1)
        try: baseline = (await probe.wait_for_job((await probe.start_job('rss')).id, 30)).result
        finally: await probe.shutdown()
        m = manager(max_workers=1, max_worker_memory=baseline + 60 * 2**20, broadcaster=rec)
        try:
            leaked = await m.wait_for_job((await m.start_job('leak', mb=100)).id, 30)
            await rec.until(lambda: any(d.get('reason') == 'recycled' for t, d in rec.of('test:worker:stopped')))
            after = await m.wait_for_job((await m.start_job('pid')).id, 30)
            return leaked, after
        finally: await m.shutdown()
    leaked, after = run(main())
    assert leaked.status == JobStatus.COMPLETED, "the job that leaked must not fail for it"
    assert after.status == JobStatus.COMPLETED and after.result != leaked.worker_pid


def test_memory_error_says_what_happened_and_recycles_the_worker():
    async def main():
        m = manager(max_workers=1)
        try:
            oom = await m.wait_for_job((await m.start_job('oom')).id, 30)
            after = await m.wait_for_job((await m.start_job('pid')).id, 30)
            return oom, after
        finally: await m.shutdown()
    oom, after = run(main())
    assert oom.status == JobStatus.FAILED
    assert oom.error.startswith(f"MemoryError: the plugin ran out of memory in worker process {oom.worker_pid} (resident memory ")
    assert after.status == JobStatus.COMPLETED and after.result != oom.worker_pid


# The docs' promises a new user relies on.
def test_job_manager_refuses_an_entry_point_no_worker_could_run():
    with pytest.raises(TypeError, match="needs entry_point="): JobManager('t', 't')
    with pytest.raises(TypeError, match="must be a function"): JobManager('t', 't', entry_point={'echo': print})
    with pytest.raises(TypeError, match="cannot be sent to a worker process under the 'spawn' start method"):
        JobManager('t', 't', entry_point=lambda: {})
    JobManager('t', 't', entry_point=lambda: {}, worker_config=WorkerConfig(start_method='fork'))  # fork pickles nothing


UNGUARDED = '''
import asyncio, sys
sys.path.insert(0, {tests!r})
from engine_plugins import plugins_for_tests
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager, NoWorkersError
async def main():
    m = JobManager('app', 'app', entry_point=plugins_for_tests, worker_config=WorkerConfig(max_restart_attempts=1))
    try: await m.start()
    except NoWorkersError as e:
        if __name__ != '__main__': raise  # in a worker, as in a real script: the error ends the process
        print('REFUSED', str(e).replace(chr(10), ' '), flush=True)
    finally: await m.shutdown()
asyncio.run(main())  # no `if __name__ == '__main__':`
'''

def test_a_script_without_a_main_guard_is_told_why_workers_fail(tmp_path):
    script = tmp_path / 'unguarded.py'
    script.write_text(UNGUARDED.format(tests=str(HERE)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    refused = [l for l in out.stdout.splitlines() if l.startswith('REFUSED')]
    assert refused, out.stdout + out.stderr
    assert "a script must start the manager under `if __name__ == '__main__':`" in refused[0]
