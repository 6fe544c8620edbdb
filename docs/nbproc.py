"""Notebook processing shared by `make_readme.py` and `build_docs.py` (no Quarto needed).

Each notebook goes through three steps:

1. **Execute** it in-process with execnb's `CaptureShell`, the way `nbdev_test` runs it: from the
   notebook's folder, with `IN_TEST=1`, top-level `await` allowed, skipping the cells `nbdev_test`
   skips (`#| eval: false`, the `tst_flags` of settings.ini such as `#| notest`, and the
   `nbdev_export()` cell). The first failing cell stops the run with a traceback naming the notebook.
2. **Process** it with nbdev's own notebook processors (`nbdev.processors.FilterDefaults`, the same
   processors `nbdev_docs` applies before handing `_proc/` to Quarto): frontmatter, hidden and
   exported cells removed, `show_doc` cells added and executed into markdown signatures. Only
   `add_links` is left out; `Linker` below links this project's symbols from the repository's own
   `_modidx.py`, so the result does not depend on which nbdev libraries happen to be installed.
   `show_doc` renders with `apidoc.Renderer` (enums, exceptions, protocols and dataclasses told
   apart; see docs/apidoc.py) unless settings.ini names a `renderer`.
3. **Convert** it for its target: `to_markdown` (README) or `to_myst` (Sphinx + myst-nb site).

Nothing here calls `nbdev_proc_nbs`, `nbdev_readme`, `nbdev_docs` or `nbdev.quarto._pre_docs`:
without Quarto those try to install it and run `pip install -e ".[dev]"` through a shell.

Run as a script, `python docs/nbproc.py SRC.ipynb DST.ipynb PAGES_JSON` executes, processes and
converts one notebook for the docs site (`build_docs.py` runs one such process per notebook).
"""
import ast, copy, json, os, re, sys, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def in_root():
    "Work from the repository root, where nbdev finds settings.ini."
    os.chdir(ROOT)
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))


def config():
    from nbdev.config import get_config
    return get_config(path=ROOT)


# ---------------------------------------------------------------- notebooks and their order

def notebooks():
    """All documentation notebooks under `nbs_path`, found the way nbdev finds them (files and
    folders starting with `_` or `.` skipped), ordered like nbdev's sidebar: root notebooks first,
    `index.ipynb` first in its folder, then each folder's notebooks by name."""
    from nbdev.doclinks import nbglob
    cfg = config()
    nbs = Path(cfg.nbs_path)
    files = [Path(f).resolve() for f in nbglob(nbs, as_path=True)]
    files = [f for f in files if '.ipynb_checkpoints' not in f.parts]
    def key(f):
        rel = f.relative_to(nbs.resolve())
        return (rel.parent.parts, '' if rel.name == 'index.ipynb' else rel.name)
    return sorted(files, key=key)


def page_name(nb_path):
    "The site page of a notebook: its path relative to `nbs_path`, without suffix (`extensions/protocols`)."
    return Path(nb_path).resolve().relative_to(Path(config().nbs_path).resolve()).with_suffix('').as_posix()


# ---------------------------------------------------------------- 1. execute

def _skip_cell(cell, flags):
    "Whether `nbdev_test` would skip `cell` (same rules: not code, export call, eval false, test flags)."
    from nbdev.process import extract_directives
    if cell.cell_type != 'code' or not cell.source.strip(): return True
    if 'nbdev_export' + '(' in cell.source: return True
    d = extract_directives(copy.deepcopy(cell), remove=False) or {}
    if d.get('eval:', [''])[0].lower() == 'false': return True
    return bool(flags & d.keys())


class NotebookError(Exception): pass


_current = None  # (notebook, cell) being executed, for `_report_hang`


def _report_hang(signum, frame):
    "On SIGUSR1 (sent by build_docs.py before it kills a notebook that timed out): say which cell hangs, and where."
    import faulthandler
    err = sys.__stderr__  # sys.stderr is the shell's capture while a cell runs
    if _current:
        path, cell = _current
        err.write(f"\nStill running cell {cell.idx_} of {Path(path).relative_to(ROOT)}:\n{cell.source}\n\nStacks (most recent call last):\n")
    err.flush()
    faulthandler.dump_traceback(file=err, all_threads=True)


