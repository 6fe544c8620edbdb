"""Measure what issue 12 measures, against the demo app of a package tree ROOT (this checkout, or an older one
unpacked with `git archive <commit> | tar -x -C DIR`). Not a test: it prints figures and asserts nothing.

    python tests/measure_dashboard.py ROOT bytes    # SSE bytes one tab receives for a 2,000-word stream (0.005 s a word; WORDS=, DELAY= change it)
    python tests/measure_dashboard.py ROOT page     # page size and render time with a 10 MB result; bytes a later job sends a tab
    python tests/measure_dashboard.py ROOT cancel   # 100 ms mouse presses on Cancel of fast-updating jobs: how many cancel at once
"""
import http.client, http.cookiejar, json, os, re, signal, socket, subprocess, sys, threading, time, urllib.parse, urllib.request
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve()
WHAT = sys.argv[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start_server(port):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(f'/tmp/measure-{port}.log', 'w')
    p = subprocess.Popen([sys.executable, '-m', 'cjm_fasthtml_workers.demo', '--offline', '--port', str(port), '--workers', '2',
                          '--log-level', 'warning'], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    for _ in range(200):
        try:
            if urllib.request.urlopen(url + '/', timeout=2).status == 200: break
        except Exception: time.sleep(0.1)
    time.sleep(1.5)  # workers ready
    return p, url


def stop(p):
    os.killpg(p.pid, signal.SIGINT)
    try: p.wait(20)
    except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait()


class Client:
    def __init__(self, url):
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
    def get(self, path):
        t = time.perf_counter()
        with self.op.open(self.url + path, timeout=120) as r: body = r.read()
        return body, time.perf_counter() - t
    def start(self, plugin_id, params):
        data = urllib.parse.urlencode({'plugin_id': plugin_id, 'params': json.dumps(params), 'priority': '0'}).encode()
        req = urllib.request.Request(self.url + '/start', data=data, headers={'Origin': self.url, 'HX-Request': 'true'})
        try:
            with self.op.open(req, timeout=120) as r: text = r.read().decode()
        except urllib.error.HTTPError as e: text = e.read().decode()
        m = re.search(r'Started ([0-9a-f]+)', text)
        return m.group(1) if m else text
    def cookie_header(self):
        return '; '.join(f'{c.name}={c.value}' for c in self.jar)


def sse_reader(url, cookie, counter, stop_ev):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    conn.request('GET', '/stream', headers={'Cookie': cookie, 'Accept': 'text/event-stream'})
    r = conn.getresponse()
    while not stop_ev.is_set():
        b = r.read1(65536) if hasattr(r, 'read1') else r.read(1)
        if not b: break
        counter[0] += len(b)
    conn.close()


WORDS = ('lorem ipsum dolor sit amet elit sed tempor magna aliqua minim veniam nostrud labor nisi aliquip commodo '
         'duis aute irure velit esse cillum fugiat nulla pariatur sint occaecat').split()


def job_done(cli, jid):
    page, _ = cli.get('/')
    m = re.search(rf'id="job-{jid}"[^>]*data-status="(\w+)"|data-status="(\w+)"[^>]*id="job-{jid}"', page.decode())
    return m and (m.group(1) or m.group(2)) in ('completed', 'failed', 'cancelled')


def measure_bytes(url):
    cli = Client(url); cli.get('/')
    n, delay = int(os.environ.get('WORDS', 2000)), float(os.environ.get('DELAY', 0.005))  # e.g. DELAY=0.05 for a slow stream
    text = ' '.join(WORDS[i % len(WORDS)] for i in range(n))
    counter, ev = [0], threading.Event()
    t = threading.Thread(target=sse_reader, args=(url, cli.cookie_header(), counter, ev), daemon=True); t.start()
    time.sleep(1.0); base = counter[0]
    jid = cli.start('stream-words', {'text': text, 'delay': delay})
    t0 = time.time()
    while not job_done(cli, jid): time.sleep(0.5)
    time.sleep(1.5)
    ev.set()
    out = len((text + ' ').encode())
    got = counter[0] - base
    print(f"{n:,}-word stream at {delay} s a word, output {out:,} bytes: {got:,} SSE bytes to one tab = {got / out:.1f}x the output ({time.time() - t0:.1f} s)")


def measure_page(url=None):
    "In a child process with ROOT on its path: one echo job with a 10 MB result, started through the manager's API."
    code = PAGE_CODE
    out = subprocess.run([sys.executable, '-c', code], cwd='/tmp', env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    print(out.stdout.strip() or out.stderr[-2000:])

PAGE_CODE = r'''

import asyncio, time, httpx, sys
from cjm_fasthtml_workers.demo.app import create_app

async def main():
    app, manager, b = create_app(workers=1, js='cdn')
    cli = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://localhost', headers={'Origin': 'http://localhost'}, timeout=300)
    await cli.get('/')
    await cli.post('/start', data={'plugin_id': 'echo', 'params': '{"text": "x"}'})
    owner = manager.get_all_jobs()[-1].owner  # None with the old code
    job = await manager.start_job('echo', owner=owner, text='x' * 10_000_000)
    await manager.wait_for_job(job.id)
    t0 = time.perf_counter()
    page = await cli.get('/')
    print(f"page with a 10 MB result: {len(page.content):,} bytes, rendered in {time.perf_counter() - t0:.2f} s")
    c = b.subscribe()
    small = await manager.start_job('echo', owner=owner, text='small')
    await manager.wait_for_job(small.id)
    await asyncio.sleep(0.5)
    evs = []
    while c.pending: evs.append(await c.get())
    try:
        from cjm_fasthtml_workers.web.dashboard import DashboardView, JobDashboard
        dash = JobDashboard(manager, b, prefix='', js='cdn')
        view = DashboardView(dash, owner)
        encode = view.encode
    except ImportError:
        from cjm_fasthtml_workers.web.dashboard import encode_event
        encode = lambda ev: encode_event(manager, ev, '')
    sent = sum(len(encode(ev).encode()) for ev in evs)
    print(f"a later small job sends {sent:,} SSE bytes to an open tab ({len(evs)} events)")
    await cli.aclose()
    await manager.shutdown()
asyncio.run(main())
'''

def measure_cancel(url):
    from test_browser import Browser, wait_for
    b = Browser()
    try:
        b.get(url + '/')
        wait_for(lambda: b.js("return document.querySelectorAll('#workers [data-state=idle]').length") == 2, 30, 'workers')
        for plugin, params in [('count-primes', {'limit': 20_000_000}), ('stream-words', {'text': ' '.join(WORDS * 100), 'delay': 0.05})]:
            ok = 0
            for attempt in range(5):
                b.js("document.getElementById('form-msg').textContent=''; document.getElementById('plugin_id').value=arguments[0];"
                     "document.getElementById('params').value=arguments[1]; document.getElementById('start').click()", plugin, json.dumps(params))
                jid = wait_for(lambda: (b.js("return document.getElementById('form-msg').textContent") or '').startswith('Started ')
                               and b.js("return document.getElementById('form-msg').textContent").split()[1], 10, 'start')
                wait_for(lambda: b.js("const e=document.getElementById('job-'+arguments[0]); return e && e.dataset.status", jid) == 'running', 20, 'running')
                time.sleep(1.0)
                r = b.js("const x = document.querySelector('#job-' + arguments[0] + ' .btn-cancel'); x.scrollIntoView({block: 'center'}); const q = x.getBoundingClientRect(); return [q.x + q.width / 2, q.y + q.height / 2]", jid)
                b.cmd('POST', '/actions', {'actions': [{'type': 'pointer', 'id': 'mouse', 'parameters': {'pointerType': 'mouse'}, 'actions': [
                    {'type': 'pointerMove', 'origin': 'viewport', 'x': int(r[0]), 'y': int(r[1]), 'duration': 0},
                    {'type': 'pointerDown', 'button': 0}, {'type': 'pause', 'duration': 100}, {'type': 'pointerUp', 'button': 0}]}]})
                b.cmd('DELETE', '/actions')
                try:
                    wait_for(lambda: b.js("const e=document.getElementById('job-'+arguments[0]); return e && e.dataset.status", jid) == 'cancelled', 3, 'cancel')
                    ok += 1
                except AssertionError:
                    for path in (f"/{jid}/cancel", f"/job/{jid}/cancel"):  # the old route, the new one
                        b.js("fetch(arguments[0], {method: 'POST', headers: {'HX-Request': 'true'}})", path)
                    wait_for(lambda: b.js("const e=document.getElementById('job-'+arguments[0]); return e && e.dataset.status", jid) != 'running', 10, 'cleanup')
            print(f"{plugin}: a 100 ms press on Cancel cancelled {ok} of 5 times on the first press")
    finally: b.quit()


signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped by `timeout`: still stop the server (the finally below)
if WHAT == 'page': measure_page()
else:
    port = free_port()
    p, url = start_server(port)
    try: {'bytes': measure_bytes, 'cancel': measure_cancel}[WHAT](url)
    finally: stop(p)
