"""Does a refactoring change results? Train the same seeded tiny xAAEnet with the code of a git ref and with the
working tree, one after the other on this machine, and compare the final weights, every phase's validation log
and the prior checks (issue 20: "for a fixed seed a run gives the same weights, metrics ... before and after the
change on the same machine").

    python bench/same_result.py 026c1ac        # exit 0 when identical, 1 otherwise

Both runs use one torch thread and the same 24 bundled pet photos at 32 px (2 epochs per phase). Nothing is
compared with a number recorded elsewhere: the two runs are made here, now.
"""
from __future__ import annotations

import json, os, subprocess, sys, tempfile
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


def main(ref:str) -> int:
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(['git', '-C', str(repo), 'worktree', 'add', '-q', '--detach', str(tmp/'old'), ref], check=True)
        try: old = run_with(tmp/'old', tmp/'run_old')
        finally: subprocess.run(['git', '-C', str(repo), 'worktree', 'remove', '--force', str(tmp/'old')], check=False)
        new = run_with(repo, tmp/'run_new')
    same = {k: old[k] == new[k] for k in ('weights', 'logs', 'prior')}
    for k, v in same.items(): print(f"{k:8s} {'identical' if v else 'DIFFERENT'}")
    return 0 if all(same.values()) else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else 'HEAD'))
