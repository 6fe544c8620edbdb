"""Which exported names have no example on their own page.

    python docs/check_examples.py             # a table per page and the total; always exits 0
    python docs/check_examples.py --methods   # public methods too (`Class.method`, from _modidx.py)
    python docs/check_examples.py --strict    # exit 1 when some name has no example

A page's exported names are what nbdev puts in its module's `__all__`: the public functions,
classes and assigned names of the notebook's `#| export` / `#| exports` cells (`@patch`ed functions
are methods, not names of the module) and whatever `_all_` lists; a module's `logger` is left out.
An example is a code cell the reader sees that is not exported: not `#| export(s|i)`, `#| hide`,
`#| include: false` or `#| echo: false`, not only `show_doc(...)` calls, not the `nbdev_export()`
cell. A name counts as shown when the example's code uses it (a name or an attribute, as parsed;
strings, comments and import lines do not count).
Notebooks are read as they are, nothing is executed.
"""
import argparse, ast, json, re, sys, textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbproc

_EXPORT = {'export', 'exports'}
_NOT_EXAMPLE = {'export', 'exports', 'exporti', 'default_exp', 'hide'}
_re_magic = re.compile(r'^\s*[%!].*$', re.MULTILINE)
_re_default_exp = re.compile(r'^\s*#\s*\|\s*default_exp\s+(\S+)', re.MULTILINE)


def _parse(code):
    "The AST of a cell (top-level `await` allowed, IPython magics dropped), or None."
    try: return compile(_re_magic.sub('', code), '<cell>', 'exec', ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError: return None


def _is_patch(dec):
    "Whether a decorator is fastcore's `patch` (`@patch`, `@patch(as_prop=True)`, `@fastcore.basics.patch`)."
    f = dec.func if isinstance(dec, ast.Call) else dec
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, 'id', '')
    return name.startswith('patch')


def _is_logger(value):
    "`logging.getLogger(...)`: a module's logger is exported for logging settings, not to be shown in use."
    f = value.func if isinstance(value, ast.Call) else None
    return f is not None and (getattr(f, 'attr', None) or getattr(f, 'id', None)) == 'getLogger'


def exported_names(tree):
    "The names one export cell adds to `__all__`, the way nbdev's `make_all` finds them."
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not any(_is_patch(d) for d in node.decorator_list): out.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            if _is_logger(node.value): continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]):
                    if isinstance(n, ast.Name):
                        if n.id == '_all_' and isinstance(node.value, (ast.List, ast.Tuple)):
                            out += [getattr(e, 'value', getattr(e, 'id', None)) for e in node.value.elts]
                        else: out.append(n.id)
    return [n for n in out if isinstance(n, str) and n and (not n.startswith('_') or n == '_all_')]


def used_names(tree):
    "Names and attribute names that a cell's code uses (import statements left out)."
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name): found.add(node.id)
        elif isinstance(node, ast.Attribute): found.add(node.attr)
    return found


def is_example(opts, code, tree):
    if not code.strip() or opts.keys() & _NOT_EXAMPLE: return False
    if opts.get('include') == 'false' or opts.get('echo') == 'false': return False
    if 'nbdev_export' + '(' in code: return False
    if tree is not None and tree.body and all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                                              and getattr(s.value.func, 'id', '') == 'show_doc' for s in tree.body): return False
    return True


def _module_methods(modname):
    "Public methods of the module's classes, as `Class.method`, from `_modidx.py`."
    syms = nbproc._modidx().get('syms', {}).get(modname, {})
    out = []
    for full in syms:
        short = full[len(modname) + 1:]
        if short.count('.') == 1 and not any(p.startswith('_') for p in short.split('.')): out.append(short)
    return out


def check_page(nb_path, methods=False):
    """(exported names, names with no example) of one notebook; `methods` adds `Class.method`
    entries, which count as shown when an example uses `.method`."""
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    exported, used, module = [], set(), None
    for cell in nb.get('cells', []):
        if cell.get('cell_type') != 'code': continue
        opts, code = nbproc.split_directives(nbproc.src(cell))
        m = _re_default_exp.search(nbproc.src(cell))  # read as written: split_directives lowercases values
        if m: module = m.group(1)
        tree = _parse(code)
        if opts.keys() & _EXPORT and tree is not None: exported += exported_names(tree)
        elif is_example(opts, code, tree):
            used |= used_names(tree) if tree is not None else set(re.findall(r'[A-Za-z_]\w*', code))
    names = list(dict.fromkeys(n for n in exported if n != '_all_'))
    if methods and module:
        lib = nbproc.config().lib_path.name
        names += [m for m in _module_methods(f"{lib}.{module}") if m.split('.')[0] in names]
    missing = [n for n in names if n.split('.')[-1] not in used]
    return names, missing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--methods', action='store_true', help="check public methods (Class.method) too")
    ap.add_argument('--strict', action='store_true', help="exit 1 when an exported name has no example")
    args = ap.parse_args(argv)
    nbproc.in_root()
    rows = []
    for nb in nbproc.notebooks():
        names, missing = check_page(nb, args.methods)
        if names: rows.append((nbproc.page_name(nb), names, missing))
    width = max([len('page')] + [len(p) for p, *_ in rows])
    print(f"{'page':<{width}}  exported  without an example")
    for page, names, missing in rows:
        lead = f"{page:<{width}}  {len(names):>8}  {len(missing):>3}"
        wrapped = textwrap.wrap(', '.join(missing), 100 - len(lead) - 2) or ['']
        print(f"{lead}  {wrapped[0]}")
        for more in wrapped[1:]: print(' ' * (len(lead) + 2) + more)
    total, gap = sum(len(n) for _, n, _ in rows), sum(len(m) for *_, m in rows)
    what = 'exported names and methods' if args.methods else 'exported names'
    print(f"\n{gap} of {total} {what} appear in no example on their own page.")
    return 1 if args.strict and gap else 0


if __name__ == '__main__': sys.exit(main())
