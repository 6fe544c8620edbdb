"""Durable job records (SQLiteJobStore), restart recovery, retries, retention on the store, and the store's refusals."""
import asyncio, os, signal, sqlite3, subprocess, sys, textwrap, threading
from pathlib import Path
import pytest
from conftest import run, pid_alive, wait_until, descendants, kill_left
from recorders import Recorder
from engine_plugins import store_plugins
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.core.store import SQLiteJobStore, StoreError, StoreInUseError
from cjm_fasthtml_workers.managers.base import JobManager, JobStatus, BaseJob

HERE = Path(__file__).parent


def manager(path=None, broadcaster=None, store=None, **config):
    store = store if store is not None else (SQLiteJobStore(path) if path is not None else None)
    return JobManager('test', 'test', entry_point=store_plugins, job_store=store, event_broadcaster=broadcaster,
                      worker_config=WorkerConfig(**config))


def statuses(job): return [s for s, _ in job.transitions]


def test_finished_jobs_are_readable_after_a_restart(tmp_path):
    db = tmp_path / 'jobs.db'
    async def first():
        m = manager(db, max_workers=1)
        try:
            ok = await m.wait_for_job((await m.start_job('echo', text='kept', owner='ada')).id, 30)
            bad = await m.wait_for_job((await m.start_job('fail', message='nope')).id, 30)
            return ok, bad
        finally: await m.shutdown()
    ok, bad = run(first())
    m = manager(db)
    try:
        ok2, bad2 = m.get_job(ok.id), m.get_job(bad.id)
        assert [j.id for j in m.get_all_jobs()] == [ok.id, bad.id]
        assert (ok2.status, ok2.result, ok2.owner, ok2.worker_pid) == (JobStatus.COMPLETED, {'text': 'kept'}, 'ada', ok.worker_pid)
        assert (ok2.created_at, ok2.started_at, ok2.completed_at) == (ok.created_at, ok.started_at, ok.completed_at)
        assert statuses(ok2) == ['pending', 'running', 'completed']
        assert m.get_job_result(ok.id) == {'status': 'success', 'data': {'text': 'kept'}}
        assert (bad2.status, bad2.error, bad2.error_info['type']) == (JobStatus.FAILED, 'RuntimeError: nope', 'RuntimeError')
    finally: m.shutdown()


def test_pending_jobs_run_after_a_restart_in_order_and_priority(tmp_path):
    db = tmp_path / 'jobs.db'
    async def first():
        m = manager(db, max_workers=1)
        try:
            blocker = await m.start_job('sleep', seconds=60)
            queued = [await m.start_job('touch', priority=p, path=str(tmp_path / f'q{i}')) for i, p in enumerate([0, 5, 0, 5])]
            return blocker, queued
        finally: await m.shutdown()  # a durable store keeps them for the next manager
    blocker, queued = run(first())
    assert all(j.status == JobStatus.PENDING for j in queued) and blocker.status == JobStatus.RUNNING
    async def second():
        m = manager(db, max_workers=1)
        try:
            assert [m.get_job(j.id).status for j in queued] == [JobStatus.PENDING] * 4
            done = [await m.wait_for_job(j.id, 30) for j in queued]
            return m.get_job(blocker.id), sorted(done, key=lambda j: j.started_at)
        finally: await m.shutdown()
    interrupted, order = run(second())
    assert [j.params['path'][-2:] for j in order] == ['q1', 'q3', 'q0', 'q2']
    assert all(j.status == JobStatus.COMPLETED for j in order)
    assert interrupted.status == JobStatus.FAILED and interrupted.error.startswith("the job manager stopped while it ran")


def test_interrupted_jobs_can_be_requeued(tmp_path):
    db = tmp_path / 'jobs.db'
    async def first():
        m = manager(db, max_workers=1)
        try:
            job = await m.start_job('touch', path=str(tmp_path / 'once'))
            await m.wait_for_job(job.id, 30)
            long = await m.start_job('sleep', seconds=0.2)
            return long
        finally: await m.shutdown(grace=0)
    long = run(first())
    async def second():
        m = manager(db, interrupted_jobs='requeue')
        try: return await m.wait_for_job(long.id, 30)
        finally: await m.shutdown()
    again = run(second())
    assert again.status == JobStatus.COMPLETED and again.result == 0.2
    assert [a['type'] for a in again.attempts] == ['Interrupted']
    assert statuses(again)[-3:] == ['pending', 'running', 'completed']


