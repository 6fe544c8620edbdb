"""An app written against upstream cjm-fasthtml-workers 0.0.5, the way upstream's documentation and demo write one.

A dataclass job with domain fields, a module-level process target over `base_worker_process` with a cjm-plugin-system
`PluginManager` in the worker, a `BaseJobManager[Job]` subclass with the four methods to implement and the three hooks,
a plugin registry whose metadata has `.name`, `.category`, `.is_configured` and `get_unique_id()`, and a resource
manager and event broadcaster of the protocols' shapes. Driven by tests/test_upstream_dropin.py; importable by spawned
worker processes (tests/ is on sys.path).
"""
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import upstream_plugins
from cjm_fasthtml_workers.core.adapters import default_result_adapter
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.core.worker import base_worker_process
from cjm_fasthtml_workers.managers.base import BaseJob, BaseJobManager

WORKER_TYPE = 'transcription'


# --- the optional integrations, of the protocols' shapes ---

@dataclass
class CatalogEntry:
    "Plugin metadata as the app's registry has it."
    name: str  # the name the worker's PluginManager knows
    category: str = 'text'
    is_configured: bool = True

    def get_unique_id(self) -> str: return f"catalog-{self.name}"


class Catalog:
    "The app's plugin registry: unique ids outside, plugin names inside the worker."
    def __init__(self):
        self.entries = [CatalogEntry('text'), CatalogEntry('shout')]
        self.configs = {'catalog-text': {'model_id': 'text-model-v1', 'prefix': '~'}, 'catalog-shout': {'model': 'shout-v2'}}
    def get_plugins_by_category(self, category) -> List[CatalogEntry]: return [e for e in self.entries if e.category == category]
    def get_plugin(self, plugin_id: str) -> Optional[CatalogEntry]:
        return next((e for e in self.entries if e.get_unique_id() == plugin_id), None)
    def load_plugin_config(self, plugin_id: str) -> Dict[str, Any]: return dict(self.configs.get(plugin_id, {}))


class WorkerBook:
    "A resource manager that keeps each worker's state, as the protocol's example does."
    def __init__(self): self.workers, self.history = {}, []
    def register_worker(self, pid: int, worker_type: str) -> None:
        self.workers[pid] = {'worker_type': worker_type, 'status': 'idle'}
        self.history.append(('register', pid))
    def unregister_worker(self, pid: int) -> None:
        self.workers.pop(pid, None)
        self.history.append(('unregister', pid))
    def update_worker_state(self, pid: int, status: Optional[str] = None, job_id: Optional[str] = None,
                            plugin_name: Optional[str] = None, plugin_id: Optional[str] = None,
                            loaded_plugin_resource: Optional[str] = None, config: Optional[Dict[str, Any]] = None) -> None:
        self.history.append(('update', pid, status, job_id, loaded_plugin_resource))
        if pid not in self.workers: return
        if status: self.workers[pid]['status'] = status
        if loaded_plugin_resource is not None: self.workers[pid]['loaded_plugin_resource'] = loaded_plugin_resource


class EventLog:
    "An event broadcaster that keeps what it was sent."
    def __init__(self): self.events = []
    async def broadcast(self, event_type: str, data: Dict[str, Any]) -> None: self.events.append((event_type, data))


# --- the job, the worker process and the manager, as upstream's docs write them ---

@dataclass
class TranscriptJob(BaseJob):
    "A job with the app's own fields."
    text: str = ""
    plugin_name: str = ""
    options: Optional[Dict[str, Any]] = None


def transcript_worker(request_queue, result_queue, response_queue):
    "The worker process: upstream's generic loop around a cjm-plugin-system PluginManager."
    base_worker_process(
        request_queue=request_queue,
        result_queue=result_queue,
        response_queue=response_queue,
        plugin_manager_factory=upstream_plugins.plugin_manager_factory,
        result_adapter=default_result_adapter,
        supports_streaming=False,
    )


class TranscriptManager(BaseJobManager[TranscriptJob]):
    "The app's manager, with its hooks."
    def __init__(self, catalog, book, log, worker_config: Optional[WorkerConfig] = None):
        super().__init__(worker_type=WORKER_TYPE, category='text', supports_streaming=False, worker_config=worker_config,
                         plugin_registry=catalog, resource_manager=book, event_broadcaster=log)
        self.completed_count = 0
        self.completions: List[tuple] = []
        self.validations: List[tuple] = []

    def create_job(self, plugin_id: str, **kwargs) -> TranscriptJob:
        plugin_name = self.get_plugin_name(plugin_id)
        return TranscriptJob(id=str(uuid.uuid4()), plugin_id=plugin_id, text=kwargs.pop('text', ''),
                             plugin_name=plugin_name or "unknown", options=kwargs)

    def get_worker_entry_point(self) -> Callable:
        return transcript_worker

    def prepare_execute_request(self, job: TranscriptJob) -> Dict[str, Any]:
        return {'text': job.text, **(job.options or {})}

    def extract_job_result(self, job: TranscriptJob, result_data: Dict[str, Any]) -> Dict[str, Any]:
        return result_data

    def _extract_plugin_resource_identifier(self, config: Dict[str, Any]) -> str:
        return config.get('model_id', config.get('model', 'unknown-resource'))

    async def _validate_resources(self, plugin_id: str, plugin_config: Dict[str, Any]) -> Optional[str]:
        self.validations.append((plugin_id, plugin_config))
        return None

    def _on_job_completed(self, job_id: str) -> None:
        self.completed_count += 1
        job = self.get_job(job_id)
        self.completions.append((job_id, str(job.status), self.get_job_result(job_id)))