def execute(nb_path):
    """Read the notebook at `nb_path` and run its cells in a `CaptureShell`, storing the outputs in
    the cells. Raises `NotebookError` with the traceback if a cell fails."""
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    from fastcore.basics import str2bool
    nb_path = Path(nb_path).resolve()
    nb = read_nb(nb_path)
    fm = getattr(NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb, 'frontmatter_', {}) or {}
    if str2bool(fm.get('skip_exec', False)): return nb
    flags = set(config().get('tst_flags', '').split())
    old_in_test = os.environ.get('IN_TEST')
    os.environ['IN_TEST'] = '1'
    try:
        shell = CaptureShell(nb_path)
        with working_directory(nb_path.parent):
            for cell in nb.cells:
                if _skip_cell(cell, flags): continue
                global _current
                _current = (nb_path, cell)
                shell.cell(cell)
                if shell.exc:
                    raise NotebookError(shell.prettytb(fname=nb_path.relative_to(ROOT)))
        end_pending_tasks()
    finally:
        if old_in_test is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = old_in_test
    return nb


# ---------------------------------------------------------------- 2. process

def end_pending_tasks():
    """Cancel what is still pending on the event loop the notebook shells share (IPython's), as
    `asyncio.run` does when it returns. An example that never shuts an object down leaves its tasks
    there; left alone they are destroyed at exit with "Task was destroyed but it is pending!"."""
    import asyncio
    from IPython.core.async_helpers import get_asyncio_loop
    loop = get_asyncio_loop()
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks: t.cancel()
    if tasks: loop.run_until_complete(asyncio.wait(tasks, timeout=10))  # bounded: a task may ignore the cancel
    loop.run_until_complete(loop.shutdown_asyncgens())


def nbdev_process(nb):
    "Apply nbdev's docs processors to the executed notebook `nb` (in place); returns `nb`."
    from nbdev.processors import FilterDefaults, add_links, add_show_docs, exec_show_docs
    import apidoc
    apidoc.install()
    apidoc.forget_cells()
    class _ExecShowDocs(exec_show_docs):
        def begin(self):
            super().begin()
            if not hasattr(self, 'k'): return
            run = self.k.cell
            def cell(c, *args, **kwargs):
                # The classes it defines live in `__main__`, where `inspect` finds no source: apidoc reads them from here.
                apidoc.remember_cell(c.source)
                return run(c, *args, **kwargs)
            self.k.cell = cell
        def end(self):
            super().end()
            end_pending_tasks()
    class _AddShowDocs(add_show_docs):
        def begin(self):
            super().begin()
            # nbdev inserts the `show_doc` cells of a cell's definitions one by one right after the cell,
            # which lists them last to first: put each such run back in the order of the source.
            cells, i = self.nb.cells, 0
            while i < len(cells):
                j = i
                while j < len(cells) and getattr(cells[j], 'has_sd', False): j += 1
                if j > i + 1: cells[i:j] = cells[i:j][::-1]
                i = max(j, i + 1)
    swap = {exec_show_docs: _ExecShowDocs, add_show_docs: _AddShowDocs}
    class _Procs(FilterDefaults):
        def base_procs(self): return [swap.get(p, p) for p in super().base_procs() if p is not add_links]
    try:
        with warnings.catch_warnings(record=True) as caught: _Procs()(nb)
        for w in caught:
            msg = str(w.message)
            if msg.startswith('Found cells containing imports and other code'):
                first = next((l for l in msg.split('---')[1].splitlines() if l.strip()), '') if '---' in msg else ''
                print(f"note: nbdev re-runs this cell (imports mixed with other code) to render the docs: {first.strip()[:70]!r}",
                      file=sys.stderr)
            elif not issubclass(w.category, (DeprecationWarning, ResourceWarning)):
                print(f"{w.category.__name__}: {msg}", file=sys.stderr)
    except Exception as e:
        import traceback
        cause = ''.join(traceback.format_exception_only(e.__cause__)) if e.__cause__ else ''
        why = ("To render the `show_doc` signatures nbdev re-runs, in a fresh shell and in order, only the cells "
               "with imports, the exported cells and the `show_doc` cells (including the `show_doc` it adds "
               "right after each exported cell that has none).")
        if re.search(r'^\s*(import|from)\s', str(e), re.MULTILINE):
            why += (" A cell that mixes an import with other code is re-run there too, so it must not use names "
                    "from example cells: move the import into a cell of its own (nbdev FAQ).")
        elif 'show_doc(' in str(e):
            why += (" That `show_doc` needs a name that is not defined yet at its place (e.g. a forward reference "
                    "in a type annotation): give the name a `show_doc` cell of its own after the definitions it needs.")
        raise NotebookError(
            f"nbdev's docs processing failed on {Path(nb.path_).resolve().relative_to(ROOT)} "
            f"(`nbdev_docs` fails the same way):\n{e}\n{cause}\n{why}") from e
    return nb


