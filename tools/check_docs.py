"""Check what the docs site will show, without Quarto: process the notebooks with `nbdev-proc-nbs` and read the result.

    python tools/check_docs.py            # run nbdev-proc-nbs, then check; exit 1 on any problem
    python tools/check_docs.py --no-proc  # check the existing _proc/ (after a recent nbdev-proc-nbs)

Problems are reported per notebook, one line each, with the cell they come from and the fix:

- *dropped intro*: nbdev turns a notebook's first markdown cell into the page's front matter and throws away
  everything in it except `# Title`, the first `> description` line and `- key: value` lines. That cell must hold
  nothing else; the introduction goes in the next cell.
- *cut subtitle*: the `> description` must be one line (nbdev keeps only the first) and a whole sentence.
- *saved outputs* on the rendered page (hidden cells are not checked): stderr streams, progress-bar frames
  (fastprogress or tqdm, console or HTML), download notices, warnings, tracebacks, absolute paths of the machine
  that ran the notebook, and `show_doc` signatures that list fastai's callback event arguments.
  `python tools/clean_outputs.py NB` fixes the first five kinds; the others need a change in the notebook.
  Visible cells made only of assertions are listed as notes (hide them unless they are meant as examples).
- *site*: every notebook in `nbs/` is in `nbs/sidebar.yml` (and nothing else is), the home page links every page,
  symbol names cross-link to their API entries, and README.md is up to date with `nbs/index.ipynb`.
"""
import argparse, json, re, subprocess, sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NBS, PROC = ROOT/'nbs', ROOT/'_proc'
sys.path.insert(0, str(ROOT/'tools'))
import make_readme  # noqa: E402

_RE_ABS_PATH = re.compile(r'(?<![\w.~<>:/-])/(?:tmp|root|home|work|Users|private|var|opt|usr|mnt|srv|data)/[\w.-]+')
_RE_BAR = re.compile(r'<progress|\d+%\|[#█▏▎▍▌▋▊▉ ]*\||\|[█-]{5,}\|\s*\d+\.\d+%|^Epoch \d+/\d+ :', re.MULTILINE)
_RE_WARNING = re.compile(r'\b\w*Warning: ')
_RE_FM_LINE = re.compile(r'^(?:#\s+\S.*|>\s*\S.*|-\s+\S.*:.*\S)$')


def page_name(nb:Path) -> str:
    "The HTML file nbdev writes for notebook `nb` (numeric prefix dropped)"
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', nb.stem.lower()) + '.html'  # nbdev's rule: '08_cues' -> 'cues.html'

def first_line(cell) -> str:
    "The first non-directive source line of `cell`, shortened, to name it in a report"
    lines = [l for l in ''.join(cell['source']).splitlines() if l.strip() and not l.startswith('#|')]
    return (lines[0][:60] + ('…' if len(lines[0]) > 60 else '')) if lines else '(empty)'

def check_front_matter(nb:dict) -> list:
    "Problems with the first markdown cell of a source notebook: dropped intro prose, missing or cut subtitle"
    cell = next((c for c in nb['cells'] if c['cell_type'] == 'markdown'), None)
    if cell is None: return ['no markdown cell: the page has no title']
    lines = [l.rstrip() for l in ''.join(cell['source']).splitlines() if l.strip()]
    probs = []
    if not any(l.startswith('# ') for l in lines): probs.append('first markdown cell has no `# Title` line')
    extra = [l for l in lines if not _RE_FM_LINE.match(l)]
    desc = [i for i, l in enumerate(lines) if l.startswith('>')]
    if len(desc) > 1:
        probs.append(f'cut subtitle: the `>` description spans {len(desc)} lines and nbdev keeps only the first '
                     f'("{lines[desc[0]][:50]}…"); make it one line')
    elif not desc: probs.append('no subtitle: add a one-line `> description` under the title')
    elif not re.search(r'[.?!]`?\)?$', lines[desc[0]]):
        probs.append(f'cut subtitle: "{lines[desc[0]][-50:]}" does not end a sentence')
    if extra:
        words = sum(len(l.split()) for l in extra)
        probs.append(f'dropped intro: {words} words of the first markdown cell ("{extra[0][:40]}…") are removed by nbdev; '
                     'keep only `# Title` and `> description` there and move the rest to a new cell below')
    return probs

def _output_text(o) -> str:
    if o['output_type'] == 'stream': return ''.join(o.get('text', ''))
    if o['output_type'] == 'error': return '\n'.join(o.get('traceback', [])) + o.get('ename', '')
    return '\n'.join(''.join(v) for k, v in o.get('data', {}).items() if k.startswith('text/'))

