"""Does a refactoring change results? Run the same seeded work with the code of a git ref and with the working tree,
one after the other on this machine, and compare what each wrote.

Two checks:
- `train_xaaenet` on a tiny model: the final weights, every phase's validation log and the prior checks (issue 20:
  "for a fixed seed a run gives the same weights, metrics ... before and after the change on the same machine");
- the whole main job, `tmw-explain --planted brightness` at 32 px with one epoch per phase (issue 29): every
  checkpoint's weights, every CSV, report.md and run.json, byte for byte once wall times, dates and the
  output folder's own path are taken out (run.json's `stages`, the wall seconds per stage, exists only from
  issue 29 on and is not compared). A CSV column or a run.json key that only the new run writes is named, not
  counted as a difference, when everything the old run wrote is unchanged.

    python bench/same_result.py 026c1ac        # exit 0 when identical, 1 otherwise
    python bench/same_result.py 6fb7417 --only job

Every run uses one torch thread. Nothing is compared with a number recorded elsewhere: the runs are made here, now.
"""
from __future__ import annotations

import argparse, hashlib, json, os, subprocess, sys, tempfile
from pathlib import Path

_RUN = r'''
import contextlib, hashlib, io, json, sys, warnings
import torch
warnings.simplefilter('ignore'); torch.set_num_threads(1)
from torchvision.models import resnet18
from tell_me_why.data import two_class_dataloaders, sample_image_files
from tell_me_why.model_aae import AAE
from tell_me_why.training import train_xaaenet
files = sample_image_files(); files = files[:12] + files[-12:]
dls = two_class_dataloaders(files, label='pets', size=32, bs=4, valid_pct=0.25, seed=1)
torch.manual_seed(0)
m = AAE(input_size=32, encoding_dims=8, arch=resnet18, pretrained=False)
with contextlib.redirect_stdout(io.StringIO()):
    learn = train_xaaenet(m, dls, epochs_adv=2, epochs_ae=2, epochs_classif=2, grad_accum=1, models_dir=sys.argv[1],
                          save_tsne=False, save_pls=False, seed=3)
weights = hashlib.sha256(b''.join(v.detach().cpu().numpy().tobytes() for v in m.state_dict().values())).hexdigest()
print(json.dumps(dict(weights=weights, logs={p: df.to_dict('list') for p, df in learn.phase_logs.items()}, prior=learn.prior_reports)))
'''


def run_with(code_dir:Path, work:Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, '-c', _RUN, str(work)], env=env, cwd=work.parent, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


JOB = ['--planted', 'brightness', '--size', '32', '--epochs-adv', '1', '--epochs-ae', '1', '--epochs-classif', '1',
       '--n-permutations', '19', '--no-progress']
_TIMES = ('seconds', 'finished', 'stages')  # run.json keys that hold wall times or dates


def _no_times(v):
    "A run.json value without its wall times (keys in `_TIMES` or ending in `_s`)."
    if isinstance(v, dict): return {k: _no_times(x) for k, x in v.items() if k not in _TIMES and not k.endswith('_s')}
    if isinstance(v, list): return [_no_times(x) for x in v]
    return v


def job_with(code_dir:Path, out:Path) -> dict:
    "Run the main job with the code in `code_dir` into `out`; one digest per output file (times and `out` taken out)."
    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS='1')
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, '-c', 'import sys; from tell_me_why.cli import tmw_explain; sys.exit(tmw_explain())', *JOB,
                    '--out', str(out)], env=env, cwd=out.parent, capture_output=True, text=True, check=True)
    files = {}
    for f in sorted(out.rglob('*')):
        rel = f.relative_to(out).as_posix()
        if f.suffix == '.pth': files[rel] = hashlib.sha256(b''.join(v.numpy().tobytes() for v in _state(f).values())).hexdigest()
        elif f.suffix in ('.csv', '.md'): files[rel] = f.read_text().replace(str(out), 'OUT')
        elif f.name == 'run.json': files[rel] = _no_times(json.loads(f.read_text().replace(str(out), 'OUT')))
    return files


