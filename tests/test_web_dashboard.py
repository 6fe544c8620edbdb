"""The dashboard's routes and event stream without a browser (issue 12): the app is called in process as ASGI
(a few lines of client below: FastHTML 0.14 does not bring httpx), with a real job manager and worker processes.
The browser tests (test_browser.py) cover the same points as a person sees them."""
import asyncio, json, re
from contextlib import asynccontextmanager
from urllib.parse import urlencode, urlsplit
import pytest

pytest.importorskip('fasthtml', reason='the web extra (python-fasthtml) is not installed')
from fasthtml.common import FastHTML
from conftest import run
from cjm_fasthtml_workers.core.config import WorkerConfig
from cjm_fasthtml_workers.managers.base import JobManager
from cjm_fasthtml_workers.demo.plugins import demo_plugins
from cjm_fasthtml_workers.web.sse import EVERYONE, SSEBroadcaster, sse_route
from cjm_fasthtml_workers.web.dashboard import JobDashboard, pool_health, visible_jobs

BASE = 'http://localhost'

class Response:
    def __init__(self, status_code, headers, content):
        self.status_code, self.headers, self.content = status_code, headers, content
        self.text = content.decode('utf-8', 'replace')

class Client:
    "A browser-like ASGI client: keeps its cookies, sends its default headers."
    def __init__(self, app, headers=None): self.app, self.headers, self.cookies = app, dict(headers or {}), {}
    async def request(self, method, path, data=None, content=None, headers=None):
        u = urlsplit(path)
        hdrs = {'host': 'localhost', **{k.lower(): v for k, v in self.headers.items()}, **{k.lower(): v for k, v in (headers or {}).items()}}
        if self.cookies: hdrs['cookie'] = '; '.join(f'{k}={v}' for k, v in self.cookies.items())
        if data is not None: content, hdrs['content-type'] = urlencode(data).encode(), 'application/x-www-form-urlencoded'
        parts = [content] if isinstance(content, bytes) else [] if content is None else None
        if parts is not None: hdrs['content-length'] = str(sum(map(len, parts)))
        scope = {'type': 'http', 'asgi': {'version': '3.0'}, 'http_version': '1.1', 'method': method, 'scheme': 'http', 'path': u.path,
                 'raw_path': u.path.encode(), 'query_string': u.query.encode(), 'root_path': '', 'server': ('localhost', 80), 'client': ('test', 1),
                 'headers': [(k.encode(), v.encode()) for k, v in hdrs.items()]}
        async def body():
            if parts is not None:
                for b in parts: yield b
            else:
                async for b in content: yield b
        chunks, sent, out = body(), [], {'headers': [], 'body': b''}
        async def receive():
            try: return {'type': 'http.request', 'body': await chunks.__anext__(), 'more_body': True}
            except StopAsyncIteration:
                if sent: await asyncio.sleep(3600)
                sent.append(1); return {'type': 'http.request', 'body': b'', 'more_body': False}
        async def send(msg):
            if msg['type'] == 'http.response.start': out['status'], out['headers'] = msg['status'], msg['headers']
            elif msg['type'] == 'http.response.body': out['body'] += msg.get('body', b'')
        await asyncio.wait_for(self.app(scope, receive, send), 60)
        headers = {}
        for k, v in out['headers']:
            k, v = k.decode().lower(), v.decode()
            if k == 'set-cookie':
                name, _, value = v.split(';', 1)[0].partition('=')
                self.cookies[name.strip()] = value.strip()
            headers[k] = v
        return Response(out['status'], headers, out['body'])
    async def get(self, path, headers=None): return await self.request('GET', path, headers=headers)
    async def post(self, path, data=None, content=None, headers=None): return await self.request('POST', path, data, content, headers)

@asynccontextmanager
async def dashboard(workers=1, config=None, **kw):
    "A FastHTML app with a dashboard at /jobs over a real manager; yields (app, manager, dash, browser) where browser() is a new client."
    b = SSEBroadcaster()
    manager = JobManager('demo', 'demo', entry_point=demo_plugins, supports_streaming=True, event_broadcaster=b,
                         worker_config=config or WorkerConfig(max_workers=workers))
    app = FastHTML(default_hdrs=False, secret_key='tests')
    dash = JobDashboard(manager, b, js='cdn', **kw).register(app)
    def browser(**headers): return Client(app, {'Origin': BASE, **headers})
    try:
        await manager.start()
        yield app, manager, dash, browser
    finally:
        dash.close(); b.close()
        await manager.shutdown()

