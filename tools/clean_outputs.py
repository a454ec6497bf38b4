"""Tidy the saved outputs of notebooks so the docs show what a reader needs and nothing of the machine that ran them.

    python tools/clean_outputs.py nbs/19_walkthrough.ipynb ...   # rewrite these notebooks in place
    python tools/clean_outputs.py --dry-run nbs/*.ipynb          # only say what would change

What it changes, output by output (sources and cell metadata are never touched):

- stderr streams are dropped: tqdm bars, library warnings and log lines are noise on a docs page. A cell whose
  warning *is* the point should catch it and print it (stdout is kept).
- carriage-return frames are collapsed to what a terminal ends up showing: fastprogress console bars
  (`Epoch 1/1 : |████----| 50.00% [1/2 ...]`) and tqdm frames disappear, the epoch table rows they overwrite stay.
- fastprogress HTML bars (`<progress>` elements) are removed from HTML outputs; an output left empty is dropped.
- download notices (`Downloading: "https://..." to ...`) are dropped.
- absolute paths are shortened: temporary folders become `<tmp>`, the repository root is dropped (paths become
  relative to it), anything up to `site-packages/` becomes `site-packages/`, and the home folder becomes `~`.

Run it after `nbdev-test --path NB --save` (or Jupyter) and before `nbdev-clean`; `tools/check_docs.py` fails on
anything this tool would have removed.
"""
import argparse, json, re, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# fastprogress console bars and tqdm frames, as single terminal lines (after collapsing carriage returns)
_RE_BAR_LINE = re.compile(r'^\s*(?:█\s*$|Epoch \d+/\d+ :|.*\|[█-]+\|\s*\d+\.\d+% \[|.*\d+%\|[#█▏▎▍▌▋▊▉ ]*\|\s*\d+/\d+)')
_RE_DOWNLOAD = re.compile(r'^Downloading:? "?https?://\S+')
_RE_PROGRESS_HTML = re.compile(r'<div>\s*<progress.*?</progress>.*?</div>|<progress.*?</progress>|'
                               r'<style>\s*/\* Turns off some styling \*/.*?</style>', re.DOTALL)


def _path_subs():
    "Ordered (regex, replacement) pairs that turn this machine's absolute paths into portable ones"
    tmp = re.escape(tempfile.gettempdir().rstrip('/'))
    home = re.escape(str(Path.home()))
    return [
        # the repository first: a clone may itself lie in the temporary folder (CI)
        (re.compile(re.escape(str(ROOT)) + r'/?'), ''),                 # /work/main/tell_me_why/... -> tell_me_why/...
        (re.compile(tmp + r'/[\w.-]+'), '<tmp>'),                       # /tmp/tmpab12cd -> <tmp>
        (re.compile(r'(?:/[\w.+-]+)+/(?:site|dist)-packages/'), 'site-packages/'),
        (re.compile(home + r'(?=/)'), '~'),
    ]

_PATH_SUBS = _path_subs()

def portable_paths(s:str) -> str:
    "`s` with this machine's absolute paths made portable"
    for rx, rep in _PATH_SUBS: s = rx.sub(rep, s)
    return s

def collapse_frames(s:str) -> str:
    "What a terminal shows for `s`: on each line only the last non-empty carriage-return frame, bar frames removed"
    out = []
    for line in s.split('\n'):
        frames = [f for f in line.split('\r') if f.strip()]
        shown = frames[-1] if frames else ('' if '\r' in line else line)
        if '\r' in line and not frames: continue
        if _RE_BAR_LINE.match(shown) or _RE_DOWNLOAD.match(shown): continue
        out.append(shown.rstrip() if '\r' in line else shown)
    return '\n'.join(out)

def _lines(s:str) -> list:
    "Notebook-style list of lines"
    parts = s.split('\n')
    return [p+'\n' for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])