def run(nb_path):
    "Execute and process one notebook (steps 1 and 2)."
    return nbdev_process(execute(nb_path))


# ---------------------------------------------------------------- linking this project's symbols

def _modidx():
    "The `d` dict of the repository's `_modidx.py`, read as data (the package need not be installed)."
    cfg = config()
    p = Path(cfg.lib_path)/'_modidx.py'
    if not p.exists(): return {'syms': {}}
    for node in ast.parse(p.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'd':
            return ast.literal_eval(node.value)
    return {'syms': {}}


_re_fence = re.compile(r'^\s*(```|~~~)')
_re_code_span = re.compile(r'(?<![\[`\w])`([A-Za-z_][\w.]*)(\(\))?`(?![\]`])')


class Linker:
    """Turns `` `Name` `` in markdown into a link to Name's documentation when Name is a public
    symbol of this project (as in `_modidx.py`, so its page and `#anchor` are nbdev's).
    `url(page, anchor)` builds the target; `html=True` writes `<a>` tags (for MyST, which would
    otherwise try to resolve relative links as documents)."""
    def __init__(self, url, html=False, pages=None):
        self.url, self.html, self.syms = url, html, {}
        for mod, syms in _modidx().get('syms', {}).items():
            for full, (target, *_) in syms.items():
                short = full[len(mod) + 1:]
                if any(part.startswith('_') for part in short.split('.')): continue
                page, _, anchor = target.partition('#')
                page = page[:-len('.html')] if page.endswith('.html') else page
                if pages is not None and page not in pages: continue
                for name in (short, full): self.syms.setdefault(name, (page, anchor))

    def _sub(self, m):
        name, call = m.group(1), m.group(2) or ''
        if name not in self.syms: return m.group(0)
        href = self.url(*self.syms[name])
        if self.html: return f'<a href="{href}"><code>{name}{call}</code></a>'
        return f'[`{name}{call}`]({href})'

    def __call__(self, text):
        "Link the code spans of markdown `text`, leaving fenced code blocks alone."
        out, fence = [], None
        for line in text.splitlines(True):
            m = _re_fence.match(line)
            if fence:
                if m and m.group(1) == fence: fence = None
            elif m: fence = m.group(1)
            elif not line.lstrip().startswith('#'): line = _re_code_span.sub(self._sub, line)  # headings stay plain
            out.append(line)
        return ''.join(out)


def readme_linker():
    "Links to the published docs site (`doc_host` + `doc_baseurl`), as nbdev's README has them."
    cfg = config()
    base = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')
    return Linker(lambda page, anchor: f"{base}/{page}.html" + (f"#{anchor}" if anchor else ''))


def site_linker(from_page, pages):
    "Relative links between the pages of the offline site."
    def url(page, anchor):
        rel = os.path.relpath(page + '.html', os.path.dirname(from_page) or '.')
        return rel + (f"#{anchor}" if anchor else '')
    return Linker(url, html=True, pages=set(pages))


# ---------------------------------------------------------------- 3. convert: shared pieces

def src(cell):
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else (s or '')


def text(v): return ''.join(v) if isinstance(v, list) else str(v)


def frontmatter(nb):
    "The notebook's frontmatter dict (from the raw cell nbdev's `FrontmatterProc` wrote), or {}."
    import yaml
    for cell in nb.cells:
        if cell.cell_type != 'raw': continue
        s = src(cell).strip()
        if s.startswith('---'):
            try: return yaml.safe_load(s.strip('-\n')) or {}
            except yaml.YAMLError: return {}
    return {}


_re_directive = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')


def split_directives(source):
    "Leading `#| key: value` lines of a code cell as a dict, and the rest of the source."
    lines, opts = source.splitlines(), {}
    while lines and (m := _re_directive.match(lines[0])):
        opts[m.group(1)] = m.group(2).strip('\'"').lower()
        lines.pop(0)
    return opts, '\n'.join(lines).strip('\n')


def title_block(nb, fallback):
    "Markdown for the page title and the `> description` under it."
    fm = frontmatter(nb)
    title = str(fm.get('title') or fallback)
    md = f"# {title}\n"
    if fm.get('description'): md += f"\n> {' '.join(str(fm['description']).split())}\n"
    return md


def fence(body, lang=''):
    "A fenced code block around `body`, with a fence longer than any backtick run inside it."
    longest = max((len(m) for m in re.findall(r'`+', body)), default=0)
    f = '`' * max(3, longest + 1)
    return f"{f}{lang}\n{body.rstrip()}\n{f}"


_re_attr_link = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}')