async def start(cli, plugin_id, params=None, **form):
    r = await cli.post('/jobs/start', data={'plugin_id': plugin_id, 'params': json.dumps(params or {}), **form})
    m = re.search(r'Started (\w+)', r.text)
    return r.status_code, (m.group(1) if m else r.text)

async def read_stream(app, path, cookies, until, timeout=60.0, headers=()):
    "The SSE messages `path` sends a client with `cookies`, until `until(messages)` holds; then it disconnects."
    scope = {'type': 'http', 'asgi': {'version': '3.0'}, 'http_version': '1.1', 'method': 'GET', 'scheme': 'http', 'path': path.split('?')[0],
             'raw_path': path.split('?')[0].encode(), 'query_string': (path.split('?', 1) + [''])[1].encode(), 'root_path': '',
             'headers': [(b'host', b'localhost'), (b'cookie', '; '.join(f'{k}={v}' for k, v in cookies.items()).encode()),
                         *[(k.encode(), v.encode()) for k, v in headers]], 'server': ('localhost', 80), 'client': ('test', 1)}
    gone, text, status, asked = asyncio.Event(), [], [], []
    async def receive():
        if not asked: asked.append(1); return {'type': 'http.request', 'body': b'', 'more_body': False}
        await gone.wait(); return {'type': 'http.disconnect'}
    async def send(msg):
        if msg['type'] == 'http.response.start': status.append(msg['status'])
        elif msg.get('body'):
            text.append(msg['body'].decode())
            if until([m for m in ''.join(text).split('\n\n') if m]): gone.set()
        elif not msg.get('more_body'): gone.set()
    await asyncio.wait_for(app(scope, receive, send), timeout)
    return status[0], ''.join(text)

def fragments(messages_text):
    "(event name, data) of each SSE message."
    out = []
    for m in messages_text.split('\n\n'):
        lines = m.split('\n')
        ev = next((l[7:] for l in lines if l.startswith('event: ')), None)
        data = '\n'.join(l[6:] for l in lines if l.startswith('data: '))
        if ev: out.append((ev, data))
    return out

# --- 4. HTTP semantics ---
def test_refusals_answer_4xx_with_short_messages():
    async def go():
        async with dashboard() as (app, m, dash, browser):
            ann = browser()
            await ann.get('/jobs')
            assert await start(ann, 'nope') == (422, "Unknown plugin 'nope'")
            code, text = await start(ann, '')
            assert code == 422 and 'plugin_id is required' in text
            r = await ann.post('/jobs/start', data={'plugin_id': 'echo', 'params': '{"text": '})
            assert r.status_code == 422 and r.text.startswith('Parameters are not valid JSON')
            r = await ann.post('/jobs/start', data={'plugin_id': 'echo', 'params': '[1, 2]'})
            assert (r.status_code, r.text) == (422, 'Parameters must be a JSON object, such as {"text": "hi"}')
            for bad in ['high', '1.5', '9' * 20]: assert (await start(ann, 'echo', priority=bad))[0] == 422
            assert await start(ann, 'echo', priority='11') == (422, 'priority must be between -10 and 10')
            for name in ('priority', 'plugin_id', 'owner'):  # refused by the manager (start_jobs), not by the route
                code, text = await start(ann, 'echo', {name: 1})
                assert code == 422 and f"parameter named '{name}', which is one of start_job's own arguments" in text, text
                assert 'BaseJobManager' not in text
            r = await ann.post('/jobs/start', data={'plugin_id': 'x' * 10_000_000})
            assert r.status_code == 413 and len(r.text) < 200, (r.status_code, r.text[:200])
            async def chunked():  # no Content-Length: refused once the body passes the limit
                for _ in range(100): yield b'x' * 10_000
            r = await ann.post('/jobs/start', content=chunked(), headers={'Content-Type': 'application/x-www-form-urlencoded'})
            assert r.status_code == 413
            r = await ann.post('/jobs/start', content=b'<x/>', headers={'Content-Type': 'application/xml'})
            assert r.status_code == 415
            assert ((await ann.post('/jobs/job/0123456789abcdef01234567/cancel')).status_code) == 404
            assert (await ann.post('/jobs/job/' + 'a' * 500 + '/cancel')).status_code == 404
            for q in ['last_event_id=-5', 'last_event_id=abc', 'last_event_id=' + '1' * 70, 'status=bogus']:
                assert (await ann.get(f'/jobs/stream?{q}')).status_code == 400, q
            assert (await ann.get('/jobs/list?before=bogus')).status_code == 400
            code, jid = await start(ann, 'echo', {'text': 'hi'})
            await m.wait_for_job(jid)
            r = await ann.post(f'/jobs/job/{jid}/cancel')
            assert (r.status_code, r.text) == (409, f'Job {jid[:8]} has already completed')
            assert len(set(list(m.jobs))) == 1  # no refused request made a job
    run(go())

