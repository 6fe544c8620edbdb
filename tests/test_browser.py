"""Browser tests: the demo server (`python -m cjm_fasthtml_workers.demo --offline`) driven by headless Chromium.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with a few lines of urllib (no Selenium).
Needs Debian's `chromium` and `chromium-driver`, and htmx fetched from the npm registry (tests/fetch_js.sh;
fetched automatically when npm is available). Skipped when they are missing, unless CI=true.
Every test starts its own server and browser and leaves no process behind.
"""
import base64, json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'test-output'
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a checkout without installing
CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')

def _skip(reason):
    if CI: pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)

pytest.importorskip('fasthtml', reason='the web extra (python-fasthtml) is not installed')

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_for(cond, timeout=20.0, what='condition', interval=0.05):
    "Poll `cond` until it returns something truthy, or fail after `timeout` seconds."
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v: return v
        except (urllib.error.URLError, ConnectionError) as e: last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ''))

def _http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return json.loads(r.read() or b'null')
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: {e.code} {e.read()[:500]!r}") from None

def stop_group(proc, sig=signal.SIGTERM, timeout=15.0) -> bool:
    "Signal `proc`'s process group, wait for `proc`, kill what remains; True when it all ended on the first signal."
    clean = True
    try: os.killpg(proc.pid, sig)
    except ProcessLookupError: pass
    try: proc.wait(timeout)
    except subprocess.TimeoutExpired: clean = False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try: os.killpg(proc.pid, 0)
        except ProcessLookupError: return clean
        time.sleep(0.05)
    clean = False
    try: os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError: pass
    proc.wait(5)
    return clean