def test_retries_until_the_limit_with_an_event_each(tmp_path):
    rec = Recorder()
    async def main():
        m = manager(broadcaster=rec, max_workers=1, retry_backoff=0.01)
        try:
            flaky = await m.start_job('flaky', path=str(tmp_path / 'count'), fail_times=2, max_retries=3)
            hopeless = await m.start_job('fail', message='always', max_retries=2)
            permanent = await m.start_job('permanent', max_retries=5)
            none = await m.start_job('fail')
            return [await m.wait_for_job(j.id, 30) for j in (flaky, hopeless, permanent, none)]
        finally: await m.shutdown()
    flaky, hopeless, permanent, none = run(main())
    assert flaky.status == JobStatus.COMPLETED and flaky.result == 3 and len(flaky.attempts) == 2
    assert [a['attempt'] for a in flaky.attempts] == [1, 2] and flaky.attempts[0]['error'].startswith('RuntimeError: failure 1')
    assert statuses(flaky) == ['pending', 'running', 'pending', 'running', 'pending', 'running', 'completed']
    assert hopeless.status == JobStatus.FAILED and len(hopeless.attempts) == 2
    assert [s for s in statuses(hopeless) if s in ('completed', 'failed', 'cancelled')] == ['failed']
    assert permanent.status == JobStatus.FAILED and permanent.attempts == []  # marked permanent: not retried
    assert none.attempts == []  # WorkerConfig.max_retries is 0
    retries = {}
    for t, d in rec.of('test:retrying'): retries.setdefault(d['job_id'], []).append(d)
    assert {jid: [d['attempt'] for d in ds] for jid, ds in retries.items()} == {flaky.id: [1, 2], hopeless.id: [1, 2]}
    assert retries[flaky.id][1]['retry_in'] == 2 * retries[flaky.id][0]['retry_in']  # the backoff doubles


def test_timeouts_and_crashes_are_retried_cancels_are_not(tmp_path):
    async def main():
        m = manager(max_workers=2, retry_backoff=0.01, job_timeout=0.5)
        try:
            slow = await m.start_job('sleep', seconds=30, max_retries=1)
            crash = await m.start_job('crash', how='kill', max_retries=1)
            waiting = await m.start_job('fail', max_retries=3, retry_backoff=30)
            await asyncio.wait_for(_until(lambda: waiting.attempts), 30)
            assert waiting.status == JobStatus.PENDING  # waiting for its retry
            assert await m.cancel_job(waiting.id)
            return [await m.wait_for_job(j.id, 60) for j in (slow, crash, waiting)]
        finally: await m.shutdown()
    slow, crash, waiting = run(main())
    assert slow.status == JobStatus.FAILED and len(slow.attempts) == 1 and 'timeout' in slow.attempts[0]['error']
    assert crash.status == JobStatus.FAILED and len(crash.attempts) == 1 and 'SIGKILL' in crash.attempts[0]['error']
    assert waiting.status == JobStatus.CANCELLED and len(waiting.attempts) == 1


async def _until(condition):
    while not condition(): await asyncio.sleep(0.01)


def test_a_plugins_own_retry_setting_is_its_default(tmp_path):
    async def main():
        m = manager(max_workers=1, retry_backoff=0.01)
        try: return await m.wait_for_job((await m.start_job('flaky-plugin', path=str(tmp_path / 'n'), fail_times=1)).id, 30)
        finally: await m.shutdown()
    job = run(main())
    assert job.status == JobStatus.COMPLETED and job.max_retries == 2 and len(job.attempts) == 1


def test_retention_deletes_store_rows(tmp_path):
    db = tmp_path / 'jobs.db'
    async def main():
        m = manager(db, max_workers=1, max_history=5)
        try:
            for _ in range(20): await m.wait_for_job((await m.start_job('noop')).id, 30)
            kept = [j.id for j in m.get_all_jobs()]
            await m.store.committed()
            rows = _rows(db)
            cleared = m.clear_completed_jobs()
            await m.store.committed()
            return kept, rows, cleared, _rows(db)
        finally: await m.shutdown()
    kept, rows, cleared, after = run(main())
    assert len(kept) == 5 and sorted(rows) == sorted(kept)
    assert cleared == 5 and after == []


def _rows(db):
    con = sqlite3.connect(db)
    try: return [r[0] for r in con.execute('SELECT id FROM jobs')]
    finally: con.close()


