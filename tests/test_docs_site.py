"""Checks of the built docs site (`python docs/build_docs.py`), as a reader would see a few pages.

Skipped when `_build/html` has not been built (CI builds the site after the tests: run this file again
after the build). On core/config, managers/base, core/protocol and extensions/protocols: no class entry
shows a made-up `(*args, **kwargs)` signature, every field of `WorkerConfig` is listed with its comment,
the members of the enums are listed with their values, and in headless Chromium at 1280 and 390 px wide
neither the page nor any code block or `show_doc` table scrolls sideways. The browser part needs
Chromium and chromedriver (Debian's packages), as tests/test_browser.py does.
"""
import enum, html.parser, inspect, io, re, tokenize
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / '_build' / 'html'
PAGES = ['core/config', 'managers/base', 'core/protocol', 'extensions/protocols']
WIDTHS = [1280, 390]

pytestmark = pytest.mark.skipif(not (HTML / 'index.html').exists(), reason='the docs site is not built (python docs/build_docs.py)')


class Entries(html.parser.HTMLParser):
    """The `show_doc` entries of a page (a heading after `hr.showdoc-rule`): heading -> {'sig': text of
    its signature block (the first Python block after the heading), 'table': its table's rows, as
    lists of cell texts}."""
    VOID = {'br', 'img', 'hr', 'meta', 'input', 'link', 'wbr'}

    def __init__(self):
        super().__init__()
        self.entries, self.name, self.after_rule = {}, None, False
        self.mode, self.depth, self.in_link, self.row, self.cell = None, 0, False, None, None

    def handle_starttag(self, tag, attrs):
        cls = (dict(attrs).get('class') or '').split()
        if self.mode:
            if tag not in self.VOID: self.depth += 1
            if self.mode == 'heading' and tag == 'a' and 'headerlink' in cls: self.in_link = True
            if self.mode == 'table' and tag == 'tr': self.row = []
            if self.mode == 'table' and tag in ('td', 'th'): self.cell = ''
        elif tag == 'hr' and 'showdoc-rule' in cls: self.after_rule = True
        elif tag in ('h2', 'h3', 'h4'):
            if self.after_rule: self.mode, self.depth, self.heading = 'heading', 1, ''
            else: self.name = None  # a heading of the notebook's own: what follows is not an entry
            self.after_rule = False
        elif self.name and tag == 'div' and ('showdoc-sig' in cls or 'highlight-python' in cls) and self.entries[self.name]['sig'] is None:
            self.mode, self.depth = 'sig', 1
            self.entries[self.name]['sig'] = ''
        elif self.name and tag == 'table' and 'showdoc-table' in cls:
            self.mode, self.depth = 'table', 1
            self.entries[self.name]['table'] = []

    def handle_endtag(self, tag):
        if not self.mode: return
        if tag == 'a': self.in_link = False
        if self.mode == 'table' and tag in ('td', 'th') and self.row is not None:
            self.row.append(' '.join(self.cell.split())); self.cell = None
        if self.mode == 'table' and tag == 'tr' and self.row is not None:
            self.entries[self.name]['table'].append(self.row); self.row = None
        self.depth -= 1
        if self.depth == 0:
            if self.mode == 'heading':
                self.name = self.heading.strip()
                self.entries[self.name] = {'sig': None, 'table': None}
            self.mode = None

    def handle_data(self, data):
        if self.mode == 'heading' and not self.in_link: self.heading += data
        elif self.mode == 'sig': self.entries[self.name]['sig'] += data
        elif self.mode == 'table' and self.cell is not None: self.cell += data


def entries(page):
    p = Entries()
    p.feed((HTML / f'{page}.html').read_text(encoding='utf-8'))
    return p.entries


def field_comments(cls):
    "Field name -> the comment beside it in `cls`'s source."
    src = inspect.getsource(cls)
    comments = {t.start[0]: t.string.lstrip('#').strip() for t in tokenize.generate_tokens(io.StringIO(src).readline)
                if t.type == tokenize.COMMENT}
    out = {}
    for i, line in enumerate(src.splitlines(), 1):
        m = re.match(r'\s+(\w+)\s*:', line)
        if m and i in comments: out[m.group(1)] = comments[i]
    return out


@pytest.mark.parametrize('page', PAGES)
def test_no_made_up_class_signatures(page):
    found = entries(page)
    assert found, f"no show_doc entries found on {page}"
    for name, e in found.items():
        assert e['sig'] is not None, f"{page}: {name} has no signature block"
        text = ' '.join(e['sig'].split())
        assert not re.search(r'\(\s*\*args,\s*\*\*kw(ds|args),?\s*\)', text), f"{page}: {name}: {text}"


def test_worker_config_fields_are_described():
    from cjm_fasthtml_workers.core.config import WorkerConfig
    import dataclasses
    sig = entries('core/config')['WorkerConfig']['sig']
    lines = {l.split(':')[0].strip(): l for l in sig.splitlines() if l.startswith('    ')}
    comments = field_comments(WorkerConfig)
    for f in dataclasses.fields(WorkerConfig):
        assert f.name in lines, f"field {f.name} missing from the WorkerConfig signature:\n{sig}"
        assert comments[f.name] in lines[f.name], f"the comment of {f.name} is missing: {lines[f.name]!r}"


@pytest.mark.parametrize('page, name', [('core/config', 'RestartPolicy'), ('managers/base', 'JobStatus')])
def test_enum_members_are_listed(page, name):
    import importlib
    mod = importlib.import_module('cjm_fasthtml_workers.' + page.replace('/', '.'))
    cls = getattr(mod, name)
    assert issubclass(cls, enum.Enum)
    e = entries(page)[name]
    assert e['sig'].strip().startswith(f'class {name}('), e['sig']
    assert e['table'], f"{name} has no table of members"
    rows = {r[0]: r for r in e['table'][1:]}
    for member in cls:
        assert member.name in rows, f"{name}.{member.name} is not listed: {e['table']}"
        assert rows[member.name][1] == repr(member.value)


OVERFLOW_JS = r"""
const de = document.documentElement, out = [];
if (de.scrollWidth > de.clientWidth) out.push(['page', de.scrollWidth, de.clientWidth, '']);
for (const e of document.querySelectorAll('article pre, article .table-wrapper')) {
  if (e.scrollWidth > e.clientWidth + 1) out.push([e.tagName + '.' + e.className, e.scrollWidth, e.clientWidth, (e.textContent || '').trim().slice(0, 60)]);
}
return out;
"""


@pytest.fixture
def browser():
    import test_browser
    if not (test_browser.CHROMIUM and test_browser.CHROMEDRIVER): pytest.skip('chromium and chromedriver are not installed')
    b = test_browser.Browser()
    try: yield b
    finally: b.quit()


@pytest.mark.parametrize('width', WIDTHS)
def test_nothing_scrolls_sideways(browser, width):
    browser.cmd('POST', '/window/rect', {'width': width, 'height': 900})
    assert browser.js('return window.innerWidth') == width
    problems = {}
    from test_browser import wait_for
    for page in PAGES:
        url = (HTML / f'{page}.html').as_uri()
        browser.get(url)
        # The navigation can return before the new document is there (seen with file:// pages).
        wait_for(lambda: browser.js("return location.href === arguments[0] && document.readyState === 'complete'"
                                    " && document.querySelectorAll('article pre').length", url), 15, f'{page} to load')
        over = browser.js(OVERFLOW_JS)
        if over: problems[page] = over
    assert not problems, f"horizontal overflow at {width} px: {problems}"