def attr_links(md, html=False):
    """Pandoc/Quarto links with attributes, `[text](url){target="_blank" ...}` (nbdev's `show_doc`
    writes its `[source]` link that way): the attributes dropped (markdown), or an HTML link with
    class `attr-link`, opening in a new tab (`html=True`)."""
    if html: return _re_attr_link.sub(lambda m: f'<a class="attr-link" href="{m.group(2)}" target="_blank" rel="noopener">{m.group(1)}</a>', md)
    return _re_attr_link.sub(lambda m: f'[{m.group(1)}]({m.group(2)})', md)


# ---------------------------------------------------------------- 3a. README markdown

def to_markdown(nb, linker=None, fallback_title='README'):
    """GitHub-flavoured markdown for a processed notebook: title and description from the
    frontmatter, markdown cells as they are, code cells fenced as `python`, their outputs after
    them (markdown as is, text in plain fences)."""
    linker = linker or (lambda s: s)
    parts = [linker(title_block(nb, fallback_title))]
    for cell in nb.cells:
        s = src(cell)
        if cell.cell_type == 'raw': continue
        if cell.cell_type == 'markdown':
            if s.strip(): parts.append(linker(attr_links(s.strip())))
            continue
        opts, code = split_directives(s)
        if opts.get('include') == 'false': continue
        if code and opts.get('echo') != 'false': parts.append(fence(code, 'python'))
        if opts.get('output') == 'false': continue
        for out in cell.get('outputs', []) or []:
            md = output_markdown(out, linker)
            if md: parts.append(md)
    return '\n\n'.join(p.rstrip() for p in parts if p.strip()) + '\n'


def output_markdown(out, linker):
    kind = out.get('output_type')
    if kind == 'stream':
        t = text(out.get('text', ''))
        return fence(t) if t.strip() else ''
    if kind == 'error':
        return fence('\n'.join(_strip_ansi(text(l)) for l in out.get('traceback', [])))
    data = out.get('data', {}) or {}
    if 'text/markdown' in data: return linker(attr_links(text(data['text/markdown']).strip()))
    if 'text/html' in data: return text(data['text/html']).strip()
    if 'text/plain' in data: return fence(text(data['text/plain']))
    return ''


def _strip_ansi(s): return re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', s)


# ---------------------------------------------------------------- 3b. MyST notebook for Sphinx

_re_heading = re.compile(r'^(#{2,6})\s+(.+?)\s*$', re.MULTILINE)

