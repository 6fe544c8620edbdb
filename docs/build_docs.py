"""Build the offline documentation site: every notebook under nbs/ becomes a page of `_build/html`.

    python docs/build_docs.py              # then open _build/html/index.html
    python docs/build_docs.py --jobs 1     # execute the notebooks one at a time
    python docs/build_docs.py --check      # then check a few built pages (tests/test_docs_site.py)

No Quarto needed (`nbdev_docs` remains the way to build the Quarto site). Steps:

1. Each notebook under `nbs_path` (found the way nbdev finds them, so new notebooks are picked up
   automatically) is executed in its own Python process, processed by nbdev's docs processors
   (hidden cells removed, `show_doc` signatures rendered) and converted into a notebook for myst-nb
   in `_build/src/` (see docs/nbproc.py). A failing cell stops the build with its traceback.
2. `index.ipynb` gets the table of contents: root notebooks first, then one section per folder.
3. Sphinx (myst-nb, furo theme, configuration in docs/conf.py) renders `_build/src` into
   `_build/html` with `-W`: any warning fails the build.

Exit status: 0 on success, 1 if a notebook failed, Sphinx reported a warning or error, or (with
`--check`) the built site failed tests/test_docs_site.py.
Environment: `DOCS_NB_TIMEOUT` (seconds per notebook, default 600).
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nbproc

BUILD = nbproc.ROOT/'_build'
SRC, HTML, DOCTREES = BUILD/'src', BUILD/'html', BUILD/'doctrees'


def section_name(folder): return re.sub(r'^\d+_', '', folder)


def toctree_cell(pages):
    "A markdown cell with hidden toctrees: root pages (index first), then one captioned tree per folder."
    groups = {}
    for p in pages:
        if p == 'index': continue
        folder = p.split('/')[0] if '/' in p else ''
        groups.setdefault(folder, []).append(p)
    blocks = ["```{toctree}\n:hidden:\n\nHome <self>\n" + ''.join(f"{p}\n" for p in groups.pop('', [])) + "```"]
    for folder, ps in groups.items():
        blocks.append("```{toctree}\n:hidden:\n:caption: " + section_name(folder) + "\n\n" + ''.join(f"{p}\n" for p in ps) + "```")
    return dict(cell_type='markdown', id='toctree', metadata={}, source='\n\n'.join(blocks))


# Files of nbs/ that are not copied beside the pages: sources Sphinx would try to turn into pages,
# and the Quarto site's own configuration.
_NOT_ASSETS = {'.ipynb', '.md', '.rst', '.qmd', '.yml', '.yaml'}


def copy_assets():
    """Copy the other files of nbs/ (images a notebook shows with `![](plot.svg)`, data it links
    to) to the same place in the source folder, skipping what nbdev skips (names starting with `_`
    or `.`)."""
    nbs = Path(nbproc.config().nbs_path).resolve()
    n = 0
    for f in sorted(nbs.rglob('*')):
        rel = f.relative_to(nbs)
        if not f.is_file() or any(part[0] in '_.' for part in rel.parts) or f.suffix.lower() in _NOT_ASSETS: continue
        if f.name == 'styles.css' and rel.parent == Path('.'): continue  # the Quarto theme's
        (SRC/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, SRC/rel)
        n += 1
    return n


def build_page(nb, page, pages, timeout):
    "Run docs/nbproc.py for one notebook in a fresh process; returns (page, ok, seconds, stderr)."
    start = time.time()
    cmd = [sys.executable, str(HERE/'nbproc.py'), str(nb), str(SRC/f'{page}.ipynb'), json.dumps(pages)]
    # Its own session, so that on a timeout the worker processes a notebook started go too.
    p = subprocess.Popen(cmd, cwd=nbproc.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        ok, err = p.returncode == 0, out.strip()
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGUSR1)  # nbproc.py then prints the hanging cell and the stacks
        try: p.wait(3)
        except subprocess.TimeoutExpired: pass
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
        out, _ = p.communicate()
        ok, err = False, (out.strip() + f"\ntimed out after {timeout} s (DOCS_NB_TIMEOUT): a cell hangs").strip()
    return page, ok, time.time() - start, err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--jobs', type=int, default=min(4, os.cpu_count() or 1), help='notebooks executed in parallel')
    ap.add_argument('--check', action='store_true', help='then run tests/test_docs_site.py on the built site (needs pytest, Chromium)')
    args = ap.parse_args(argv)
    nbproc.in_root()
    nbs = nbproc.notebooks()
    pages = [nbproc.page_name(nb) for nb in nbs]
    if 'index' not in pages: sys.exit(f"No index.ipynb in {nbproc.config().nbs_path}: it is the site's home page.")
    for d in (SRC, HTML, DOCTREES, BUILD/'jupyter_execute'): shutil.rmtree(d, ignore_errors=True)

    timeout = int(os.environ.get('DOCS_NB_TIMEOUT', '600'))
    print(f"Executing and processing {len(nbs)} notebooks ({args.jobs} at a time)")
    with ThreadPoolExecutor(max(1, args.jobs)) as ex:
        results = list(ex.map(lambda a: build_page(*a, pages, timeout), zip(nbs, pages)))
    failed = []
    for page, ok, secs, err in results:
        print(f"  {'ok    ' if ok else 'FAILED'} {page}.ipynb ({secs:.1f} s)")
        if err: print('\n'.join('      ' + l for l in err.splitlines()))
        if not ok: failed.append(page)
    if failed:
        print(f"\nDocs not built: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1

    n = copy_assets()
    if n: print(f"Copied {n} other files of {nbproc.config().nbs_path.name}/ (images, data)")
    index = SRC/'index.ipynb'
    nb = json.loads(index.read_text(encoding='utf-8'))
    nb['cells'].append(toctree_cell(pages))
    index.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + '\n', encoding='utf-8')

    print("Running Sphinx (warnings are errors)")
    cmd = [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
           '-c', str(HERE), '-d', str(DOCTREES), str(SRC), str(HTML)]
    r = subprocess.run(cmd, cwd=nbproc.ROOT, stdin=subprocess.DEVNULL)
    if r.returncode:
        print(f"\nDocs build failed: sphinx-build exited with {r.returncode}", file=sys.stderr)
        return 1
    print(f"Built {len(pages)} pages: {(HTML/'index.html').relative_to(nbproc.ROOT)}")
    if args.check:
        print("Checking the built site (tests/test_docs_site.py)")
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_docs_site.py'],
                           cwd=nbproc.ROOT, stdin=subprocess.DEVNULL)
        if r.returncode:
            print("\nThe built site failed its checks", file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__': sys.exit(main())
