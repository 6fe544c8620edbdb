"""How docs/nbproc.py renders `show_doc` entries (docs/apidoc.py), and what docs/check_examples.py
finds, on a small notebook made here.

Each kind of class the package documents is in it: an enum with comments beside its members, an
exception, a `Protocol` with an attribute, a plain base class with a class attribute, a dataclass and a
NamedTuple with commented fields, a function with a long signature, methods attached with fastcore's
`@patch`, and two functions in one cell (their entries keep the source's order). Needs nbdev (the
dev extra); skipped without it.
"""
import json, os, sys
from pathlib import Path
import pytest

pytest.importorskip('nbdev', reason='the docs pipeline needs nbdev (the dev extra)')
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'docs'))
import nbproc  # noqa: E402

CELLS = [
    ('markdown', '# render\n\n> Every kind of show_doc entry.'),
    ('code', '#| hide\nfrom nbdev.showdoc import *'),
    ('code', '#| export\nimport dataclasses\nfrom enum import Enum\nfrom typing import NamedTuple, Optional, Protocol\n'
             'from fastcore.basics import patch'),
    ('code', '#| export\nclass Colour(str, Enum):\n    "A colour."\n'
             "    RED = 'red'  # the colour of stop\n    GREEN = 'green'  # the colour of go\n    BLUE = 'blue'"),
    ('code', '#| export\nclass LostError(RuntimeError):\n    "Something went missing."'),
    ('code', '#| export\nclass Handle(Protocol):\n    "What a handle offers."\n'
             '    pid: Optional[int]  # Process id once started\n'
             '    def close(self) -> None:\n        "Close it."\n        ...'),
    ('code', '#| export\nclass Base:\n    "A base class."\n    name: Optional[str] = None  # Display name\n'
             '    def run(self): "Run it."'),
    ('code', '#| export\n@dataclasses.dataclass\nclass Settings:\n    "Some settings."\n'
             '    workers: int = 1  # Number of worker processes\n'
             '    colour: Colour = Colour.RED  # Which colour\n'
             '    tags: list = dataclasses.field(default_factory=list)  # Free-form tags'),
    ('code', '#| export\nclass Message(NamedTuple):\n    "One message."\n    req_id: int  # Correlation id\n'
             '    body: str = ""  # What it says'),
    ('code', '#| export\ndef configure(settings: Settings, workers_override: Optional[int] = None, '
             'colour_override: Optional[Colour] = None, verbose: bool = False) -> Settings:\n'
             '    "Return the settings with overrides."\n    return settings'),
    ('code', '#| export\nclass Pool:\n    "A pool of things."\n    def __init__(self, size: int = 1): self.size = size'),
    ('code', '#| export\n@patch\ndef grow(self: Pool,\n         by: int = 1,  # How many to add\n        ) -> int:  # The new size\n'
             '    "Add room for `by` more."\n    self.size += by\n    return self.size'),
    ('code', 'Pool(2).grow(3)'),
    ('code', '#| export\ndef first():\n    "The first."\n\ndef second():\n    "The second."'),
]


@pytest.fixture(scope='module')
def nb_path(tmp_path_factory):
    nb = {'cells': [dict(cell_type=k, metadata={}, source=s, **({'outputs': [], 'execution_count': None} if k == 'code' else {}))
                    for k, s in CELLS],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
          'nbformat': 4, 'nbformat_minor': 5}
    path = tmp_path_factory.mktemp('nb') / 'render.ipynb'
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture(scope='module')
def page(nb_path):
    "The rendered markdown of the notebook's `show_doc` entries, one string per entry, by heading."
    # The notebook shells (IPython) take over `__main__` and the display and exception hooks: give them back.
    cwd, saved = os.getcwd(), (sys.modules['__main__'], sys.displayhook, sys.excepthook)
    nbproc.in_root()
    try: out = nbproc.to_myst(nbproc.run(nb_path), 'render', ['render'])
    finally:
        os.chdir(cwd)
        sys.modules['__main__'], sys.displayhook, sys.excepthook = saved
    entries = {}
    for c in out['cells']:
        if c['cell_type'] == 'markdown' and 'showdoc-rule' in c['source']:
            head = next(l for l in c['source'].splitlines() if l.startswith('### '))
            entries[head[4:]] = c['source']
    return entries


def test_no_fake_signatures(page):
    for name, md in page.items():
        assert '*args' not in md and '**kw' not in md, f"{name}:\n{md}"


def test_enum_members_with_values_and_comments(page):
    md = page['Colour']
    assert 'class Colour(str, Enum):' in md and 'def Colour' not in md
    assert ':class: showdoc-table' in md
    assert "| `RED` | `'red'` | the colour of stop |" in md
    assert "| `BLUE` | `'blue'` |  |" in md


def test_exception_has_its_base_and_docstring(page):
    md = page['LostError']
    assert 'class LostError(RuntimeError):' in md and '*Something went missing.*' in md


def test_protocol_and_plain_class_show_their_attributes(page):
    assert 'class Handle(Protocol):\n    pid: Optional[int]  # Process id once started' in page['Handle']
    assert 'class Base:\n    name: Optional[str] = None  # Display name' in page['Base']


def test_dataclass_and_namedtuple_fields_keep_their_comments(page):
    md = page['Settings']
    assert 'workers:int=1,  # Number of worker processes' in md
    assert 'colour:Colour=Colour.RED,  # Which colour' in md
    assert 'tags:list=list(),  # Free-form tags' in md
    md = page['Message']
    assert 'req_id:int,  # Correlation id' in md and "body:str='',  # What it says" in md


def test_long_signature_one_parameter_per_line(page):
    md = page['configure']
    assert 'def configure(\n    settings:Settings,\n    workers_override:Optional[int]=None,\n' in md
    assert ')->Settings:' in md
    assert 'def Pool(size:int=1):' in page['Pool']


def test_patched_method_renders_under_its_class(page):
    md = page['Pool.grow']
    assert '<div id="pool.grow"></div>' in md
    assert 'def grow(\n    by:int=1,  # How many to add\n)->int:  # The new size' in md
    assert '*Add room for `by` more.*' in md


def test_entries_of_one_cell_in_source_order(page):
    names = list(page)
    assert names.index('first') + 1 == names.index('second')


def test_check_examples_lists_names_without_example(nb_path):
    import check_examples
    names, missing = check_examples.check_page(nb_path)
    assert names == ['Colour', 'LostError', 'Handle', 'Base', 'Settings', 'Message', 'configure', 'Pool', 'first', 'second']
    assert missing == [n for n in names if n != 'Pool']  # only `Pool(2).grow(3)` is an example; `grow` is a method
