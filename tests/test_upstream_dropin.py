"""The compatibility issue's "Done when": an app written against upstream cjm-fasthtml-workers 0.0.5 runs unchanged.

The app (tests/upstream_dropin_app.py) is written the way upstream's documentation and demo write one. On top of
upstream it asks for two workers; it runs 20 jobs, cancels a running one, loses a worker mid-job, and is shut down by
plain synchronous code after the event loop has finished. Every job must end in exactly one terminal state, with
upstream's result shapes and hooks, and no process may be left.
"""
import importlib, os, signal
from typing import List
import pytest
from conftest import run, child_pids, pid_alive
from upstream_app import need, until

WORKER_TYPE = 'transcription'
TERMINAL_EVENTS = {f'{WORKER_TYPE}:completed', f'{WORKER_TYPE}:failed', f'{WORKER_TYPE}:cancelled'}


@pytest.mark.package  # two workers, and events for every terminal state: beyond upstream 0.0.5
def test_upstream_app_runs_20_jobs_on_2_workers_with_cancel_and_crash(tmp_path):
    need('cjm_plugin_system')
    app = importlib.import_module('upstream_dropin_app')  # an error in upstream's names fails this test, not the collection
    from cjm_fasthtml_workers.core.config import WorkerConfig, RestartPolicy
    assert app.WORKER_TYPE == WORKER_TYPE
    catalog, book, log = app.Catalog(), app.WorkerBook(), app.EventLog()
    before = child_pids()

    async def main():
        manager = app.TranscriptManager(catalog, book, log, WorkerConfig(
            max_workers=2, restart_policy=RestartPolicy.ALWAYS, max_restart_attempts=3, shutdown_timeout_seconds=2.0))
        victim = await manager.start_job('catalog-text', text='to be cancelled', mode='slow', seconds=60,
                                         started_file=str(tmp_path / 'victim'))
        doomed = await manager.start_job('catalog-shout', text='worker lost', mode='slow', seconds=60,
                                         started_file=str(tmp_path / 'doomed'))
        victim_pid = await _started(tmp_path / 'victim')
        doomed_pid = await _started(tmp_path / 'doomed')  # both run at once, one on each worker
        rest = []
        for i in range(18):
            plugin = 'catalog-text' if i % 2 else 'catalog-shout'
            rest.append(await manager.start_job(plugin, text=f'line {i}', **({'mode': 'fail'} if i == 7 else {})))
        assert await manager.cancel_job(victim.id) is True
        os.kill(doomed_pid, signal.SIGKILL)  # the worker dies mid-job (out of memory, say)
        jobs = [victim, doomed] + rest
        await until(lambda: all(str(j.status) in ('completed', 'failed', 'cancelled') for j in jobs), 60, 'every job to finish')
        await until(lambda: all(_terminal_events(log, j) for j in jobs), 20, 'every terminal event')
        await until(lambda: manager.completed_count == 17, 20, 'every completion hook')
        await until(lambda: all(w['state'] in ('idle', 'busy') for w in manager.get_workers()), 30, 'both replacements to be ready')
        statuses = {j.id: str(j.status) for j in jobs}
        results = {j.id: manager.get_job_result(j.id) for j in jobs}
        return manager, jobs, victim_pid, doomed_pid, statuses, results, len(manager.get_all_jobs())

    manager, jobs, victim_pid, doomed_pid, statuses, results, held = run(main())
    # the event loop has finished: shut down from plain synchronous code (an atexit hook, a sync handler)
    manager.shutdown()
    assert child_pids() - before == set(), "worker processes left after a synchronous shutdown() returned"
    worker_pids = {entry[1] for entry in book.history if entry[0] == 'register'}
    assert not any(pid_alive(pid) for pid in worker_pids | {victim_pid, doomed_pid})

    victim, doomed, rest = jobs[0], jobs[1], jobs[2:]
    failing = rest[7]
    assert held == 20 and victim_pid != doomed_pid
    assert victim.worker_pid == victim_pid and doomed.worker_pid == doomed_pid
    # each job ended in exactly one terminal state, and stayed there
    assert statuses[victim.id] == 'cancelled' and statuses[doomed.id] == 'failed' and statuses[failing.id] == 'failed'
    assert all(statuses[j.id] == 'completed' for j in rest if j is not failing)
    assert {j.id: str(j.status) for j in jobs} == statuses
    for j in jobs:
        assert len(_terminal_events(log, j)) == 1, (j.id, _terminal_events(log, j))
        assert _terminal_events(log, j) == [f'{WORKER_TYPE}:{statuses[j.id]}']
        if hasattr(j, 'transitions'):  # this package records every status a job had
            assert [s for s, _ in j.transitions if s in ('completed', 'failed', 'cancelled')] == [statuses[j.id]]
    # upstream's result shapes
    assert results[victim.id] == {'status': 'cancelled'}
    assert results[doomed.id] == {'status': 'error', 'error': doomed.error} and doomed.error
    assert results[failing.id] == {'status': 'error', 'error': failing.error}
    for j in rest:
        if j is failing: continue
        expected = ('~' + j.text) if j.plugin_id == 'catalog-text' else j.text.upper()
        assert results[j.id] == {'status': 'success', 'data': j.result}
        assert j.result['text'] == expected and set(j.result) == {'text', 'metadata'}
        assert j.plugin_name == catalog.get_plugin(j.plugin_id).name
    # the hooks, with upstream's arguments
    assert manager.completed_count == 17
    assert sorted(c[0] for c in manager.completions) == sorted(j.id for j in rest if j is not failing)
    assert all(status == 'completed' and result['status'] == 'success' for _, status, result in manager.completions)
    assert sorted(manager.validations, key=str) == sorted(((j.plugin_id, catalog.load_plugin_config(j.plugin_id)) for j in jobs), key=str)
    # upstream's events and resource manager calls
    started = {d['job_id']: d for t, d in log.events if t == f'{WORKER_TYPE}:started'}
    assert set(started) == {j.id for j in jobs} and all(started[j.id]['plugin_id'] == j.plugin_id for j in jobs)
    assert [d['job_id'] for t, d in log.events if t == f'{WORKER_TYPE}:cancelled'] == [victim.id]
    running = {entry[3]: entry for entry in book.history if entry[0] == 'update' and entry[2] == 'running'}
    assert running[victim.id][4] == 'text-model-v1' and running[doomed.id][4] == 'shout-v2'
    registered = sorted(e[1] for e in book.history if e[0] == 'register')
    assert registered == sorted(e[1] for e in book.history if e[0] == 'unregister') and book.workers == {}
    assert len(registered) >= 4  # two workers, plus the replacements of the cancelled and the lost one


async def _started(path) -> int:
    await until(lambda: os.path.exists(path) and open(path).read(), 30, f"{path.name} to start in a worker")
    return int(open(path).read())


def _terminal_events(log, job) -> List[str]:
    return [t for t, d in log.events if t in TERMINAL_EVENTS and d.get('job_id') == job.id]
