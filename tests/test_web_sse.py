"""The web side without a browser: the package imports without fasthtml, and the SSE stream works over a real server."""
import os, subprocess, sys, textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_core_imports_without_fasthtml():
    "Only the web modules need the `web` extra: block fasthtml and import the rest."
    code = textwrap.dedent("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('fasthtml', 'starlette'): raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import cjm_fasthtml_workers.managers.base, cjm_fasthtml_workers.web.sse, cjm_fasthtml_workers.demo.app
        try: import cjm_fasthtml_workers.web.dashboard
        except ImportError: pass
        else: raise SystemExit('dashboard imported without fasthtml?')
        print('ok')""")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr
