"""The markdown of a `show_doc` entry, for the docs site and the README (used by `nbproc.py`).

nbdev's `BasicMarkdownRenderer` prints every object as `def name(params)`. For a class it reads the
parameters of `__init__`, so whatever has no `__init__` of its own gets the `(*args, **kwargs)` of
`object`, `Exception` or `Protocol`, and an `Enum` the `(*args, **kwds)` of `Enum.__init__`. And the
field comments of a dataclass are lost, because the docs shell defines the class in `__main__`,
where `inspect` cannot find its source. `Renderer` keeps nbdev's layout (rule, `[source]` link,
heading, code block, docstring) and changes the code block:

- an `Enum`: its class line, then a table of its members, their values and their `# comments`;
- a class whose constructor is not its own (an exception, a `Protocol`, a plain base class): its class
  line with its bases and the data attributes its body declares, no call signature;
- a dataclass or `NamedTuple`: the constructor signature with each field's `# comment`;
- anything else: the signature as nbdev has it, but one parameter per line when it does not fit on one.

Class sources come from `inspect` when the class lives in a file, otherwise from the cells the docs
shell ran (`remember_cell`).
"""
import ast, dataclasses, enum, inspect, io, re, sys, textwrap, tokenize
from nbdev.showdoc import BasicMarkdownRenderer
from nbdev.doclinks import NbdevLookup
from fastcore.docments import docments

# A signature at most this long, without comments, stays on one line.
ONE_LINE = 80

_cells = {}  # class name -> source of its last top-level definition in a cell the docs shell ran


def remember_cell(source):
    "Note the top-level classes that the code cell `source` defines, before the docs shell runs it."
    try: tree = ast.parse(source)
    except SyntaxError: return  # magics and the like: nothing we could read anyway
    lines = source.splitlines(True)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            _cells[node.name] = ''.join(lines[first - 1:node.end_lineno])


def forget_cells(): _cells.clear()


def class_source(cls):
    "The source of `cls`'s definition, or None."
    try: return inspect.getsource(cls)
    except (OSError, TypeError): pass
    if cls.__qualname__ == cls.__name__ and cls.__name__ in _cells: return _cells[cls.__name__]
    return None


def _comments(src):
    "Line number -> text of the `#` comment on that line."
    out = {}
    try:
        for t in tokenize.generate_tokens(io.StringIO(src).readline):
            if t.type == tokenize.COMMENT: out[t.start[0]] = t.string.lstrip('#').strip()
    except (tokenize.TokenError, IndentationError): pass
    return out


def class_body(cls):
    """The data attributes `cls`'s body declares, in order: (name, annotation source or None, value
    source or None, comment or None), read from its source. Empty when the source is unknown."""
    src = class_source(cls)
    if not src: return []
    src = textwrap.dedent(src)
    try: tree = ast.parse(src)
    except SyntaxError: return []
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None: return []
    comments, out = _comments(src), []
    code_lines = {n.lineno for n in ast.walk(node) if hasattr(n, 'lineno')}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name, anno, value = stmt.target.id, ast.get_source_segment(src, stmt.annotation), stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, anno, value = stmt.targets[0].id, None, stmt.value
        else: continue
        value = None if value is None else ' '.join(ast.get_source_segment(src, value).split())
        # The comment at the end of the statement, else the comment lines right above it (as docments reads them).
        note = next((comments[l] for l in range(stmt.end_lineno, stmt.lineno - 1, -1) if l in comments), None)
        if note is None:
            above, l = [], stmt.lineno - 1
            while l in comments and l not in code_lines: above.insert(0, comments[l]); l -= 1
            note = ' '.join(above) or None
        out.append((name, anno, value, note))
    return out


# ---------------------------------------------------------------- kinds of classes

# Modules whose `__init__`/`__new__` stand in for "no constructor of its own" (Protocol's placeholder).
_MACHINERY = {'typing', 'typing_extensions'}


def own_constructor(cls):
    """Whether calling `cls` runs a Python `__init__`/`__new__` written for it or for a class of its
    kind, rather than `object`'s, `Exception`'s or `Protocol`'s."""
    for k in cls.__mro__:
        if k is object: return False
        for name in ('__init__', '__new__'):
            if name in k.__dict__:
                fn = k.__dict__[name]
                fn = getattr(fn, '__func__', fn)
                return inspect.isfunction(fn) and getattr(fn, '__module__', None) not in _MACHINERY
    return False


def is_record(cls):
    "A dataclass or a NamedTuple: its fields are its constructor's parameters."
    return dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, '_fields'))


def _stdlib(mod): return (mod or '').split('.')[0] in sys.stdlib_module_names


def class_doc(cls, nbdev_doc):
    """nbdev's docstring for `cls`, unless `cls` has none of its own and that one is a standard
    library base's (`Unspecified run-time error.` for a bare `RuntimeError` subclass)."""
    if cls.__dict__.get('__doc__') is None:
        for k in cls.__mro__[1:]:
            if k.__dict__.get('__doc__'): return '' if _stdlib(k.__module__) else nbdev_doc
    return nbdev_doc


# ---------------------------------------------------------------- formatting pieces

_re_dotted = re.compile(r'\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+')


def _unqualify(m):
    "A dotted name without its longest prefix that is a module (`datetime.datetime`, `mod.Outer.Inner`)."
    parts = m.group(0).split('.')
    for i in range(len(parts) - 1, 0, -1):
        if '.'.join(parts[:i]) in sys.modules: return '.'.join(parts[i:])
    return m.group(0)


def fmt_anno(a):
    "An annotation as written in code: names without their module (`Optional[WorkerConfig]`)."
    if a is inspect.Parameter.empty: return ''
    if isinstance(a, str): return a
    if isinstance(a, type) and not getattr(a, '__args__', None): return a.__qualname__
    s = re.sub(r"ForwardRef\('([^']*)'\)", r'\1', repr(a))
    s = re.sub(r'\bNoneType\b', 'None', re.sub(r'~(\w)', r'\1', s))  # typing's reprs of None and of a TypeVar
    return _re_dotted.sub(_unqualify, s)


def fmt_value(v, field=None):
    "A default value as code: enum members by name, functions and classes by name, a dataclass factory as a call."
    if field is not None and field.default_factory is not dataclasses.MISSING:
        return f"{getattr(field.default_factory, '__name__', 'factory')}()"
    if isinstance(v, enum.Enum): return f"{type(v).__name__}.{v.name}"
    if inspect.isfunction(v) or inspect.isclass(v) or inspect.isbuiltin(v): return v.__name__
    return repr(v)


def _bases(cls):
    "The bases as the class statement wrote them (`Generic[T]` included), without `object`."
    bases = [b for b in cls.__dict__.get('__orig_bases__', cls.__bases__) if b is not object]  # its own, not a parent's
    return ', '.join(b.__name__ if inspect.isfunction(b) else fmt_anno(b) for b in bases)


def class_line(cls):
    b = _bases(cls)
    return f"class {cls.__name__}({b}):" if b else f"class {cls.__name__}:"


def _params(obj):
    "(text, comment) for each parameter of `obj`'s signature, with `/` and `*` where Python needs them; and the return annotation's (text, comment)."
    sig = inspect.signature(obj)
    try: notes = docments(obj)
    except Exception: notes = {}
    fields = getattr(obj, '__dataclass_fields__', {}) if inspect.isclass(obj) else {}
    if inspect.isclass(obj) and is_record(obj):
        notes = dict(notes, **{n: c for n, _, _, c in class_body(obj) if c})
    ps = list(sig.parameters.values())
    if ps and ps[0].name == 'self': ps = ps[1:]  # a method (a `@patch`ed one too), shown as it is called, as nbdev does
    out, kinds = [], [p.kind for p in ps]
    P = inspect.Parameter
    for i, p in enumerate(ps):
        if p.kind is P.KEYWORD_ONLY and P.VAR_POSITIONAL not in kinds and P.KEYWORD_ONLY not in kinds[:i]: out.append(('*', None))
        star = '*' if p.kind is P.VAR_POSITIONAL else '**' if p.kind is P.VAR_KEYWORD else ''
        t = star + p.name + (f":{fmt_anno(p.annotation)}" if p.annotation is not P.empty else '')
        if p.default is not P.empty: t += '=' + fmt_value(p.default, fields.get(p.name))
        out.append((t, notes.get(p.name)))
        if p.kind is P.POSITIONAL_ONLY and (i + 1 == len(kinds) or kinds[i + 1] is not P.POSITIONAL_ONLY): out.append(('/', None))
    if inspect.isclass(obj): return out, ('', None)
    ret = sig.return_annotation
    return out, ((f"->{fmt_anno(ret)}" if ret is not P.empty else ''), notes.get('return'))