_TAGS = {('echo', 'false'): 'remove-input', ('output', 'false'): 'remove-output',
         ('include', 'false'): 'remove-cell'}


_re_rule = re.compile(r'^\s*(?:-{3,}|\*{3,}|_{3,})\s*$', re.MULTILINE)
_re_doc_section = re.compile(r'^(Args|Arguments|Parameters|Params|Returns|Return|Yields|Raises|Attributes|Examples?|Notes?):\s*$')
_re_doc_item = re.compile(r'^\s+(\*{0,2}[A-Za-z_]\w*\*{0,2})(\s*\([^)]*\))?\s*:\s+(.*)$')


def docstring_sections(md):
    """Google-style docstring sections (`Args:` followed by indented `name: text` lines) as a bold
    label and a bullet list; plain markdown would run them together into one paragraph."""
    out, section, fence = [], False, None
    for line in md.splitlines():
        m = _re_fence.match(line)
        if fence or m:
            if fence and m and m.group(1) == fence: fence = None
            elif not fence and m: fence = m.group(1)
            out.append(line); section = False
            continue
        if _re_doc_section.match(line):
            out += ['', f'**{line.strip()}**', '']; section = True
            continue
        if section and line[:1].isspace() and line.strip():
            item = _re_doc_item.match(line)
            if item: out.append(f"- `{item.group(1).strip('*')}`{item.group(2) or ''}: {item.group(3)}")
            elif out and out[-1].startswith('- ') and len(line) - len(line.lstrip()) > 4: out[-1] += ' ' + line.strip()
            else: out.append(f'- {line.strip()}')
            continue
        if not line.strip(): section = False
        out.append(line)
    return '\n'.join(out)


_re_sig_fence = re.compile(r'^(`{3,})python[ \t]*\n', re.MULTILINE)
_re_table = re.compile(r'^(?:\|.*\|[ \t]*(?:\n|$))+', re.MULTILINE)


def _showdoc_md(md):
    """Markdown a cell prints with `#| output: asis` (what `show_doc` cells are), for MyST: nbdev's
    anchor (`#name.lower()`, which `_modidx.py` links to) before each heading, rules as HTML (docutils
    refuses a transition at the start or end of a section), docstring sections as lists, and the
    signature block and tables (an enum's members) with the classes `showdoc-sig` and `showdoc-table`."""
    md = _re_rule.sub('<hr class="showdoc-rule">', md)
    # The signature, as a block the stylesheet and the site check can tell from example code.
    md = _re_sig_fence.sub(lambda m: f"{m.group(1)}{{code-block}} python\n:class: showdoc-sig\n", md, count=1)
    md = _re_table.sub(lambda m: f"```{{table}}\n:class: showdoc-table\n{m.group(0).rstrip()}\n```\n", md)
    md = _re_heading.sub(lambda m: f'<div id="{m.group(2).strip("`").lower()}"></div>\n\n{m.group(0)}', md)
    return docstring_sections(md)


def _plain(out):
    "Notebook output `out` as plain dicts, with text fields as strings and the keys nbformat requires."
    out = json.loads(json.dumps(out))
    if 'data' in out:
        out['data'] = {k: text(v) if k.startswith('text/') or k in ('application/javascript', 'image/svg+xml') else v
                       for k, v in out['data'].items()}
        out.setdefault('metadata', {})
        if out['output_type'] == 'execute_result': out.setdefault('execution_count', None)
    if out['output_type'] == 'stream': out['text'] = text(out.get('text', ''))
    return out


def _asis_markdown(out):
    "What Quarto puts in the page for an output of an `output: asis` cell: its markdown (or text) as is."
    if out['output_type'] == 'stream': return out['text']
    data = out.get('data', {})
    for k in ('text/markdown', 'text/plain'):
        if k in data: return data[k]
    return None


_re_div_open = re.compile(r'^(\s*)(:{3,})\s*\{([^}]*)\}\s*$')
_re_div_close = re.compile(r'^(\s*)(:{3,})\s*$')
_ADMONITIONS = {'note', 'tip', 'warning', 'important', 'caution'}