def test_per_owner_limit_and_full_queue():
    async def go():
        async with dashboard(config=WorkerConfig(max_workers=1, max_queue_size=5), max_jobs_per_owner=3) as (app, m, dash, browser):
            ann, bob = browser(), browser()
            codes = [(await start(ann, 'sleep', {'seconds': 30}))[0] for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = await ann.post('/jobs/start', data={'plugin_id': 'sleep', 'params': '{}'})
            assert r.status_code == 429 and r.headers['retry-after'] and 'unfinished jobs' in r.text
            codes = [(await start(bob, 'sleep', {'seconds': 30}))[0] for _ in range(3)]
            assert codes == [200, 200, 200]
            carl = browser()
            code, text = await start(carl, 'sleep', {'seconds': 30})
            assert code == 503 and text.startswith('The queue is full'), (code, text)
    run(go())

# --- 5. security ---
def test_owners_see_watch_and_cancel_only_their_own_jobs():
    async def go():
        async with dashboard(is_admin=lambda r: r.headers.get('x-admin') == 'yes') as (app, m, dash, browser):
            ann, bob, admin = browser(), browser(), browser(**{'X-Admin': 'yes'})
            for c in (ann, bob, admin): await c.get('/jobs')
            code, jid = await start(ann, 'stream-words', {'text': 'one two three four', 'delay': 0.3})
            assert code == 200 and re.fullmatch(r'[0-9a-f]{24}', jid)
            assert m.get_job(jid).owner is not None
            for path in ('/jobs', '/jobs/list', '/jobs/workers'): assert jid not in (await bob.get(path)).text
            for path in (f'/jobs/job/{jid}', f'/jobs/job/{jid}/output', f'/jobs/job/{jid}/card'):
                assert (await bob.get(path)).status_code == 404 and (await ann.get(path)).status_code == 200
            assert (await bob.post(f'/jobs/job/{jid}/cancel')).status_code == 404
            nobody = Client(app)  # no cookie at all
            assert (await nobody.post(f'/jobs/job/{jid}/cancel')).status_code == 404
            assert jid in (await admin.get('/jobs')).text
            done = lambda msgs: any('data-final' in x for x in msgs)
            (_, bob_text), (_, ann_text) = await asyncio.gather(  # both watch from the start until the job has ended
                read_stream(app, f'/jobs/stream?last_event_id={dash.broadcaster.epoch}-0', dict(bob.cookies), lambda msgs: m.get_job(jid).is_terminal),
                read_stream(app, f'/jobs/stream?last_event_id={dash.broadcaster.epoch}-0', dict(ann.cookies), done))
            assert jid[:8] not in bob_text and "another owner's job" in bob_text
            assert f'data-append="out-{jid}"' in ann_text
            assert (await admin.post(f'/jobs/job/{jid}/cancel')).status_code in (200, 409)
    run(go())

def test_a_visitor_without_an_owner_id_sees_nothing_and_starts_nothing():
    async def go():
        async with dashboard(owner=lambda r: r.headers.get('x-user')) as (app, m, dash, browser):
            ann, anon = browser(**{'X-User': 'ann'}), browser()
            code, jid = await start(ann, 'echo', {'text': 'hi'})
            assert code == 200
            assert await start(anon, 'echo') == (403, 'You are not known to this app, so you cannot start jobs')
            assert jid not in (await anon.get('/jobs')).text and jid in (await ann.get('/jobs')).text
            assert m.get_job(jid).owner == 'ann'
    run(go())

def test_cross_site_requests_and_other_hosts_are_refused():
    async def go():
        async with dashboard(trusted_origins=['https://app.example.com']) as (app, m, dash, browser):
            ann = browser()
            await ann.get('/jobs')
            for headers in [{'Origin': 'http://evil.example'}, {'Origin': 'null'}, {'Sec-Fetch-Site': 'cross-site'},
                            {'Sec-Fetch-Site': 'same-site'}, {'Origin': 'http://localhost:8080'}]:
                r = await ann.post('/jobs/start', data={'plugin_id': 'echo'}, headers=headers)
                assert (r.status_code, r.text) == (403, 'Cross-site request refused'), headers
                assert (await ann.post('/jobs/job/x/cancel', headers=headers)).status_code == 403
            assert (await start(ann, 'echo'))[0] == 200  # its own origin
            assert (await ann.post('/jobs/start', data={'plugin_id': 'echo'}, headers={'Origin': 'https://app.example.com'})).status_code == 200
            for path in ('/jobs', '/jobs/stream', '/jobs/static/dashboard.js', '/jobs/list'):
                r = await ann.get(path, headers={'Host': 'rebound.evil.example'})
                assert (r.status_code, r.text) == (400, 'Invalid host header'), path
            assert (await ann.post('/jobs/start', data={'plugin_id': 'echo'}, headers={'Host': 'evil.example', 'Origin': 'http://evil.example'})).status_code == 400
    run(go())

def test_security_headers():
    async def go():
        async with dashboard() as (app, m, dash, browser):
            ann = browser()
            page = await ann.get('/jobs')
            csp = page.headers['content-security-policy']
            for part in ["default-src 'none'", "script-src 'self' https://unpkg.com", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"]:
                assert part in csp, csp
            code, jid = await start(ann, 'echo', {'text': '<b>x</b>'})
            await m.wait_for_job(jid)
            for r in [page, await ann.get('/jobs/list'), await ann.get('/jobs/static/dashboard.js'), await ann.get(f'/jobs/job/{jid}/output'),
                      await ann.post('/jobs/start', data={'plugin_id': 'nope'})]:
                assert r.headers['x-frame-options'] == 'DENY' and r.headers['x-content-type-options'] == 'nosniff', r.headers
            r = await ann.get(f'/jobs/job/{jid}/output')
            assert r.headers['content-type'].startswith('text/plain') and '<b>x</b>' in r.text
            assert '<style' not in page.text and 'style="' not in page.text and '<script>' not in page.text  # nothing inline for the CSP to refuse
    run(go())

def test_sse_route_filters_by_owner():
    async def go():
        app = FastHTML(default_hdrs=False, secret_key='t')
        b = SSEBroadcaster()
        sse_route(app, b, owner=lambda r: r.headers.get('x-user'), is_admin=lambda r: r.headers.get('x-user') == 'root')
        b.publish('w:created', {'job_id': 'a', 'owner': 'ann'}); b.publish('w:chunk', {'job_id': 'a', 'chunk': 'secret'})
        b.publish('w:created', {'job_id': 'b', 'owner': 'bob'}); b.publish('w:worker:started', {'pid': 1})
        start = [('last-event-id', f'{b.epoch}-0')]
        _, bob = await read_stream(app, '/events', {}, lambda ms: len(ms) >= 3, 5, headers=start + [('x-user', 'bob')])
        assert '"b"' in bob and 'secret' not in bob and '"a"' not in bob and 'worker:started' in bob
        _, root = await read_stream(app, '/events', {}, lambda ms: len(ms) >= 5, 5, headers=start + [('x-user', 'root')])
        assert 'secret' in root and '"b"' in root
        b.close()
    run(go())

# --- 1. incremental updates ---
def test_a_stream_sends_each_piece_of_text_once_and_bytes_grow_linearly():
    async def go():
        async with dashboard() as (app, m, dash, browser):
            ann = browser()
            await ann.get('/jobs')
            words = [f"w{i % 97}{'x' * (i % 5)}" for i in range(2000)]
            after = dash.broadcaster.last_event_id
            code, jid = await start(ann, 'stream-words', {'text': ' '.join(words), 'delay': 0.001})
            _, text = await read_stream(app, f'/jobs/stream?last_event_id={after}', dict(ann.cookies), lambda ms: any(f'data-final="out-{jid}"' in x for x in ms))
            output = ' '.join(words) + ' '
            assert len(text.encode()) < 3 * len(output.encode()), (len(text), len(output))
            frags = fragments(text)
            assert sum(d.count('<article') for _, d in frags) == 1  # the card is sent once, when the job is created
            assert not any('btn-cancel' in d for _, d in frags[1:])  # the controls never again
            got = ''
            for _, d in frags:
                for at, piece in re.findall(r'<pre data-append="out-\w+" data-at="(\d+)">(.*?)</pre>', d, re.S):
                    assert int(at) == len(got)
                    got += piece
            assert got == output
            updates = [d for _, d in frags if 'data-append' in d or 'data-progress' in d]
            assert len(updates) < 300, len(updates)  # coalesced: not one message per word
    run(go())

def test_updates_are_coalesced_to_about_ten_a_second_per_job():
    async def go():
        async with dashboard() as (app, m, dash, browser):
            ann = browser()
            await ann.get('/jobs')
            after = dash.broadcaster.last_event_id
            code, jid = await start(ann, 'stream-words', {'text': 'tick ' * 300, 'delay': 0.005})  # 200 updates a second for 1.5 s
            _, text = await read_stream(app, f'/jobs/stream?last_event_id={after}', dict(ann.cookies),
                                        lambda ms: any(f'data-final="out-{jid}"' in x for x in ms))
            job = m.get_job(jid)
            seconds = (job.completed_at - job.started_at).total_seconds()
            progress = [d for e, d in fragments(text) if f'data-progress="{jid}"' in d]  # the messages that update its bar
            assert 3 <= len(progress) <= 12 * seconds + 3, (len(progress), seconds)  # progress shown, at about 10 a second at most
    run(go())

def test_a_large_result_keeps_the_page_small():
    async def go():
        async with dashboard(max_download=4_000_000) as (app, m, dash, browser):
            ann = browser()
            code, jid = await start(ann, 'make-text', {'size': 10_000_000})
            await m.wait_for_job(jid)
            page = await ann.get('/jobs')
            assert len(page.content) < 50_000, len(page.content)
            assert re.search(r'… 9,998,000 more characters · full result', page.text)
            detail = await ann.get(f'/jobs/job/{jid}')
            assert len(detail.content) < 250_000
            full = await ann.get(f'/jobs/job/{jid}/output')
            assert full.text.startswith('the quick brown fox') and '[… cut here: 6,000,000 more characters' in full.text
            after = dash.broadcaster.last_event_id
            code, small = await start(ann, 'echo', {'text': 'small'})
            _, text = await read_stream(app, f'/jobs/stream?last_event_id={after}', dict(ann.cookies), lambda ms: any(f'data-final' in x or f'res-{small}' in x and 'completed' in x for x in ms))
            assert len(text) < 10_000
    run(go())

# --- 2. true state after reconnect ---
def test_a_browser_from_another_server_gets_the_whole_state_first():
    async def go():
        async with dashboard() as (app, m, dash, browser):
            ann = browser()
            code, jid = await start(ann, 'echo', {'text': 'hi'})
            await m.wait_for_job(jid)
            _, text = await read_stream(app, '/jobs/stream', dict(ann.cookies), lambda ms: len(ms) >= 2, headers=[('last-event-id', '0badc0de-9999')])
            (event, data), = fragments(text)[:1]
            assert event == 'reset' and 'id="job-list"' in data and f'id="job-{jid}"' in data and 'id="workers"' in data
            last = dash.broadcaster.last_event_id
            code, later = await start(ann, 'echo', {'text': 'again'})  # something the stream must send after where a reset would be
            _, text = await read_stream(app, f'/jobs/stream?last_event_id={last}', dict(ann.cookies),
                                        lambda ms: any(f'id="job-{later}"' in x for x in ms), timeout=5)
            assert f'id="job-{later}"' in text and 'reset' not in text  # a browser that is up to date is not sent it
    run(go())

# --- 3. a job view ---
def test_tabs_and_paging_reach_every_job():
    async def go():
        async with dashboard(page_size=20) as (app, m, dash, browser):
            ann = browser()
            ids = [(await start(ann, 'echo', {'text': f'job {i}'}))[1] for i in range(45)]
            code, failed = await start(ann, 'fail')
            for j in ids + [failed]: await m.wait_for_job(j)
            page = (await ann.get('/jobs')).text
            assert page.count('<article') == 20 and f'job-{failed}' in page and 'Show older (26 more)' in page
            seen, url = set(re.findall(r'id="job-([0-9a-f]{24})"', page)), re.search(r'hx-get="(/jobs/list\?[^"]+)"', page).group(1)
            while url:
                part = (await ann.get(url.replace('&amp;', '&'))).text
                seen |= set(re.findall(r'id="job-([0-9a-f]{24})"', part))
                nxt = re.search(r'hx-get="(/jobs/list\?[^"]+)"', part)
                url = nxt and nxt.group(1)
            assert seen == set(ids) | {failed} and 'That is every job held.' in part
            tab = (await ann.get('/jobs?status=failed')).text
            assert tab.count('<article') == 1 and re.search(r'Failed <b>1</b>', tab) and re.search(r'Completed <b>45</b>', tab)
            assert [j.id for j in visible_jobs(m, EVERYONE, 'completed')][0] == ids[-1]
    run(go())

def test_pool_health_says_plainly_what_is_wrong():
    class Stub:
        worker_type = 'demo'
        def __init__(self, *slots): self.slots = slots
        def get_workers(self): return [dict(state=s, restarts=r, crashes=c, standby=False) for s, r, c in self.slots]
        def unavailable_reason(self): return 'no demo worker is available: every worker slot is retired, as the restart policy (never) replaces no worker'
    assert pool_health(Stub(('idle', 0, 0), ('busy', 0, 0))) == ('ok', '2 workers ready.')
    assert pool_health(Stub(('starting', 0, 0), ('idle', 0, 0)))[0] == 'starting'
    health, why = pool_health(Stub(('restarting', 3, 3), ('idle', 0, 0)))
    assert health == 'degraded' and why == '1 of 2 workers restarting after a crash (3 crashes so far). Jobs still run on the others.'
    assert pool_health(Stub(('starting', 1, 0), ('idle', 0, 0)))[0] == 'starting'  # replacing a worker the manager stopped (a cancel)
    health, why = pool_health(Stub(('retired', 6, 6), ('retired', 6, 6)))
    assert health == 'down' and 'restart policy (never)' in why and 'New jobs are refused' in why

# --- 6. a pool that is down says so ---
def test_a_retired_pool_is_said_plainly_on_the_page_and_refuses_jobs():
    "Workers that cannot start retire their slots (the restart policy's limit): the page says so in the policy's own terms."
    from engine_plugins import broken_entry_point
    async def go():
        b = SSEBroadcaster()
        manager = JobManager('demo', 'demo', entry_point=broken_entry_point, event_broadcaster=b,
                             worker_config=WorkerConfig(max_workers=1, max_restart_attempts=1))
        app = FastHTML(default_hdrs=False, secret_key='tests')
        dash = JobDashboard(manager, b, js='cdn').register(app)
        try:
            with pytest.raises(Exception): await manager.start()
            cli = Client(app, {'Origin': BASE})
            page = (await cli.get('/jobs')).text
            banner = re.search(r'<p[^>]*class="banner banner-down"[^>]*>(.*?)</p>', page, re.S).group(1)
            assert 'Workers down: ' in banner and 'under the always policy' in banner and 'New jobs are refused' in banner, banner
            assert 'cannot load the model weights' in banner and 'data-state="down"' in page and '>no workers<' in page
            code, text = await start(cli, 'echo')
            assert code == 503 and 'every worker slot is retired' in text, (code, text)
        finally:
            dash.close(); b.close()
            await manager.shutdown()
    run(go())