def test_a_store_shared_by_two_live_managers_is_refused(tmp_path):
    db = tmp_path / 'jobs.db'
    first = manager(db)
    try:
        with pytest.raises(StoreInUseError, match=f"is in use by another job manager \\(process {os.getpid()}\\)"): manager(db)
        other = subprocess.run([sys.executable, '-c', textwrap.dedent(f'''
            import sys
            from cjm_fasthtml_workers.core.store import SQLiteJobStore, StoreInUseError
            try: SQLiteJobStore({str(db)!r}).open()
            except StoreInUseError as e: print('REFUSED', e)
        ''')], capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert f"REFUSED the job store {db} is in use by another job manager (process {os.getpid()})" in other.stdout, other.stderr
    finally: first.shutdown()
    manager(db).shutdown()  # free again


def test_unstorable_results_are_refused_and_the_job_still_finishes(tmp_path):
    db = tmp_path / 'jobs.db'
    class Keeper(JobManager):
        def extract_job_result(self, job, result_data):
            return threading.Lock() if job.params.get('lock') else result_data
    async def first():
        m = Keeper('test', 'test', entry_point=store_plugins, job_store=SQLiteJobStore(db, max_result_bytes=1000))
        try:
            big = await m.wait_for_job((await m.start_job('echo', text='x' * 5000)).id, 30)
            lock = await m.wait_for_job((await m.start_job('echo', lock=True)).id, 30)
            small = await m.wait_for_job((await m.start_job('echo', text='fine')).id, 30)
            return big, lock, small
        finally: await m.shutdown()
    big, lock, small = run(first())
    assert big.status == lock.status == small.status == JobStatus.COMPLETED and len(big.result['text']) == 5000
    m = manager(db)
    try:
        big2, lock2, small2 = (m.get_job(j.id) for j in (big, lock, small))
        assert big2.status == JobStatus.COMPLETED and big2.result is None
        assert "the result was not stored: " in big2.error and "over the store's max_result_bytes (1,000)" in big2.error
        assert lock2.result is None and "it cannot be pickled" in lock2.error
        assert small2.result == {'text': 'fine'} and small2.error is None
    finally: m.shutdown()


def test_a_store_that_cannot_be_written_is_refused_at_start(tmp_path):
    with pytest.raises(StoreError, match="cannot create the job store's lock file /proc/no/jobs.db.lock"): manager('/proc/no/jobs.db')
    db = tmp_path / 'jobs.db'
    manager(db).shutdown()
    os.chmod(db, 0o444)  # read-only (root could still write it: the store refuses a file nobody may write)
    with pytest.raises(StoreError, match=f"cannot use the job store {db}: the file is read-only"): manager(db)
    os.chmod(db, 0o644)
    manager(db).shutdown()


def test_a_full_disk_refuses_new_jobs_with_the_reason(tmp_path):
    class SmallDisk(SQLiteJobStore):
        def _connect(self):
            conn = super()._connect()
            pages = conn.execute('PRAGMA page_count').fetchone()[0]
            conn.execute(f'PRAGMA max_page_count = {pages + 2}')  # room for a few rows only, as on a full disk
            return conn
    async def main():
        m = manager(store=SmallDisk(tmp_path / 'jobs.db'), max_workers=1)
        try:
            refused = None
            for i in range(200):
                try: await m.wait_for_job((await m.start_job('echo', text='y' * 2000)).id, 30)
                except StoreError as e: refused = e; break
            return refused, i
        finally: await m.shutdown()
    refused, at = run(main())
    assert refused is not None and 0 < at < 200
    assert "writing the job store" in str(refused) and "database or disk is full" in str(refused)
    assert "new jobs are refused" in str(refused)


def test_a_job_subclass_comes_back_as_itself(tmp_path):
    db = tmp_path / 'jobs.db'
    from engine_plugins import Transcript, TranscriptManager
    async def first():
        m = TranscriptManager('test', 'test', entry_point=store_plugins, job_store=SQLiteJobStore(db))
        try: return await m.wait_for_job((await m.start_job('echo', filename='talk.wav')).id, 30)
        finally: await m.shutdown()
    job = run(first())
    m = TranscriptManager('test', 'test', entry_point=store_plugins, job_store=SQLiteJobStore(db))
    try:
        again = m.get_job(job.id)
        assert type(again) is Transcript and again.filename == 'talk.wav' and again.result == job.result
    finally: m.shutdown()


# kill -9 of the app in the middle of a 1,000-job run, then a restart on the same file
APP = '''
import asyncio, sys
sys.path.insert(0, {tests!r})
from engine_plugins import store_plugins
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.core.store import SQLiteJobStore
from cjm_fasthtml_workers.managers.base import JobManager
async def main():
    m = JobManager('app', 'app', entry_point=store_plugins, job_store=SQLiteJobStore({db!r}),
                   worker_config=WorkerConfig(max_workers=2, start_method='fork'))
    for i in range(1000):
        job = await m.start_job('touch', path={folder!r} + f'/{{i}}', priority=i % 3)
        print(job.id, i, flush=True)  # written to the store: start_job returned
    await asyncio.Event().wait()
if __name__ == '__main__':
    asyncio.run(main())
'''


@pytest.mark.parametrize('attempt', range(10))
def test_kill_9_mid_run_loses_and_duplicates_nothing(tmp_path, attempt):
    db, folder = tmp_path / 'jobs.db', tmp_path / 'ran'
    folder.mkdir()
    script = tmp_path / 'app.py'
    script.write_text(APP.format(tests=str(HERE), db=str(db), folder=str(folder)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    app = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    seen, family = {}, set()
    try:
        kill_at = 100 + 80 * attempt  # a different instant each run
        for line in app.stdout:
            job_id, i = line.split(); seen[job_id] = int(i)
            if len(seen) >= kill_at: break
        family = descendants(app.pid)
        os.kill(app.pid, signal.SIGKILL)
        app.wait(30)
    finally:
        if app.poll() is None: os.killpg(app.pid, signal.SIGKILL); app.wait()
        app.stdout.close()
    try: assert family and wait_until(lambda: not any(pid_alive(p) for p in family), 5), "the app's workers outlived it"
    finally: kill_left(family)
    con = sqlite3.connect(db)
    try: assert con.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    finally: con.close()
    async def recover():
        m = JobManager('app', 'app', entry_point=store_plugins, job_store=SQLiteJobStore(db),
                       worker_config=WorkerConfig(max_workers=2, start_method='fork'))
        try:
            held = {j.id: j for j in m.get_all_jobs()}
            before = {jid: j.status for jid, j in held.items()}
            for j in held.values(): await m.wait_for_job(j, 60)
            return held, before
        finally: await m.shutdown()
    held, before = run(recover(), timeout=180)
    assert set(seen) <= set(held), f"{len(set(seen) - set(held))} jobs whose start_job had returned were lost"
    for job_id, i in seen.items():
        job, ran = held[job_id], folder / str(i)
        lines = ran.read_text().count('ran') if ran.exists() else 0
        assert lines <= 1, f"job {i} ran {lines} times"
        if job.status == JobStatus.COMPLETED: assert lines == 1
        else: assert job.status == JobStatus.FAILED and job.error.startswith('the job manager stopped '), (job.status, job.error)
    assert {s for s in before.values()} <= {JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED}


def test_a_first_version_file_is_migrated_to_the_current_schema(tmp_path):
    from cjm_fasthtml_workers.core.store import _MIGRATIONS, SCHEMA_VERSION
    db = tmp_path / 'old.db'
    old = sqlite3.connect(db)
    old.executescript(_MIGRATIONS[0] + " PRAGMA user_version = 1;")
    old.execute("INSERT INTO jobs (id, seq, plugin_id, status, priority, created_at) VALUES ('j1', 1, 'echo', 'completed', 0, 1.0)")
    old.commit(); old.close()
    m = manager(db)
    try: assert m.get_job('j1').status == JobStatus.COMPLETED
    finally: m.shutdown()
    con = sqlite3.connect(db)
    assert con.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION
    indexes = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    assert 'jobs_by_status' not in indexes  # dropped in version 4: nothing reads by status, and every write paid for it
    assert 'WITHOUT ROWID' in con.execute("SELECT sql FROM sqlite_master WHERE name = 'sent'").fetchone()[0]


class ReusedIds(JobManager):
    "A manager whose create_job gives the id the app asks for (an app may reuse ids after a restart)."
    def create_job(self, plugin_id, **params):
        job_id = params.pop('job_id')
        return BaseJob(id=job_id, plugin_id=plugin_id, params=params)


def test_a_new_job_with_a_known_id_replaces_the_row_without_failing_the_store(tmp_path):
    db = tmp_path / 'jobs.db'
    async def twice():
        m = ReusedIds('test', 'test', entry_point=store_plugins, job_store=SQLiteJobStore(db), worker_config=WorkerConfig(max_workers=1))
        try:
            first = await m.wait_for_job((await m.start_job('echo', job_id='same', text='one')).id, 30)
            second = await m.wait_for_job((await m.start_job('echo', job_id='same', text='two')).id, 30)
            assert m.store.failed is None
            return first, second
        finally: await m.shutdown()
    first, second = run(twice())
    assert (first.result, second.result) == ({'text': 'one'}, {'text': 'two'})
    m = manager(db)
    try: assert m.get_job('same').result == {'text': 'two'}
    finally: m.shutdown()


def _hold_until_released(release):
    release.wait(30)


def test_a_forked_child_does_not_keep_the_store_locked(tmp_path):
    "A worker forked while the manager holds the store must not hold its lock: after the manager dies, the next one may open it."
    import multiprocessing
    ctx = multiprocessing.get_context('fork')
    store = SQLiteJobStore(tmp_path / 'jobs.db')
    store.open()
    release = ctx.Event()
    child = ctx.Process(target=_hold_until_released, args=(release,))
    child.start()
    try:
        store.close()  # the child still runs, forked while the lock was held
        again = SQLiteJobStore(tmp_path / 'jobs.db')
        again.open()
        again.close()
    finally:
        release.set(); child.join(10)
        if child.is_alive(): child.kill(); child.join()