def quarto_divs(md):
    """Quarto fenced divs in markdown: `::: {.callout-note}` (optionally `title="..."`) becomes a
    MyST admonition, any other `::: {...}` div is unwrapped (its content kept)."""
    out, stack = [], []
    for line in md.splitlines():
        m = _re_div_open.match(line)
        if m:
            ind, colons, attrs = m.groups()
            kind = re.search(r'\.callout-(\w+)', attrs)
            title = re.search(r'title\s*=\s*"([^"]*)"', attrs)
            if kind and kind.group(1) in _ADMONITIONS:
                stack.append(True)
                if title: out += [f'{ind}{colons}{{admonition}} {title.group(1)}', f'{ind}:class: {kind.group(1)}', '']
                else: out.append(f'{ind}{colons}{{{kind.group(1)}}}')
            else: stack.append(False)
            continue
        m = _re_div_close.match(line)
        if m and stack:
            if stack.pop(): out.append(line)
            continue
        out.append(line)
    return '\n'.join(out)


def to_myst(nb, page, pages):
    """A clean nbformat-4.5 notebook dict for myst-nb: frontmatter as an H1 title and description,
    Quarto cell options (`#| echo: false`, ...) as myst-nb cell tags, the output of `output: asis`
    cells (the `show_doc` signatures) as markdown of the page (so their headings are sections of
    the page and its table of contents, as with Quarto), deterministic cell ids, links between
    pages relative."""
    linker = site_linker(page, pages)
    cells = [dict(cell_type='markdown', metadata={}, source=linker(title_block(nb, Path(page).name)))]
    def md_cell(md): cells.append(dict(cell_type='markdown', metadata={}, source=md))
    for cell in nb.cells:
        s = src(cell)
        if cell.cell_type == 'raw': continue
        if cell.cell_type == 'markdown':
            if s.strip(): md_cell(linker(attr_links(quarto_divs(s), html=True)))
            continue
        opts, code = split_directives(s)
        if opts.get('include') == 'false': continue
        tags = sorted({t for (k, v), t in _TAGS.items() if opts.get(k) == v})
        outputs = [_plain(o) for o in cell.get('outputs', []) or []]
        asis = opts.get('output') == 'asis'
        if code and not (asis and opts.get('echo') == 'false'):
            cells.append(dict(cell_type='code', metadata={'tags': tags} if tags else {}, source=code,
                              outputs=[] if asis else outputs, execution_count=None))
        elif outputs and not asis:
            cells.append(dict(cell_type='code', metadata={'tags': sorted(set(tags) | {'remove-input'})},
                              source='', outputs=outputs, execution_count=None))
        if asis and opts.get('output') != 'false':
            for out in outputs:
                md = _asis_markdown(out)
                if md and md.strip(): md_cell(_showdoc_md(linker(attr_links(md, html=True))))
    for cell in cells:
        if cell['cell_type'] == 'code':
            for out in cell['outputs']:
                if 'text/markdown' in out.get('data', {}):
                    out['data']['text/markdown'] = linker(attr_links(out['data']['text/markdown'], html=True))
    for i, c in enumerate(cells): c['id'] = f'cell-{i}'
    return dict(cells=cells, nbformat=4, nbformat_minor=5,
                metadata={'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                          'language_info': {'name': 'python'}})


def build_page(src_path, dst_path, pages):
    "Execute, process and convert one notebook into a myst-nb notebook at `dst_path`."
    in_root()
    nb = run(src_path)
    out = to_myst(nb, page_name(src_path), pages)
    import nbformat
    nbformat.validate(nbformat.from_dict(out))
    dst_path = Path(dst_path)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    dst_path.write_text(json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False) + '\n', encoding='utf-8')


if __name__ == '__main__':
    if len(sys.argv) != 4: sys.exit(__doc__)
    import signal
    signal.signal(signal.SIGUSR1, _report_hang)
    try: build_page(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))
    except NotebookError as e:
        sys.stderr.write(f"\n{e}\n")
        sys.exit(1)