def _added(old, new, path=''):
    "Keys of `new` (nested dicts and lists of dicts) that `old` lacks, as paths; None when the two differ otherwise."
    if isinstance(old, dict) and isinstance(new, dict):
        if set(old) - set(new): return None
        extra = [f'{path}.{k}'.lstrip('.') for k in set(new) - set(old)]
        for k in old:
            sub = _added(old[k], new[k], f'{path}.{k}')
            if sub is None: return None
            extra += sub
        return extra
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new): return None
        subs = [_added(o, n, f'{path}[]') for o, n in zip(old, new)]
        return None if any(x is None for x in subs) else sorted({e for x in subs for e in x})
    return [] if old == new else None


def _compare(name:str, old, new) -> tuple[bool, str]:
    "Whether a file is the same in both runs: identical, identical but for added columns or keys (said), or different."
    if old == new: return True, 'identical'
    if old is None or new is None: return False, 'only in one run'
    if name.endswith('.csv'):
        import io, pandas as pd
        o, n = pd.read_csv(io.StringIO(old)), pd.read_csv(io.StringIO(new))
        extra = [c for c in n.columns if c not in o.columns]
        if extra and set(o.columns) <= set(n.columns) and n[list(o.columns)].equals(o):
            return True, f"identical but for the added column(s) {', '.join(extra)}"
    if isinstance(old, dict):
        extra = _added(old, new)
        if extra: return True, f"identical but for the added key(s) {', '.join(extra)}"
    if isinstance(old, str) and name.endswith('.md'):
        import difflib
        lines = [l for l in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm='', n=0) if l[:1] in '+-' and l[:3] not in ('+++', '---')]
        return False, 'DIFFERENT in these lines:\n' + '\n'.join(f'    {l}' for l in lines[:20])
    return False, 'DIFFERENT'


def _state(f:Path) -> dict:
    import torch
    sd = torch.load(f, map_location='cpu', weights_only=False)
    sd = sd.get('model', sd) if isinstance(sd, dict) else sd
    return {k: v.detach().cpu() for k, v in sd.items() if hasattr(v, 'detach')}


def _in_worktree(repo:Path, ref:str, tmp:Path, run):
    subprocess.run(['git', '-C', str(repo), 'worktree', 'add', '-q', '--detach', str(tmp/'old'), ref], check=True)
    try: return run(tmp/'old')
    finally: subprocess.run(['git', '-C', str(repo), 'worktree', 'remove', '--force', str(tmp/'old')], check=False)


def main(ref:str, only:str|None=None) -> int:
    repo, same = Path(__file__).resolve().parents[1], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if only in (None, 'train'):
            old, new = _in_worktree(repo, ref, tmp, lambda code: run_with(code, tmp/'run_old')), run_with(repo, tmp/'run_new')
            same.update({k: (old[k] == new[k], 'identical' if old[k] == new[k] else 'DIFFERENT') for k in ('weights', 'logs', 'prior')})
        if only in (None, 'job'):
            old, new = _in_worktree(repo, ref, tmp, lambda code: job_with(code, tmp/'a'/'job')), job_with(repo, tmp/'b'/'job')
            for k in sorted(set(old) | set(new)):
                if k.startswith('cue_cache/'): continue  # a cache, not a result
                same[f'job {k}'] = _compare(k, old.get(k), new.get(k))
    for k, (ok, said) in same.items(): print(f"{k:48s} {said}")
    return 0 if all(ok for ok, _ in same.values()) else 1


if __name__ == '__main__':
    p = argparse.ArgumentParser(description="Compare the results of a git revision with the working tree's.")
    p.add_argument('ref', nargs='?', default='HEAD', help="git revision to compare with (default: HEAD)")
    p.add_argument('--only', choices=['train', 'job'], help="run one of the two checks")
    a = p.parse_args()
    sys.exit(main(a.ref, a.only))