def check_outputs(proc_nb:dict) -> list:
    "Problems with the outputs a reader sees on the processed page"
    probs = []
    for c in proc_nb['cells']:
        if c['cell_type'] != 'code': continue
        found = []
        for o in c.get('outputs', []):
            txt = _output_text(o)
            if o['output_type'] == 'stream' and o.get('name') == 'stderr': found.append('stderr stream')
            if o['output_type'] == 'error' or 'Traceback (most recent call last)' in txt: found.append('traceback')
            if (o['output_type'] == 'stream' and '\r' in txt) or _RE_BAR.search(txt): found.append('progress-bar frames')
            if re.search(r'^Downloading:? "?https?://', txt, re.MULTILINE): found.append('download notice')
            if _RE_WARNING.search(txt): found.append(f'warning ({_RE_WARNING.search(txt).group(0).strip()})')
            m = _RE_ABS_PATH.search(txt)
            if m: found.append(f'absolute path ({m.group(0)}…)')
            if 'after_create' in txt and 'before_fit' in txt:
                found.append("signature lists fastai's 25 callback event arguments (give the class an `__init__`)")
        if found:
            probs.append(f'output of `{first_line(c)}`: ' + '; '.join(dict.fromkeys(found)))
        if is_test_only(c):
            probs.append(f'note: test-only cell on the page (`{first_line(c)}`): if it is not meant as an example, '
                         'add `#| hide` so the page reads as documentation')
    return probs

_RE_TEST_LINE = re.compile(r'^(?:assert\b|test_\w*\(|with ExceptionExpected|fail\(|\s|\)|\]|#)')

def is_test_only(cell) -> bool:
    "A visible code cell made only of assertions (`assert`, fastcore's `test_*`), continuation lines and comments"
    lines = [l for l in ''.join(cell['source']).splitlines() if l.strip() and not l.startswith('#|')]
    return bool(lines) and not lines[0][:1].isspace() and all(_RE_TEST_LINE.match(l) for l in lines)

def check_proc_page(proc_nb:dict, src_nb:dict) -> list:
    "The page keeps its subtitle whole and the introduction that follows the title"
    probs = []
    raw = next((c for c in proc_nb['cells'] if c['cell_type'] == 'raw'), None)
    fm = yaml.safe_load(''.join(raw['source']).strip().strip('-')) if raw else {}
    if not fm.get('description'): probs.append('processed page has no subtitle (description)')
    mds = [c for c in src_nb['cells'] if c['cell_type'] == 'markdown']
    if len(mds) > 1:  # the intro: the markdown cell right after the front-matter cell must reach the page
        intro = ' '.join(''.join(mds[1]['source']).split())[:80]
        page = ' '.join(' '.join(''.join(c['source']) for c in proc_nb['cells'] if c['cell_type'] == 'markdown').split())
        page = re.sub(r'\[(`[^`]+`(?:\(\))?)\]\([^)\s]*\)', r'\1', page)  # symbol cross-links back to plain names
        if intro and intro not in page: probs.append(f'dropped intro: "{intro[:40]}…" is not on the processed page')
    return probs

def sidebar_pages() -> list:
    "Notebook file names listed in nbs/sidebar.yml, in order"
    def walk(items):
        for it in items:
            if isinstance(it, str): yield it
            elif isinstance(it, dict):
                if 'href' in it: yield it['href']
                yield from walk(it.get('contents', []))
    d = yaml.safe_load((NBS/'sidebar.yml').read_text())
    return list(walk(d['website']['sidebar']['contents']))

def doc_url() -> str:
    "The Documentation URL from pyproject.toml, with a trailing slash"
    import tomllib
    url = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['urls']['Documentation']
    return url.rstrip('/') + '/'

def check_site(notebooks:list) -> list:
    "Site-wide problems: sidebar, home-page links, cross-links, README"
    probs = []
    names = {nb.name for nb in notebooks}
    try: side = sidebar_pages()
    except (OSError, KeyError, TypeError) as e: side = []; probs.append(f'nbs/sidebar.yml unreadable: {e}')
    for n in sorted(names - set(side)): probs.append(f'sidebar: {n} is not in nbs/sidebar.yml (the page would be unreachable)')
    for n in side:
        if n not in names: probs.append(f'sidebar: nbs/sidebar.yml lists {n}, which is not a notebook in nbs/ (dead link)')
    home = json.loads((NBS/'index.ipynb').read_text())
    home_md = '\n'.join(''.join(c['source']) for c in home['cells'] if c['cell_type'] == 'markdown')
    base = doc_url()
    for nb in notebooks:
        if nb.name == 'index.ipynb': continue
        if base + page_name(nb) not in home_md: probs.append(f'home page: no link to the {page_name(nb)} page ({base}{page_name(nb)})')
    n_links = 0
    for p in PROC.glob('*.ipynb'):
        for c in json.loads(p.read_text())['cells']:
            texts = [''.join(c['source'])] if c['cell_type'] == 'markdown' else []
            texts += [''.join(o.get('data', {}).get('text/markdown', [])) for o in c.get('outputs', [])]
            n_links += sum(len(re.findall(r'\[`[^`]+`\]\(' + re.escape(base), t)) for t in texts)
    if n_links < 20:
        probs.append(f'cross-links: only {n_links} symbol links to API entries on the whole site; '
                     'is `strip_libs = "tell_me_why"` still under [tool.nbdev] in pyproject.toml?')
    readme = ROOT/'README.md'
    if not readme.exists() or readme.read_text() != make_readme.render():
        probs.append('README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`')
    return probs, n_links