class Browser:
    "A headless Chromium session through chromedriver's WebDriver HTTP API."
    def __init__(self):
        self.port = free_port()
        self.logdir = tempfile.mkdtemp(prefix='cjm-chrome-')
        self.driver = subprocess.Popen([CHROMEDRIVER, f'--port={self.port}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.base = f'http://127.0.0.1:{self.port}'
        wait_for(lambda: _http('GET', f'{self.base}/status', timeout=2)['value']['ready'], 15, 'chromedriver')
        args = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update',
                '--disable-sync', '--disable-dev-shm-usage', f'--user-data-dir={self.logdir}/profile', '--window-size=1360,1000']
        caps = {'capabilities': {'alwaysMatch': {'browserName': 'chrome', 'goog:chromeOptions': {'binary': CHROMIUM, 'args': args}}}}
        self.session = _http('POST', f'{self.base}/session', caps, timeout=60)['value']['sessionId']
    def cmd(self, method, path, body=None): return _http(method, f'{self.base}/session/{self.session}{path}', body)['value']
    def get(self, url): self.cmd('POST', '/url', {'url': url})
    def js(self, script, *args): return self.cmd('POST', '/execute/sync', {'script': script, 'args': list(args)})
    def refresh(self): self.cmd('POST', '/refresh', {})
    def screenshot(self, path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(self.cmd('GET', '/screenshot')))
    def quit(self):
        try: _http('DELETE', f'{self.base}/session/{self.session}', timeout=15)
        except Exception: pass
        stop_group(self.driver, signal.SIGTERM, 10)
        shutil.rmtree(self.logdir, ignore_errors=True)

@pytest.fixture(scope='session')
def js_dir():
    from cjm_fasthtml_workers.web.dashboard import default_js_dir, has_local_js, fetch_js
    d = default_js_dir()
    if not has_local_js(d):
        try: fetch_js(d)
        except Exception as e: _skip(f"htmx is not available offline and could not be fetched from npm: {e}")
    return d

@pytest.fixture
def server(js_dir):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    log = open(tempfile.mktemp(prefix='cjm-demo-', suffix='.log'), 'w+')
    proc = subprocess.Popen([sys.executable, '-m', 'cjm_fasthtml_workers.demo', '--offline', '--js-dir', str(js_dir), '--port', str(port),
                             '--workers', '2', '--log-level', 'warning'], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        wait_for(lambda: proc.poll() is None and urllib.request.urlopen(url, timeout=2).status == 200, 30, 'the demo server')
        yield url
    finally:
        clean = stop_group(proc, signal.SIGINT, 20)  # Ctrl-C: the whole group, like a terminal
        log.seek(0); output = log.read(); log.close(); os.unlink(log.name)
        assert clean, f"the demo server did not stop cleanly on Ctrl-C:\n{output[-3000:]}"
        assert proc.returncode == 0, f"the demo server exited with {proc.returncode}:\n{output[-3000:]}"

@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER): _skip("chromium and chromedriver are not installed (Debian packages chromium, chromium-driver)")
    b = Browser()
    try: yield b
    finally: b.quit()

# --- page helpers ---
def open_dashboard(b, url):
    b.get(url)
    wait_for(lambda: b.js("return !!(window.htmx && document.getElementById('live') && htmx.version)"), 10, 'htmx to load')
    wait_for(lambda: b.js("return document.querySelectorAll('#workers tr[data-state=idle]').length") == 2, 20, 'two idle workers')

def start_preset(b, plugin_id):
    b.js("document.getElementById('form-msg').textContent=''; document.querySelector(`.btn-preset[data-plugin='${arguments[0]}']`).click()", plugin_id)
    return wait_for(lambda: (b.js("return document.getElementById('form-msg').textContent") or '').startswith('Started ')
                    and b.js("return document.getElementById('form-msg').textContent").split()[1], 10, f'{plugin_id} to start')

def start_form(b, plugin_id, params):
    b.js("document.getElementById('form-msg').textContent=''; document.getElementById('plugin_id').value=arguments[0];"
         "document.getElementById('params').value=arguments[1]; document.getElementById('start').click()", plugin_id, json.dumps(params))
    return wait_for(lambda: (b.js("return document.getElementById('form-msg').textContent") or '').startswith('Started ')
                    and b.js("return document.getElementById('form-msg').textContent").split()[1], 10, f'{plugin_id} to start')

def status(b, jid): return b.js("const e = document.getElementById('job-' + arguments[0]); return e ? e.dataset.status : null", jid)
def output(b, jid): return b.js("const e = document.getElementById('out-' + arguments[0]); return e ? e.textContent : ''", jid)
def wait_status(b, jid, st, timeout=20): return wait_for(lambda: status(b, jid) == st, timeout, f'job {jid} to be {st} (is {status(b, jid)})')

def click_cancel(b, jid, tries=5):
    """Click a job's Cancel button until its card reports cancelled. htmx wires up a card swapped in over SSE
    after its settle delay, so a click in the same instant can fall on a button not yet live; a person clicks again."""
    for _ in range(tries):
        b.js("const x = document.querySelector('#job-' + arguments[0] + ' .btn-cancel'); if (x) x.click()", jid)
        try: return wait_status(b, jid, 'cancelled', timeout=4)
        except AssertionError: continue
    wait_status(b, jid, 'cancelled', timeout=1)

WORDS = 'the quick brown fox jumps over the lazy dog'

# --- tests ---
def test_streaming_job_shows_chunks_live(server, browser):
    open_dashboard(browser, server)
    jid = start_form(browser, 'stream-words', {'text': WORDS, 'delay': 0.15})
    seen = set()
    def progressed():
        out = output(browser, jid).split()
        if status(browser, jid) == 'running' and out: seen.add(len(out))
        return status(browser, jid) == 'completed'
    wait_for(progressed, 20, 'the stream to complete')
    assert len(seen) >= 3, f"expected the output to grow live while running, saw word counts {sorted(seen)}"
    assert output(browser, jid).split() == WORDS.split()

def test_plugin_output_is_escaped(server, browser):
    open_dashboard(browser, server)
    evil = '<script>window.pwned=1</script> <img src=x onerror="window.pwned=2"> <b>bold</b>'
    jid = start_form(browser, 'stream-words', {'text': evil, 'delay': 0})
    wait_status(browser, jid, 'completed')
    assert output(browser, jid).split() == evil.split()
    assert browser.js("return window.pwned === undefined")
    assert browser.js("return document.getElementById('out-' + arguments[0]).children.length", jid) == 0

def test_cancel_running_job_while_another_runs(server, browser):
    open_dashboard(browser, server)
    a = start_preset(browser, 'sleep')
    b = start_form(browser, 'stream-words', {'text': WORDS, 'delay': 0.4, 'repeat': 3})
    wait_status(browser, a, 'running'); wait_status(browser, b, 'running')
    click_cancel(browser, a)
    assert status(browser, b) == 'running'
    n = len(output(browser, b).split())
    wait_for(lambda: len(output(browser, b).split()) > n, 10, 'the other job to keep streaming')
    assert status(browser, b) == 'running'
    assert browser.js("return document.querySelector('#job-' + arguments[0] + ' .btn-cancel')", a) is None

def test_crashing_plugin_fails_and_next_job_runs(server, browser):
    open_dashboard(browser, server)
    c = start_preset(browser, 'crash')
    wait_status(browser, c, 'failed')
    err = browser.js("return document.querySelector('#job-' + arguments[0] + ' .error').textContent", c)
    assert 'SIGKILL' in err or 'signal' in err or 'exit' in err, err
    wait_for(lambda: browser.js("return [...document.querySelectorAll('#workers tr[data-state]')].some(r => r.children[3].textContent.trim() !== '0')"),
             20, 'the workers panel to show a restart')
    n = start_form(browser, 'stream-words', {'text': 'after the crash', 'delay': 0})
    wait_status(browser, n, 'completed')
    assert output(browser, n).split() == ['after', 'the', 'crash']

def test_reload_mid_job_continues_live(server, browser):
    open_dashboard(browser, server)
    jid = start_form(browser, 'stream-words', {'text': WORDS, 'delay': 0.25, 'repeat': 2})
    wait_for(lambda: len(output(browser, jid).split()) >= 2, 10, 'some output')
    browser.js("window.beforeReload = true")
    browser.refresh()
    wait_for(lambda: browser.js("return window.beforeReload === undefined && !!window.htmx"), 10, 'the page to reload')
    n = len(output(browser, jid).split())
    assert status(browser, jid) == 'running' and n < 18, (status(browser, jid), n)
    wait_for(lambda: len(output(browser, jid).split()) > n, 10, 'output to keep arriving after the reload')
    wait_status(browser, jid, 'completed')
    assert output(browser, jid).split() == WORDS.split() * 2

def test_dashboard_screenshot(server, browser):
    "A dashboard with every kind of job, saved to test-output/dashboard.png."
    open_dashboard(browser, server)
    ok = start_form(browser, 'stream-words', {'text': WORDS, 'delay': 0})
    wait_status(browser, ok, 'completed')
    f = start_preset(browser, 'fail'); wait_status(browser, f, 'failed')
    x = start_preset(browser, 'sleep'); wait_status(browser, x, 'running')
    click_cancel(browser, x)
    p = start_form(browser, 'count-primes', {'limit': 2_000_000})
    s = start_form(browser, 'stream-words', {'text': WORDS + ' ' + WORDS, 'delay': 0.3, 'repeat': 3})
    wait_for(lambda: len(output(browser, s).split()) >= 6, 15, 'streamed output')
    wait_for(lambda: browser.js("const b = document.querySelector('#job-' + arguments[0] + ' .bar-fill'); return b && parseFloat(b.style.width) > 3", p),
             20, 'progress on the CPU-bound job')
    browser.screenshot(OUT / 'dashboard.png')
    assert (OUT / 'dashboard.png').stat().st_size > 10_000
