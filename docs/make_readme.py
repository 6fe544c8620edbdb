"""Write README.md from the `readme_nb` of settings.ini (nbs/index.ipynb), without Quarto.

    python docs/make_readme.py            # write README.md
    python docs/make_readme.py --check    # exit 1 (and show a diff) if README.md is out of date

What `nbdev_readme` would produce: the notebook is executed (it is stored without outputs),
processed by nbdev's docs processors (hidden cells and directives removed, the `# title` and
`> description` kept), then written as markdown with code cells and their outputs fenced. The result
only depends on the notebooks and `_modidx.py`, so running it twice gives the same file and CI can
regenerate it and compare. See docs/nbproc.py for the details.
"""
import difflib, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbproc


def readme_text():
    nbproc.in_root()
    cfg = nbproc.config()
    nb_path = Path(cfg.nbs_path)/cfg.get('readme_nb', 'index.ipynb')
    nb = nbproc.run(nb_path)
    return nbproc.to_markdown(nb, nbproc.readme_linker(), fallback_title=cfg.get('title', cfg.lib_name))


def main(argv):
    check = '--check' in argv
    try: new = readme_text()
    except nbproc.NotebookError as e:
        sys.stderr.write(f"\n{e}\nREADME.md not written: the readme notebook failed.\n")
        return 1
    path = nbproc.ROOT/'README.md'
    old = path.read_text(encoding='utf-8') if path.exists() else ''
    if check:
        if new == old:
            print("README.md is up to date.")
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                   'README.md (committed)', 'README.md (from notebook)'))
        print("\nREADME.md is out of date: run `python docs/make_readme.py` and commit it.")
        return 1
    if new != old: path.write_text(new, encoding='utf-8')
    print(f"Wrote {path.relative_to(nbproc.ROOT)}" + ('' if new != old else ' (unchanged)'))
    return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