def proc_warnings(log:str) -> list:
    "nbdev-proc-nbs' warnings about cells that mix imports with other code (the site would show them as they are)"
    cells = re.findall(r"Found cells containing imports and other code\. See FAQ\.\n---\n(.*?)\n---", log, re.S)
    return [f"a cell mixes imports with other code (put the imports in a `#| hide` cell of their own): "
            f"{' / '.join(l for l in c.splitlines() if not l.startswith('#|'))[:100]}" for c in cells]

def self_test():
    "The checks catch what they are meant to catch, on small made-up notebooks"
    md = lambda s: {'cell_type': 'markdown', 'metadata': {}, 'source': s}
    out = lambda *os: {'cell_type': 'code', 'metadata': {}, 'source': 'x = f()', 'outputs': list(os)}
    stream = lambda name, t: {'output_type': 'stream', 'name': name, 'text': t}
    assert check_front_matter({'cells': [md('# T\n\n> One whole line.'), md('Intro.')]}) == []
    p = check_front_matter({'cells': [md('# T\n\n> One line.\n\nIntro prose that nbdev drops.')]})
    assert len(p) == 1 and p[0].startswith('dropped intro: 5 words'), p
    p = check_front_matter({'cells': [md('# T\n\n> A subtitle that runs\n> over two lines.')]})
    assert len(p) == 1 and p[0].startswith('cut subtitle'), p
    assert check_front_matter({'cells': [md('# T\n> A subtitle cut mid')]})[0].startswith('cut subtitle')
    assert check_outputs({'cells': [out(stream('stdout', 'accuracy 0.61\n'))]}) == []
    bad = {'cells': [out(stream('stderr', 'Feature scores: 100%|##########| 8/8\n'),
                         stream('stdout', 'Epoch 1/1 : |████----| 50.00% [1/2 00:00<00:00]\r0  0.69\n'),
                         stream('stdout', 'Downloading: "https://x.org/w.pth" to /tmp/tmpab12/w.pth\n'),
                         {'output_type': 'error', 'ename': 'ValueError', 'evalue': '', 'traceback': ['Traceback (most recent call last)']})]}
    p = check_outputs(bad)[0]
    for kind in ('stderr stream', 'progress-bar frames', 'download notice', 'absolute path (/tmp/tmpab12', 'traceback'):
        assert kind in p, (kind, p)
    html = {'output_type': 'display_data', 'data': {'text/html': '<div><progress value="3" max="4"></progress></div>'}}
    assert 'progress-bar frames' in check_outputs({'cells': [out(html)]})[0]
    assert check_outputs({'cells': [out({'output_type': 'execute_result', 'data': {'text/plain': "'<tmp>/models/x.pt'"}})]}) == []
    warned = "UserWarning: Found cells containing imports and other code. See FAQ.\n---\n#| hide: true\nimport re\nx = 1\n---\n"
    assert proc_warnings(warned) == ['a cell mixes imports with other code (put the imports in a `#| hide` cell of their own): import re / x = 1']
    assert proc_warnings('Cancelled. Please download and install Quarto') == []
    print('check_docs self-test passed')

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--no-proc', action='store_true', help='reuse the existing _proc/ instead of running nbdev-proc-nbs')
    ap.add_argument('--self-test', action='store_true', help='check the checker on made-up notebooks, then stop')
    args = ap.parse_args(argv)
    if args.self_test: self_test(); return 0
    if not args.no_proc:
        r = subprocess.run(['nbdev-proc-nbs'], cwd=ROOT, capture_output=True, text=True)
        if r.returncode: sys.exit(f'nbdev-proc-nbs failed:\n{r.stdout}\n{r.stderr}')
    mixed = [] if args.no_proc else proc_warnings(r.stdout + r.stderr)
    notebooks = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))
    n_bad = 0
    for nb_path in notebooks:
        src = json.loads(nb_path.read_text())
        probs = check_front_matter(src)
        proc_path = PROC/nb_path.name
        if not proc_path.exists(): probs.append('not in _proc/: did nbdev-proc-nbs run?')
        else:
            proc = json.loads(proc_path.read_text())
            probs += [p for p in check_proc_page(proc, src) if not any(q.startswith('dropped intro') for q in probs)]
            probs += check_outputs(proc)
        rel = nb_path.relative_to(ROOT)
        notes = [p for p in probs if p.startswith('note: ')]  # reported, but not a failure
        probs = [p for p in probs if not p.startswith('note: ')]
        if probs:
            n_bad += 1
            print(f'FAIL {rel}: {len(probs)} problem(s)')
        else: print(f'ok   {rel}')
        for p in probs + notes: print(f'     - {p}')
    site, n_links = check_site(notebooks)
    site += mixed
    print(f'site: {n_links} symbol cross-links to API entries')
    for p in site: print(f'FAIL site: {p}')
    if n_bad or site:
        print(f'\ndocs check failed: {n_bad} notebook(s) and {len(site)} site problem(s). '
              'Saved-output problems: `python tools/clean_outputs.py NB`, then `nbdev-clean`.')
        return 1
    print('\ndocs check passed')
    return 0

if __name__ == '__main__': sys.exit(main())
