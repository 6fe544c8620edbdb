"""RayBackend on a cluster of several nodes on this machine: workers placed by the resources they ask for, a node lost
mid-job, a node added later, a worker no node can host. Each test removes the nodes it added."""
import asyncio, re, time
import pytest
from conftest import run, add_ray_node
from engine_plugins import plugins_for_tests

pytest.importorskip('ray')
from cjm_fasthtml_workers.backends.ray import RayBackend
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager, JobStatus, NoWorkersError


def manager(name, backend, **config):
    return JobManager(name, name, entry_point=plugins_for_tests, worker_backend=backend, worker_config=WorkerConfig(**config))


async def until(condition, timeout=30.0, interval=0.02):
    "Poll a condition on the manager's state (nothing notifies it) until it holds; its last value."
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline: return condition()
        await asyncio.sleep(interval)
    return True


def test_placement_node_loss_and_a_node_added_later(ray_cluster):
    head = ray_cluster.head_node.node_id
    nodes = {'gpu': add_ray_node(ray_cluster, num_cpus=0, num_gpus=1)}  # a GPU node (no real GPU is needed) and no CPU
    first_gpu_node = nodes['gpu'].node_id

    async def main():
        gpu = manager('gpu', RayBackend(num_gpus=1, num_cpus=0), max_workers=1)
        cpu = manager('cpu', RayBackend(num_cpus=1), max_workers=2)
        try:
            await gpu.start(); await cpu.start()
            placed = gpu.get_workers(), cpu.get_workers()
            running = await gpu.start_job('sleep', seconds=60)
            assert running.status is JobStatus.RUNNING
            lost_at = time.monotonic()
            ray_cluster.remove_node(nodes.pop('gpu'), allow_graceful=False)  # the node dies: no drain, no goodbye
            lost = await gpu.wait_for_job(running.id, 60)
            noticed = time.monotonic() - lost_at
            cpu_jobs = [await cpu.wait_for_job((await cpu.start_job('echo', text=str(i))).id, 30) for i in range(4)]
            waiting = await gpu.start_job('echo', text='on a node added later')
            assert await until(lambda: gpu.get_workers()[0]['state'] == 'placing'), gpu.get_workers()
            still_waiting = waiting.status
            nodes['later'] = add_ray_node(ray_cluster, num_cpus=0, num_gpus=1)
            done = await gpu.wait_for_job(waiting.id, 60)
            return placed, lost, noticed, cpu_jobs, still_waiting, done, gpu.get_workers()[0], cpu.get_workers(), nodes['later'].node_id
        finally:
            await gpu.shutdown(); await cpu.shutdown()

    try: placed, lost, noticed, cpu_jobs, still_waiting, done, gpu_worker, cpu_workers, later = run(main(), timeout=240)
    finally:
        for node in nodes.values(): ray_cluster.remove_node(node)
    (gpu_placed,), cpu_placed = placed
    assert (gpu_placed['node'], gpu_placed['gpu_ids']) == (first_gpu_node, [0])  # GPU-shaped: on the GPU node, given its GPU
    assert [(w['node'], w['gpu_ids']) for w in cpu_placed] == [(head, [])] * 2  # CPU-shaped: on the head
    assert lost.status is JobStatus.FAILED
    assert re.fullmatch(rf"the worker process \(pid {lost.worker_pid}\) died on node {first_gpu_node[:12]} at \S+: "
                        r"the node it ran on was lost.* while running the job", lost.error), lost.error
    assert noticed < 30, f"the lost node's job failed only after {noticed:.1f}s"
    assert all(j.status is JobStatus.COMPLETED for j in cpu_jobs)  # the CPU pool kept working
    assert [w['node'] for w in cpu_workers] == [head] * 2 and sum(w['restarts'] for w in cpu_workers) == 0
    assert still_waiting is JobStatus.PENDING  # nowhere to run until a GPU node came
    assert done.status is JobStatus.COMPLETED and done.result == {'text': 'on a node added later'}
    assert (gpu_worker['node'], gpu_worker['gpu_ids']) == (later, [0])  # the pool recovered on the new node


def test_a_worker_no_node_can_host_stays_placing_until_placement_timeout(ray_cluster):
    async def main():
        m = manager('gpu', RayBackend(num_gpus=1, num_cpus=0), max_workers=1, placement_timeout=1.0, restart_policy='never')
        try:
            starting = asyncio.ensure_future(m.start())
            assert await until(lambda: m.get_workers()[0]['state'] == 'placing')
            placing = m.get_workers()[0]
            with pytest.raises(NoWorkersError) as refused: await starting
            return placing, str(refused.value), m.get_workers()[0]
        finally: await m.shutdown()
    placing, message, after = run(main())
    assert placing['pid'] is None and placing['node'] is None and len(placing['worker_id']) == 32
    assert "no place to run a worker was found within 1.0s (placement_timeout)" in message, message
    assert after['state'] in ('retired', 'stopped')
