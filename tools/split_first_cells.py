"""One-off: split each notebook's first markdown cell into a front-matter cell (`# Title` + one `> description`
line) and an intro cell holding the rest, so nbdev's front-matter step no longer swallows the intro prose.

Each notebook is read, edited and written back in one go, touching only its first markdown cell, because other
people edit other cells of these notebooks at the same time."""
import json, re, sys, uuid
from pathlib import Path

# New one-line descriptions for the pages whose `>` block ran over several lines (nbdev keeps only the first line).
SHORT = {
    '04_latent_figures': "Pictures of the latent code `z` drawn while training: a t-SNE map after the first two phases and a PLS biplot after the classifier phase.",
    '07_feature_scores': "Eleven hand-crafted image cues (brightness, colour, symmetry, texture, frequency) scored for a list of image files in one pass.",
    '14_visualization': "Which image cues line up with the model's decision axis, how strongly, in which direction, and whether that beats chance.",
    '15_fidelity': "Checks that tell whether a cue ranking can be trusted: planted cues, sanity checks against models that learned nothing, and a bootstrap.",
}

def split_cell(src, short=None):
    "Return (front-matter source, intro source) for one first-cell source string"
    lines = src.split('\n')
    ti = next(i for i,l in enumerate(lines) if re.match(r'#\s+\S', l))
    di = next(i for i,l in enumerate(lines) if l.startswith('>'))
    dj = di
    while dj+1 < len(lines) and lines[dj+1].strip() and not lines[dj+1].startswith('#'): dj += 1
    desc = ' '.join(l.lstrip('>').strip() for l in lines[di:dj+1])
    rest = '\n'.join(lines[dj+1:]).strip('\n')
    if short:  # keep the long description as the intro's opening paragraph
        rest = desc + ('\n\n' + rest if rest else '')
        desc = short
    return f"{lines[ti]}\n\n> {desc}", rest

def to_lines(s): return [l+'\n' for l in s.split('\n')[:-1]] + [s.split('\n')[-1]]

def main(paths):
    for p in map(Path, paths):
        raw = p.read_text()
        nb = json.loads(raw)
        i = next(i for i,c in enumerate(nb['cells']) if c['cell_type']=='markdown')
        c = nb['cells'][i]
        fm, rest = split_cell(''.join(c['source']), SHORT.get(p.stem))
        if not rest: print(f'{p}: already split'); continue
        c['source'] = to_lines(fm)
        new = {'cell_type': 'markdown', 'metadata': {}, 'source': to_lines(rest)}
        if 'id' in c: new['id'] = uuid.uuid4().hex[:8]
        nb['cells'].insert(i+1, new)
        out = json.dumps(nb, indent=1, ensure_ascii=False) + '\n'
        p.write_text(out)
        print(f'{p}: split; description = {fm.splitlines()[-1][:100]}')

if __name__ == '__main__': main(sys.argv[1:])