def signature_text(obj, name):
    """`def name(params)->ret:` on one line when it is short and has no comments, else one parameter per
    line with its `# comment` (a long line then wraps under itself on the page, see conf.py)."""
    params, (ret, ret_note) = _params(obj)
    prefix = 'async def' if inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj) else 'def'
    tail = f"){ret}:" + (f"  # {ret_note}" if ret_note else '')
    one = f"{prefix} {name}(" + ', '.join(t for t, _ in params) + tail
    if not params or (len(one) <= ONE_LINE and not any(n for _, n in params)): return one
    lines = [f"{prefix} {name}("]
    lines += [f"    {t}," + (f"  # {n}" if n else '') for t, n in params]
    return '\n'.join(lines + [tail])


def _cell(s): return s.replace('|', '\\|').replace('\n', ' ')


def _code(s):
    tick = '``' if '`' in s else '`'
    pad = ' ' if s.startswith('`') or s.endswith('`') else ''
    return f"{tick}{pad}{s}{pad}{tick}"


def enum_table(cls):
    "Markdown table of the members of enum `cls`: name, value and the comment beside it in the source."
    notes = {n: c for n, _, _, c in class_body(cls)}
    rows = [(name, repr(m.value), notes.get(name)) for name, m in cls.__members__.items()]
    with_notes = any(n for *_, n in rows)
    head = '| Member | Value |' + (' Meaning |' if with_notes else '')
    md = [head, '|---|---|' + ('---|' if with_notes else '')]
    for name, value, note in rows:
        md.append(f"| {_code(name)} | {_code(_cell(value))} |" + (f" {_cell(note or '')} |" if with_notes else ''))
    return '\n'.join(md)


def class_block(cls):
    "The class line with the bases, then each data attribute its body declares, as written there with its comment."
    lines = [class_line(cls)]
    for name, anno, value, note in class_body(cls):
        if name.startswith('_'): continue
        t = name + (f": {anno}" if anno else '') + (f" = {value}" if value is not None else '')
        lines.append(f"    {t}" + (f"  # {note}" if note else ''))
    return '\n'.join(lines)


# ---------------------------------------------------------------- the renderer

def _fence(code):
    return f"```python\n{code}\n```"


class Renderer(BasicMarkdownRenderer):
    "nbdev's `show_doc` markdown (rule, `[source]` link, heading, code, docstring) with the code block chosen by the kind of object."
    def _body(self):
        o = self.sym
        if inspect.isclass(o):
            if issubclass(o, enum.Enum): return _fence(class_line(o)), enum_table(o)
            if not own_constructor(o): return _fence(class_block(o)), ''
        if callable(o) and self.sig is not None: return _fence(signature_text(o, self.nm.split('.')[-1])), ''
        return f"```python\n{self.dm}\n```", ''  # no signature to read (a builtin, an instance): nbdev's text

    def _repr_markdown_(self):
        md = '---\n\n'
        src = NbdevLookup().code(self.fn)
        if src: md += f'[source]({src}){{target="_blank" style="float:right; font-size:smaller"}}\n\n'
        md += f"{'#' * self.title_level} {self.nm}\n\n"
        code, after = self._body()
        md += code
        docs = class_doc(self.sym, self.docs) if inspect.isclass(self.sym) else self.docs
        if docs: md += '\n\n' + re.sub(r'^(\s*)(.+)', r'\1*\2*', docs, count=1)
        if after: md += '\n\n' + after
        return md


def install():
    """Make `show_doc` use `Renderer` in this process, unless settings.ini names a `renderer` of its own
    (nbdev's `show_doc` looks `BasicMarkdownRenderer` up in its module each time it is called)."""
    import nbdev.showdoc
    from nbdev.config import get_config
    if get_config().get('renderer'): return
    nbdev.showdoc.BasicMarkdownRenderer = Renderer
