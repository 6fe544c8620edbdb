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