def clean_output(o:dict):
    "A tidied copy of one output, or None to drop it"
    t = o.get('output_type')
    if t == 'stream':
        if o.get('name') == 'stderr': return None
        text = portable_paths(collapse_frames(''.join(o.get('text', ''))))
        if not text.strip(): return None
        return {**o, 'text': _lines(text)}
    if t in ('display_data', 'execute_result'):
        data = dict(o.get('data', {}))
        if 'text/html' in data:
            html = _RE_PROGRESS_HTML.sub('', ''.join(data['text/html']))
            if html.strip(): data['text/html'] = _lines(html)
            else:
                data.pop('text/html')
                # fastprogress pairs its HTML bar with a plain-text twin (`<IPython.core.display.HTML object>`)
                if 'text/plain' in data and ''.join(data['text/plain']).startswith('<IPython.core.display.HTML'): data.pop('text/plain')
        for k in ('text/plain', 'text/html', 'text/markdown'):
            if k in data: data[k] = _lines(portable_paths(''.join(data[k])))
        if not data: return None
        return {**o, 'data': data}
    return o

def clean_notebook(path, dry_run=False) -> list:
    "Tidy the outputs of the notebook at `path` in place; returns a list of what changed"
    path = Path(path)
    raw = path.read_text()
    nb = json.loads(raw)
    changes = []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code' or not c.get('outputs'): continue
        new = [n for n in (clean_output(o) for o in c['outputs']) if n is not None]
        if new != c['outputs']:
            first = (''.join(c['source']).strip().splitlines() or [''])[0][:60]
            changes.append(f'cell {i} ({first!r}): {len(c["outputs"])} -> {len(new)} outputs, tidied')
            c['outputs'] = new
    if changes and not dry_run:
        # same layout as the notebooks in the repo (and nbdev-clean): one-space indent, unicode kept
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return changes

def self_test():
    "What the tidying does, on made-up outputs"
    stream = lambda name, t: {'output_type': 'stream', 'name': name, 'text': t}
    assert clean_output(stream('stderr', 'Feature scores: 100%|##########| 8/8\n')) is None
    bars = ('█\repoch     train_loss  time    \n█\r\rEpoch 1/1 : |████----| 50.00% [1/2 00:00<00:00]\r'
            'Epoch 1/1 :      \r0         0.6978    00:01     \n')
    assert clean_output(stream('stdout', bars))['text'] == ['epoch     train_loss  time\n', '0         0.6978    00:01\n']
    tmp = f"{tempfile.gettempdir()}/tmpab12cd"
    dl = f'Downloading: "https://download.pytorch.org/models/resnet18.pth" to {tmp}/hub/resnet18.pth\nsaved {tmp}/models/z.pt\n'
    assert clean_output(stream('stdout', dl))['text'] == ['saved <tmp>/models/z.pt\n']
    res = {'output_type': 'execute_result', 'metadata': {}, 'execution_count': 3,
           'data': {'text/plain': [repr(str(ROOT/'tell_me_why'/'sample_data'/'x.jpg'))]}}
    assert clean_output(res)['data']['text/plain'] == ["'tell_me_why/sample_data/x.jpg'"]
    html = ("<style>\n    /* Turns off some styling */\n    progress { border: none; }\n</style>\n"
            "<div>\n  <progress value='1' max='1'></progress>\n  100.00% [1/1 00:03&lt;00:00]\n</div>\n<table><tr><td>0.69</td></tr></table>")
    out = clean_output({'output_type': 'display_data', 'metadata': {}, 'data': {'text/html': html}})
    assert ''.join(out['data']['text/html']).strip() == '<table><tr><td>0.69</td></tr></table>'
    only_bar = {'output_type': 'display_data', 'metadata': {}, 'data': {'text/html': "<div><progress max='3'></progress> 0% [0/3]</div>",
                                                                      'text/plain': '<IPython.core.display.HTML object>'}}
    assert clean_output(only_bar) is None
    print('clean_outputs self-test passed')

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*')
    ap.add_argument('--self-test', action='store_true', help='check the tidying on made-up outputs, then stop')
    ap.add_argument('--dry-run', action='store_true', help='report what would change without writing')
    args = ap.parse_args(argv)
    if args.self_test: return self_test()
    if not args.notebooks: ap.error('name at least one notebook')
    for p in args.notebooks:
        ch = clean_notebook(p, args.dry_run)
        print(f"{p}: {'nothing to tidy' if not ch else ('would tidy' if args.dry_run else 'tidied')}")
        for c in ch: print('   ', c)

if __name__ == '__main__': main()
