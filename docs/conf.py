"""Sphinx configuration for the offline docs site built by `python docs/build_docs.py`.

The source folder is `_build/src` (notebooks that build_docs.py has executed and converted); this
folder only holds the configuration (`sphinx-build -c docs`). Project facts come from settings.ini.
"""
from configparser import ConfigParser
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
_cfg = ConfigParser(delimiters=['='])
_cfg.read(_root/'settings.ini', encoding='utf-8')
_cfg = _cfg['DEFAULT']

project = _cfg['title']
author = _cfg['author']
copyright = _cfg['copyright']
release = version = _cfg['version']

extensions = ['myst_nb']
root_doc = 'index'
exclude_patterns = ['jupyter_execute', '**/.ipynb_checkpoints']

# The notebooks were executed once by build_docs.py (top-level `await` included) and carry their
# outputs; myst-nb only renders them.
nb_execution_mode = 'off'
nb_merge_streams = True
myst_enable_extensions = ['colon_fence']

html_theme = 'furo'
html_title = project
html_static_path = [str(Path(__file__).resolve().parent/'_static')]
html_css_files = ['nbdocs.css']
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {'navigation_with_keys': True}

# `show_doc` headings are `###` whatever level the page is at (Quarto does not mind the jump).
suppress_warnings = ['myst.header']


def setup(app):
    # Each code line becomes a block of its own that knows its indentation, so that the stylesheet can
    # wrap a long line under itself (a hanging indent) instead of scrolling the block sideways. Sphinx
    # reads the formatter class from `PygmentsBridge.html_formatter` when the builder starts, after this.
    import html, re
    from sphinx.highlighting import PygmentsBridge
    tags, lead = re.compile(r'<[^>]*>'), re.compile(r'^ +')

    class LineBlocks(PygmentsBridge.html_formatter):
        def wrap(self, source):
            return super().wrap(self._line_blocks(source))

        def _line_blocks(self, source):
            for kind, line in source:
                if kind != 1:
                    yield kind, line
                    continue
                code = line[:-1] if line.endswith('\n') else line
                text = html.unescape(tags.sub('', code))
                indent = len(text) - len(text.lstrip(' '))
                # The indentation stays in the text (copied code keeps it) but takes no room: the padding
                # draws it, capped so that a deep one still leaves room on a phone. The stylesheet hides
                # the newline of a line with code, since the end of its block already ends it.
                code = lead.sub(lambda m: f'<span class="ind">{m.group(0)}</span>', code)
                cls = 'cl' if text.strip() else 'cl blank'
                yield 1, f'<span class="{cls}" style="--indent:{indent}">{code}<span class="nl">\n</span></span>'

    PygmentsBridge.html_formatter = LineBlocks
