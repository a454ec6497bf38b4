"""Write README.md from nbs/index.ipynb.

nbdev's own `nbdev-readme` renders through Quarto, which the docs workflow has but a developer's
machine may not. This renders the same notebook to GitHub markdown without Quarto: markdown cells as
they are, code cells as fenced Python, hidden cells and `#|` directives left out.

    python tools/make_readme.py          # rewrite README.md
    python tools/make_readme.py --check  # exit 1 if README.md is out of date
"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def _directives(src):
    return [l.strip() for l in src.splitlines() if l.strip().startswith('#|')]

def render(nb_path=root/'nbs'/'index.ipynb'):
    "GitHub markdown for the notebook at `nb_path`."
    cells = json.loads(Path(nb_path).read_text())['cells']
    parts = []
    for c in cells:
        src = ''.join(c['source'])
        ds = _directives(src)
        if any(d.replace(' ', '') in ('#|hide', '#|exporti', '#|export') for d in ds): continue
        if c['cell_type'] == 'markdown': parts.append(src.strip())
        elif c['cell_type'] == 'code':
            body = '\n'.join(l for l in src.splitlines() if not l.strip().startswith('#|')).strip()
            lang = 'bash' if any('bash' in d for d in ds) else 'python'
            if lang == 'bash': body = '\n'.join(l[1:] if l.startswith('!') else l for l in body.splitlines())
            if body: parts.append(f'```{lang}\n{body}\n```')
    return '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`')
        print('README.md is up to date')
    else:
        readme.write_text(text); print(f'wrote {readme}')
