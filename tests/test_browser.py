"""Browser tests: the demo server (`python -m cjm_fasthtml_workers.demo --offline`) driven by headless Chromium.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with a few lines of urllib (no Selenium).
Needs Debian's `chromium` and `chromium-driver`, and htmx fetched from the npm registry (tests/fetch_js.sh;
fetched automatically when npm is available). Skipped when they are missing, unless CI=true.
Every test starts its own server and browser and leaves no process behind. Each group of tests below
answers one numbered point of issue 12 (the dashboard a person can rely on).
"""
import base64, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.error, urllib.parse, urllib.request
from contextlib import contextmanager
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'test-output'
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a checkout without installing
CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
ELEMENT = 'element-6066-11e4-a52e-4f466cb35003'

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
    "A headless Chromium session through chromedriver's WebDriver HTTP API (with Chromium's network log)."
    def __init__(self, width=1360, height=1000):
        self.port = free_port()
        self.logdir = tempfile.mkdtemp(prefix='cjm-chrome-')
        self.driver = subprocess.Popen([CHROMEDRIVER, f'--port={self.port}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.base = f'http://127.0.0.1:{self.port}'
        try:
            wait_for(lambda: _http('GET', f'{self.base}/status', timeout=2)['value']['ready'], 15, 'chromedriver')
            args = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update',
                    '--disable-sync', '--disable-dev-shm-usage', f'--user-data-dir={self.logdir}/profile', f'--window-size={width},{height}']
            caps = {'capabilities': {'alwaysMatch': {'browserName': 'chrome', 'goog:loggingPrefs': {'performance': 'ALL'},
                                                     'goog:chromeOptions': {'binary': CHROMIUM, 'args': args}}}}
            self.session = _http('POST', f'{self.base}/session', caps, timeout=60)['value']['sessionId']
        except Exception:
            stop_group(self.driver, signal.SIGTERM, 10); shutil.rmtree(self.logdir, ignore_errors=True); raise
        self.net = []  # Chromium's network events so far (see `network`)
    def cmd(self, method, path, body=None): return _http(method, f'{self.base}/session/{self.session}{path}', body)['value']
    def get(self, url): self.cmd('POST', '/url', {'url': url})
    def js(self, script, *args): return self.cmd('POST', '/execute/sync', {'script': script, 'args': list(args)})
    def refresh(self): self.cmd('POST', '/refresh', {})
    def viewport(self, width, height, mobile=False):
        "Make the page's viewport exactly width x height CSS pixels (a phone with `mobile`)."
        self.cmd('POST', '/goog/cdp/execute', {'cmd': 'Emulation.setDeviceMetricsOverride',
                                               'params': {'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': mobile}})
    def network(self):
        "Chromium's network events since the last call, added to `self.net`: (method, params) pairs."
        new = [json.loads(e['message'])['message'] for e in self.cmd('POST', '/se/log', {'type': 'performance'})]
        new = [(m['method'], m['params']) for m in new if m['method'].startswith('Network.')]
        self.net += new
        return new
    def press(self, css, ms=100):
        "Press the mouse on the middle of the element `css` for `ms` milliseconds, as a person does."
        x, y = self.js("const e = document.querySelector(arguments[0]); e.scrollIntoView({block: 'center'});"
                       "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]", css)
        self.cmd('POST', '/actions', {'actions': [{'type': 'pointer', 'id': 'mouse', 'parameters': {'pointerType': 'mouse'}, 'actions': [
            {'type': 'pointerMove', 'origin': 'viewport', 'x': int(x), 'y': int(y), 'duration': 0},
            {'type': 'pointerDown', 'button': 0}, {'type': 'pause', 'duration': ms}, {'type': 'pointerUp', 'button': 0}]}]})
        self.cmd('DELETE', '/actions')
    def screenshot(self, path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(self.cmd('GET', '/screenshot')))
    def quit(self):
        try: _http('DELETE', f'{self.base}/session/{self.session}', timeout=15)
        except Exception: pass
        stop_group(self.driver, signal.SIGTERM, 10)
        shutil.rmtree(self.logdir, ignore_errors=True)

def workers_idle(browser, n=2):
    "Wait until the page shows `n` idle workers (the demo servers here run 2)."
    wait_for(lambda: browser.js("return document.querySelectorAll('#workers [data-state=idle]').length") == n, 20, f'{n} idle workers')

def stream_bytes(events, since=0):
    "Bytes received on the dashboard's event stream(s) in `events` (Chromium network events), from index `since`."
    ids = {p['requestId'] for m, p in events if m == 'Network.requestWillBeSent' and '/stream?' in p['request']['url']}
    return sum(p['dataLength'] for m, p in events[since:] if m == 'Network.dataReceived' and p['requestId'] in ids)

@pytest.fixture(scope='session')
def js_dir():
    from cjm_fasthtml_workers.web.dashboard import default_js_dir, has_local_js, fetch_js
    d = default_js_dir()
    if not has_local_js(d):
        try: fetch_js(d)
        except Exception as e: _skip(f"htmx is not available offline and could not be fetched from npm: {e}")
    return d

@contextmanager
def demo_server(js_dir, port=None, workers=2, db=None):
    """The demo app in its own process group; yields its URL; stops it with Ctrl-C (SIGINT) and checks it stopped cleanly.
    Its jobs are kept in the SQLite file `db`, or in memory only (never in the user's own cache)."""
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    log = open(tempfile.mktemp(prefix='cjm-demo-', suffix='.log'), 'w+')
    proc = subprocess.Popen([sys.executable, '-m', 'cjm_fasthtml_workers.demo', '--offline', '--js-dir', str(js_dir), '--port', str(port),
                             '--workers', str(workers), '--log-level', 'warning', *(['--db', str(db)] if db else ['--memory'])], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
def server(js_dir):
    with demo_server(js_dir) as url: yield url

def _browser():
    if not (CHROMIUM and CHROMEDRIVER): _skip("chromium and chromedriver are not installed (Debian packages chromium, chromium-driver)")
    return Browser()

@pytest.fixture
def browser():
    b = _browser()
    try: yield b
    finally: b.quit()

@pytest.fixture
def browser2():
    "A second browser: another profile, so another session (another owner)."
    b = _browser()
    try: yield b
    finally: b.quit()

# --- page helpers ---
def open_dashboard(b, url):
    b.get(url)
    wait_for(lambda: b.js("return !!(window.htmx && document.getElementById('dash') && htmx.version)"), 10, 'htmx to load')
    wait_for(lambda: b.js("return document.querySelectorAll('#workers [data-state=idle]').length") == 2, 20, 'two idle workers')
    wait_for(lambda: live_state(b) == 'live', 10, 'the page to be live')

def live_state(b): return b.js("return document.getElementById('live-state').dataset.state")

def _started(b, what):
    return wait_for(lambda: (b.js("return document.getElementById('form-msg').textContent") or '').startswith('Started ')
                    and b.js("return document.getElementById('form-msg').textContent").split()[1], 10, f'{what} to start')

def start_preset(b, plugin_id):
    b.js("document.getElementById('form-msg').textContent=''; document.querySelector(`.btn-preset[data-plugin='${arguments[0]}']`).click()", plugin_id)
    return _started(b, plugin_id)

def start_form(b, plugin_id, params, priority=None):
    b.js("document.getElementById('form-msg').textContent=''; document.getElementById('plugin_id').value=arguments[0];"
         "document.getElementById('params').value=arguments[1]; if (arguments[2] !== null) document.getElementById('priority').value=arguments[2];"
         "document.getElementById('start').click()", plugin_id, json.dumps(params), priority)
    return _started(b, plugin_id)

def form_message(b, plugin_id, params):
    "Submit the form and return the message it shows (for refusals)."
    b.js("const m = document.getElementById('form-msg'); m.textContent=''; document.getElementById('plugin_id').value=arguments[0];"
         "document.getElementById('params').value=arguments[1]; document.getElementById('start').click()", plugin_id, params)
    return wait_for(lambda: b.js("return document.getElementById('form-msg').textContent"), 10, 'a message in the form')

def fetch(b, method, path, body=None):
    "A request from the page (same origin, the page's cookies): [status, text]."
    script = ("const done = arguments[arguments.length - 1];"
              "fetch(arguments[1], {method: arguments[0], body: arguments[2], headers: arguments[2] ? {'Content-Type': 'application/x-www-form-urlencoded'} : {}})"
              ".then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]))")
    return b.cmd('POST', '/execute/async', {'script': script, 'args': [method, path, body]})

def start_fetch(b, plugin_id, params):
    "Start a job with a request from the page; returns (status, text)."
    return fetch(b, 'POST', '/start', urllib.parse.urlencode({'plugin_id': plugin_id, 'params': json.dumps(params)}))

def status(b, jid): return b.js("const e = document.getElementById('job-' + arguments[0]); return e ? e.dataset.status : null", jid)
def output(b, jid): return b.js("const e = document.getElementById('out-' + arguments[0]); return e ? e.textContent : ''", jid)
def wait_status(b, jid, st, timeout=20): return wait_for(lambda: status(b, jid) == st, timeout, f'job {jid} to be {st} (is {status(b, jid)})')

def click_cancel(b, jid):
    "Press the job's Cancel button once, as a person does (100 ms), and wait for the card to say cancelled."
    b.press(f'#job-{jid} .btn-cancel')
    wait_status(b, jid, 'cancelled', timeout=5)

WORDS = 'the quick brown fox jumps over the lazy dog'

# --- the basics: live output, escaping, cancel, crash, reload ---
def test_streaming_job_shows_chunks_live(server, browser):
    open_dashboard(browser, server)
    jid = start_form(browser, 'stream-words', {'text': WORDS, 'delay': 0.15, 'repeat': 2})
    seen = set()
    def progressed():
        out = output(browser, jid).split()
        if status(browser, jid) == 'running' and out: seen.add(len(out))
        return status(browser, jid) == 'completed'
    wait_for(progressed, 20, 'the stream to complete')
    assert len(seen) >= 4, f"expected the output to grow live while running, saw word counts {sorted(seen)}"
    assert output(browser, jid).split() == WORDS.split() * 2

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
    wait_for(lambda: browser.js("return [...document.querySelectorAll('#workers [data-state]')].some(r => r.dataset.restarts !== '0')"),
             20, 'the workers panel to show a restart')
    assert 'crashed' in browser.js("return document.getElementById('workers').textContent")
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

# --- 1. incremental updates ---
@pytest.mark.parametrize('plugin,params', [('stream-words', {'text': WORDS, 'delay': 0.01, 'repeat': 300}),  # 100 words (and progress reports) a second
                                           ('count-primes', {'limit': 30_000_000})])  # progress as fast as it counts
def test_cancel_on_the_first_short_press(server, browser, plugin, params):
    "A 100 ms mouse press on Cancel cancels a job that updates many times a second, on the first press: the button is never replaced."
    open_dashboard(browser, server)
    jid = start_form(browser, plugin, params)
    wait_status(browser, jid, 'running')
    browser.js("window.updates = 0; window.btn = document.querySelector('#job-' + arguments[0] + ' .btn-cancel');"
               "new MutationObserver(ms => { window.updates += ms.length; }).observe(document.getElementById('job-' + arguments[0]),"
               "{subtree: true, childList: true, characterData: true})", jid)
    wait_for(lambda: browser.js("return window.updates") >= 10, 10, 'the card to update')
    t0, u0 = time.monotonic(), browser.js("return window.updates")
    u1 = wait_for(lambda: (u := browser.js("return window.updates")) >= u0 + 10 and u, 10, 'the card to keep updating')
    rate = (u1 - u0) / (time.monotonic() - t0)
    assert rate <= 40, f"the page re-rendered the card {rate:.0f} times a second: updates are not coalesced"
    assert browser.js("return document.contains(window.btn)"), "the Cancel button was replaced while the job ran"
    browser.press(f'#job-{jid} .btn-cancel', 100)
    wait_status(browser, jid, 'cancelled', timeout=3)

def test_bytes_per_tab_grow_linearly_with_the_output(server, browser):
    "A 2,000-word stream sends a tab less than 3x its output, and the output arrives whole."
    open_dashboard(browser, server)
    words = [f"w{i % 97}{'x' * (i % 5)}" for i in range(2000)]
    browser.network()
    mark = len(browser.net)
    jid = start_form(browser, 'stream-words', {'text': ' '.join(words), 'delay': 0.004})
    wait_status(browser, jid, 'completed', timeout=60)
    wait_for(lambda: len(output(browser, jid)) >= len(' '.join(words)), 5, 'the whole output')
    workers_idle(browser)  # the worker pool's update, the last to come, has arrived too
    browser.network()
    sent = stream_bytes(browser.net, mark)
    size = len((' '.join(words) + ' ').encode())
    assert output(browser, jid).split() == words
    assert sent < 3 * size, f"{sent:,} bytes reached the tab for an output of {size:,} bytes ({sent / size:.1f}x)"

def test_a_large_result_is_cut_on_the_page(server, browser):
    "A 10 MB result: the page stays small and quick, shows a marker and links to the full text; a later job sends little."
    open_dashboard(browser, server)
    jid = start_form(browser, 'make-text', {'size': 10_000_000})
    wait_status(browser, jid, 'completed', timeout=30)
    assert 'more characters · full result' in browser.js("return document.getElementById('res-' + arguments[0]).textContent", jid)
    t0 = time.monotonic()
    browser.refresh(); open_dashboard(browser, server)
    assert time.monotonic() - t0 < 5
    assert browser.js("return document.documentElement.outerHTML.length") < 100_000
    code, text = fetch(browser, 'GET', f'/job/{jid}/output')
    assert code == 200 and len(text) == 10_000_000
    browser.network(); mark = len(browser.net)
    small = start_form(browser, 'echo', {'text': 'small'})
    wait_status(browser, small, 'completed')
    workers_idle(browser); browser.network()
    assert stream_bytes(browser.net, mark) < 10_000

# --- 2. true state after reconnect ---
def test_a_server_restart_under_an_open_page(js_dir, browser):
    "The page says it is reconnecting while the server is down, then shows the new server's state (no old jobs, new pids) within 2 s."
    port = free_port()
    with demo_server(js_dir, port) as url:
        open_dashboard(browser, url)
        old = start_preset(browser, 'sleep')
        wait_status(browser, old, 'running')
        old_pids = set(browser.js("return [...document.querySelectorAll('#workers [data-pid]')].map(e => e.dataset.pid)"))
    wait_for(lambda: live_state(browser) in ('reconnecting', 'offline'), 10, 'the page to notice the server is gone')
    assert status(browser, old) == 'running'  # what it last knew; it does not say live
    with demo_server(js_dir, port) as url:
        t0 = time.monotonic()
        def fresh():  # the old server's job and workers gone, the new server's workers shown (idle, or still starting)
            pids = set(browser.js("return [...document.querySelectorAll('#workers [data-state]')].map(e => e.dataset.pid)")) - {''}
            return live_state(browser) == 'live' and status(browser, old) is None and not pids & old_pids and \
                browser.js("return document.querySelectorAll('#workers [data-state]').length") == 2
        wait_for(fresh, 10, "the new server's state")
        took = time.monotonic() - t0
        assert took < 2.0, f"the new server's state took {took:.1f} s to show"
        wait_for(lambda: browser.js("return document.querySelectorAll('#workers [data-state=idle]').length") == 2, 20, 'the new workers')
        n = start_form(browser, 'echo', {'text': 'new server'})
        wait_status(browser, n, 'completed')

def test_a_restarted_demo_still_shows_the_earlier_jobs(js_dir, browser, tmp_path):
    "With its SQLite file, a restarted demo shows the browser's jobs of before: finished with results, the one it ran failed with the cause."
    port, db = free_port(), tmp_path / 'demo-jobs.db'
    with demo_server(js_dir, port, db=db) as url:
        open_dashboard(browser, url)
        done = start_form(browser, 'echo', {'text': 'kept across a restart'})
        wait_status(browser, done, 'completed')
        cut = start_preset(browser, 'sleep')
        wait_status(browser, cut, 'running')
    with demo_server(js_dir, port, db=db) as url:
        open_dashboard(browser, url)  # the same browser, so the same session: its jobs
        wait_status(browser, done, 'completed')
        assert 'kept across a restart' in browser.js("return document.getElementById('job-' + arguments[0]).textContent", done)
        wait_status(browser, cut, 'failed')
        assert 'stopped while it ran' in browser.js("return document.getElementById('job-' + arguments[0]).textContent", cut)
        again = start_form(browser, 'echo', {'text': 'after the restart'})
        wait_status(browser, again, 'completed')

# --- 3. a job view worth opening ---
def test_job_view(server, browser):
    "Times, parameters (escaped), tabs, paging over every job, a job's own page with its full output, the workers' facts, no 404s."
    open_dashboard(browser, server)
    jid = start_form(browser, 'stream-words', {'text': '<i>hi</i> ' + WORDS, 'delay': 0})
    wait_status(browser, jid, 'completed')
    meta = browser.js("return document.getElementById('meta-' + arguments[0]).textContent", jid)
    assert re.search(r'created \d\d:\d\d:\d\d.*started \d\d:\d\d:\d\d.*ended \d\d:\d\d:\d\d.*took \d', meta) and '<i>hi</i>' in meta, meta
    assert browser.js("return document.querySelector('#meta-' + arguments[0] + ' i')", jid) is None
    f = start_preset(browser, 'fail'); wait_status(browser, f, 'failed')
    for i in range(23):
        code, text = start_fetch(browser, 'echo', {'text': f'job {i}'})
        assert code == 200, text
    wait_for(lambda: browser.js("return document.querySelectorAll('#job-list .job').length") == 25, 10, '25 cards')
    wait_for(lambda: browser.js("return document.querySelectorAll('#job-list .job-completed').length") == 24, 20, 'the echo jobs to complete')
    # tabs filter and count; paging reaches every job
    browser.get(server + '?status=failed'); wait_for(lambda: live_state(browser) == 'live', 10, 'live')
    assert browser.js("return [...document.querySelectorAll('#job-list .job')].map(e => e.id)") == [f'job-{f}']
    assert 'Failed 1' in browser.js("return document.getElementById('tabs').textContent")
    open_dashboard(browser, server)
    assert browser.js("return document.querySelectorAll('#job-list .job').length") == 20
    browser.js("document.querySelector('#more button').click()")
    wait_for(lambda: browser.js("return document.querySelectorAll('#job-list .job').length") == 25, 10, 'the older jobs')
    assert browser.js(f"return !!document.getElementById('job-{jid}')")
    # the job's own page: full output, live
    browser.get(server + f'job/{jid}')
    wait_for(lambda: live_state(browser) == 'live', 10, 'the job page to be live')
    assert output(browser, jid).split() == ['<i>hi</i>'] + WORDS.split()
    # the workers: pid and host, state, uptime, jobs run, memory, restarts split
    open_dashboard(browser, server)
    facts = browser.js("return [...document.querySelectorAll('#workers .worker')].map(e => e.textContent)")
    assert len(facts) == 2 and all(re.search(r'pid \d+ @\S+.*up \d+.*\d+ jobs run.*\d+ MB.*\d+ restarts', t) for t in facts), facts
    browser.network()
    bad = [(p['response']['url'], p['response']['status']) for m, p in browser.net if m == 'Network.responseReceived' and p['response']['status'] >= 400]
    assert bad == [], bad  # no favicon 404, nothing else missing

def test_phone_layout(server, browser):
    "On a 390 x 844 phone the first job card is visible without scrolling, and ids do not wrap."
    browser.viewport(390, 844, mobile=True)
    open_dashboard(browser, server)
    jid = start_preset(browser, 'count-primes')
    wait_status(browser, jid, 'completed')
    top = browser.js("return document.getElementById('job-' + arguments[0]).getBoundingClientRect().top", jid)
    assert 0 < top < 844 - 80, f"the first card starts at {top}px"
    assert browser.js("return document.documentElement.scrollWidth") <= 390
    heights = browser.js("return [...document.querySelectorAll('.job-id')].map(e => [e.getBoundingClientRect().height, parseFloat(getComputedStyle(e).lineHeight) || 20])")
    assert all(h <= lh * 1.5 for h, lh in heights), heights

# --- 4. HTTP semantics ---
def test_refusals_have_status_codes_and_show_on_the_page(server, browser):
    open_dashboard(browser, server)
    assert form_message(browser, 'echo', '{"text": ').startswith('Parameters are not valid JSON')
    assert form_message(browser, 'echo', '{"priority": 1}').find("one of start_job's own arguments") > 0
    assert fetch(browser, 'POST', '/start', 'plugin_id=nope&params=%7B%7D') == [422, "Unknown plugin 'nope'"]
    assert fetch(browser, 'POST', '/start', 'plugin_id=echo&priority=x')[0] == 422
    code, text = fetch(browser, 'POST', '/start', 'plugin_id=' + 'x' * 10_000_000)
    assert code == 413 and len(text) < 200, (code, text[:300])
    assert fetch(browser, 'POST', '/job/0123456789abcdef01234567/cancel') == [404, 'No such job']
    assert fetch(browser, 'GET', '/stream?last_event_id=-5')[0] == 400
    jid = start_form(browser, 'echo', {'text': 'done'}); wait_status(browser, jid, 'completed')
    assert fetch(browser, 'POST', f'/job/{jid}/cancel')[0] == 409
    assert browser.js("return document.getElementById('flash').textContent") == ''

# --- 5. security ---
def _post(url, data, headers):
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(), headers=headers, method='POST')
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()

def test_cross_site_requests_and_other_hosts_are_refused(server, browser):
    open_dashboard(browser, server)
    host = urllib.parse.urlsplit(server).netloc
    assert _post(server + 'start', {'plugin_id': 'echo'}, {'Origin': 'http://evil.example'}) == (403, 'Cross-site request refused')
    assert _post(server + 'start', {'plugin_id': 'echo'}, {'Origin': server.rstrip('/'), 'Sec-Fetch-Site': 'cross-site'})[0] == 403
    assert _post(server + 'start', {'plugin_id': 'echo'}, {'Origin': 'null'})[0] == 403
    req = urllib.request.Request(server, headers={'Host': f'rebound.evil.example:{host.split(":")[1]}'})
    with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    with urllib.request.urlopen(server, timeout=10) as r: h = r.headers
    assert h['X-Frame-Options'] == 'DENY' and h['X-Content-Type-Options'] == 'nosniff'
    assert "frame-ancestors 'none'" in h['Content-Security-Policy'] and "script-src 'self'" in h['Content-Security-Policy']

def test_a_second_session_cannot_see_or_cancel_the_first_sessions_job(server, browser, browser2):
    open_dashboard(browser, server); open_dashboard(browser2, server)
    browser2.js("window.got = []; const es = new EventSource('/stream'); for (const t of ['update', 'reset']) es.addEventListener(t, e => window.got.push(e.data))")
    jid = start_form(browser, 'stream-words', {'text': WORDS, 'delay': 0.2, 'repeat': 3})
    wait_status(browser, jid, 'running')
    mine = start_form(browser2, 'echo', {'text': 'mine'}); wait_status(browser2, mine, 'completed')
    assert status(browser2, jid) is None and status(browser, mine) is None
    assert fetch(browser2, 'POST', f'/job/{jid}/cancel') == [404, 'No such job']
    assert fetch(browser2, 'GET', f'/job/{jid}')[0] == 404 and fetch(browser2, 'GET', f'/job/{jid}/output')[0] == 404
    code, text = fetch(browser2, 'GET', '/list?status=all')
    assert code == 200 and jid not in text
    assert _post(server + f'job/{jid}/cancel', {}, {})[0] == 404  # no cookie at all
    got = browser2.js("return window.got")
    assert any(mine in m for m in got) and not any(jid in m for m in got), got  # its event stream carried nothing of the other's job
    assert status(browser, jid) == 'running'
    assert len(jid) == 24 and re.fullmatch(r'[0-9a-f]{24}', jid) and jid != mine

# --- 6. abuse and crash storms ---
def test_twenty_crash_jobs_leave_a_working_pool(server, browser):
    "One session sends 20 crash jobs (the demo lets it have 8 unfinished at once): each fails, the pool is never down, and it still runs jobs."
    open_dashboard(browser, server)
    browser.js("window.pool = new Set(); new MutationObserver(() => window.pool.add(document.getElementById('pool-state').dataset.state))"
               ".observe(document.getElementById('dash'), {subtree: true, childList: true, attributes: true})")
    sent, refused = [], 0
    while len(sent) < 20:
        code, text = start_fetch(browser, 'crash', {'how': 'kill'})
        if code == 200: sent.append(re.search(r'Started (\w+)', text).group(1))
        else:
            assert code == 429 and 'unfinished jobs' in text, (code, text); refused += 1
            time.sleep(0.2)
    assert refused > 0  # the per-owner limit held it back
    wait_for(lambda: all(status(browser, j) == 'failed' for j in sent), 90, 'every crash job to fail')
    assert 'down' not in browser.js("return [...window.pool]")
    jid = start_form(browser, 'stream-words', {'text': 'still working', 'delay': 0})
    wait_status(browser, jid, 'completed', timeout=30)
    wait_for(lambda: browser.js("return document.getElementById('pool-state').dataset.state") == 'ok', 20, 'the pool to be ready again')
    assert 'No workers' not in browser.js("return document.body.textContent")

def test_the_page_says_plainly_when_the_pool_is_degraded(server, browser):
    open_dashboard(browser, server)
    browser.js("window.seen = []; new MutationObserver(() => { const b = document.querySelector('#workers .banner');"
               "if (b) window.seen.push(b.textContent); }).observe(document.getElementById('dash'), {subtree: true, childList: true})")
    for _ in range(3): start_fetch(browser, 'crash', {'how': 'kill'})
    wait_for(lambda: browser.js("return window.seen.length") > 0, 20, 'a banner')
    assert any(t.startswith('Degraded:') and 'restarting' in t for t in browser.js("return window.seen")), browser.js("return window.seen")

# --- the screenshots of the docs page ---
def test_dashboard_screenshots(server, browser):
    "A dashboard with every kind of job, at 1280x800 (test-output/dashboard.png) and on a 390x844 phone (dashboard-phone.png)."
    browser.viewport(1280, 800)
    open_dashboard(browser, server)
    ok = start_form(browser, 'stream-words', {'text': WORDS, 'delay': 0})
    wait_status(browser, ok, 'completed')
    f = start_preset(browser, 'fail'); wait_status(browser, f, 'failed')
    x = start_preset(browser, 'sleep'); wait_status(browser, x, 'running')
    click_cancel(browser, x)
    p = start_form(browser, 'count-primes', {'limit': 3_000_000})
    s = start_form(browser, 'stream-words', {'text': WORDS + ' ' + WORDS, 'delay': 0.3, 'repeat': 3})
    wait_for(lambda: len(output(browser, s).split()) >= 6, 15, 'streamed output')
    wait_for(lambda: browser.js("const b = document.querySelector('#job-' + arguments[0] + ' progress'); return b && b.value > 0.03", p),
             20, 'progress on the CPU-bound job')
    browser.js("document.getElementById('form-msg').textContent = ''")
    browser.screenshot(OUT / 'dashboard.png')
    browser.viewport(390, 844, mobile=True)
    browser.refresh()  # as a phone loads it (the custom form folded)
    wait_for(lambda: live_state(browser) == 'live' and len(output(browser, s).split()) >= 6, 10, 'the page on the phone')
    browser.screenshot(OUT / 'dashboard-phone.png')
    assert (OUT / 'dashboard.png').stat().st_size > 10_000 and (OUT / 'dashboard-phone.png').stat().st_size > 10_000
