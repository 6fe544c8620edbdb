"""Worker side of the upstream-compatibility tests: a cjm-plugin-system plugin and an upstream-style process target.

Importable by spawned worker processes (conftest puts tests/ on sys.path). Needs cjm-plugin-system 0.0.9, the last
release whose in-process `PluginManager` has the API upstream's worker drives (discover_plugins, load_plugin(meta,
config), execute_plugin(name, **params), ...); from 0.0.10 on it is a different, manifest-based system.

cjm-plugin-system finds plugins through entry points of a group named by the plugin interface. Instead of installing a
package that declares one, `plugin_manager_factory` gives the real `PluginManager` an `EntryPoints` list made here: its
own discovery and loading code (`discover_plugins`, `load_plugin`, `reload_plugin`, ...) then runs unchanged.
"""
import os, signal, time
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path
from cjm_plugin_system.core.interface import PluginInterface
from cjm_plugin_system.core.manager import PluginManager
from cjm_fasthtml_workers.core.worker import base_worker_process

GROUP = 'cjm_fasthtml_workers.test_plugins'


class WorkerTestPlugin(PluginInterface):
    "The plugin interface of these tests (cjm-plugin-system wants one interface per entry-point group)."
    entry_point_group = GROUP


class TextResult:
    "What upstream's plugins return: an object with `.text` and `.metadata` (not a dict)."
    def __init__(self, text: str, metadata: dict): self.text, self.metadata = text, metadata
    def __repr__(self): return f"TextResult({self.text!r})"


def _behave(mode: str, seconds: float, started_file: str = None) -> None:
    "Do what the job's `mode` asks before producing output."
    if started_file: Path(started_file).write_text(str(os.getpid()))  # the job really runs in the worker now
    if mode == 'slow': time.sleep(seconds)  # for cancel and timeout tests; stopping the worker ends it
    elif mode == 'fail': raise ValueError("the plugin was asked to fail")
    elif mode == 'exit': os._exit(13)  # the worker process dies mid-job
    elif mode == 'kill': os.kill(os.getpid(), signal.SIGKILL)
    elif mode == 'stubborn':  # ignores SIGTERM, so only SIGKILL ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(seconds)
    elif mode != 'ok': raise ValueError(f"unknown mode {mode!r}")


class TextPlugin(WorkerTestPlugin):
    "Returns `prefix + text` (prefix from its configuration); streams it word by word; can be slow, fail or crash."
    loads = 0  # initialisations in this process

    @property
    def name(self) -> str: return 'text'
    @property
    def version(self) -> str: return '1.0.0'

    def initialize(self, config=None) -> None:
        config = dict(config or {})
        time.sleep(config.get('init_seconds', 0))  # a slow model load, for reload timeouts
        type(self).loads += 1
        self.config = config

    def transform(self, text: str) -> str: return self.config.get('prefix', '') + text

    def execute(self, text: str = '', mode: str = 'ok', seconds: float = 0.0, started_file: str = None, **params):
        _behave(mode, seconds, started_file)
        return TextResult(self.transform(text), {'pid': os.getpid(), 'config': self.config, 'loads': type(self).loads,
                                                 'plugin': self.name, 'params': params})

    def execute_stream(self, text: str = '', mode: str = 'ok', seconds: float = 0.0, started_file: str = None, **params):
        _behave(mode, seconds, started_file)
        for word in self.transform(text).split(): yield word + ' '

    def is_available(self) -> bool: return True
    def get_current_config(self): return self.config
    @staticmethod
    def get_config_dataclass(): return None
    def cleanup(self) -> None:
        time.sleep((self.config or {}).get('cleanup_seconds', 0))  # a slow release, for unload timeouts


class ShoutPlugin(TextPlugin):
    "A second plugin: like TextPlugin, upper-cased."
    loads = 0
    @property
    def name(self) -> str: return 'shout'
    def transform(self, text: str) -> str: return super().transform(text).upper()


PLUGINS = {'text': 'upstream_plugins:TextPlugin', 'shout': 'upstream_plugins:ShoutPlugin'}


def plugin_manager_factory() -> PluginManager:
    "A real cjm-plugin-system PluginManager that discovers the two plugins above (by name: 'text', 'shout')."
    manager = PluginManager(WorkerTestPlugin)
    manager.entry_points = EntryPoints(EntryPoint(name=n, value=v, group=GROUP) for n, v in PLUGINS.items())
    return manager


def worker_process(request_queue, result_queue, response_queue):
    "An upstream-style worker process target, as `get_worker_entry_point()` returns it upstream."
    base_worker_process(request_queue, result_queue, response_queue, plugin_manager_factory,
                        result_adapter=None, supports_streaming=True)


def tagged_result(result) -> dict:
    "A custom result adapter (module level, so a spawned worker can use it)."
    return {'tagged': result.text, 'plugin': result.metadata['plugin']}


def worker_process_tagged(request_queue, result_queue, response_queue):
    "An upstream-style process target with its own result adapter and no streaming."
    base_worker_process(request_queue, result_queue, response_queue, plugin_manager_factory,
                        result_adapter=tagged_result, supports_streaming=False)


def worker_process_never_ready(request_queue, result_queue, response_queue):
    "A process target that never answers (a model load that hangs), for start timeouts."
    time.sleep(120)
