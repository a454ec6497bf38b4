"""tell_me_why scaling benchmark: the whole main job on planted-cue sets of growing size (issue 21, part 5).

    python bench/scale.py                      # 1 000, 4 000 and 16 000 images
    python bench/scale.py --sizes 1000,4000    # a shorter run
    python bench/scale.py --sizes 1000 --json scale.json

Each size runs `tell_me_why.cli.explain_image_folder` in a fresh process on a planted-cue image set
(64 px PNGs, brightness planted at d = 2, the small encoder, 32-d codes, one epoch per phase, 1 000
permutations; everything else as the command line's `--planted` showcase). The sets are written once
under --data (by a separate process, in chunks of 1 000 images, so that making them does not count
towards the job's memory) and reused by later runs.

Per stage the job's functions are timed from outside (wrapped in the benchmark process; a stage's
time excludes the stages it calls, e.g. t-SNE excludes the encoding before it); the phases' own
timings are read from the run's run.json. A sampling thread reads the resident set size every 20 ms
and keeps the peak of each stage. Printed per stage: wall seconds and CPU seconds per 1 000 images,
the ratio of the largest size to the smallest (per image: 1.0 = linear; the issue's target is <= 1.3),
and peak RSS. CPU seconds are the steadier figure on a shared machine.
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINEAR_TARGET = 1.3  # time per image at the largest size / time per image at the smallest
RSS_GROWTH_TARGET_MB = 1024

# (stage, module, function name): the job's steps, as the modules hold them when the job looks them up
STAGES = [('loaders', 'tell_me_why.data', 'two_class_dataloaders'), ('image check', 'tell_me_why.data', 'check_images'),
          ('phase', 'tell_me_why.training', 'XAAELearner._train'), ('encoding', 'tell_me_why.training', 'extract_latent_space'),
          ('prior check', 'tell_me_why.training', 'XAAELearner._check_prior'), ('t-SNE', 'tell_me_why.training', 'save_latent_tsne_figure'),
          ('PLS figure', 'tell_me_why.training', '_pls_validation_latent_after_phase'), ('latent save', 'tell_me_why.training', 'save_latent'),
          ('cue table', 'tell_me_why.feature_scores', 'compute_feature_score_table'),
          ('ranking', 'tell_me_why.visualization', 'run_pls_feature_figures'),
          ('traversal', 'tell_me_why.visualization', 'latent_traversal_figure'),
          ('interventions', 'tell_me_why.explanation', 'gather_evidence'), ('report', 'tell_me_why.report', 'write_report')]
ORDER = ['image check', 'loaders', 'adversarial epoch', 'autoencoder epoch', 'classifier epoch', 'encoding', 'prior check',
         't-SNE', 'PLS figure', 'latent save', 'cue table', 'ranking', 'traversal', 'interventions', 'report', 'other']

def rss_mb() -> float:
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

class StageClock:
    "Exclusive wall and CPU time per stage (a stage's callees that are stages count for themselves) and peak RSS per stage."
    def __init__(self):
        self.stack, self.stats, self.lock = [], {}, threading.Lock()
        self.peak_outside = rss_mb()
        threading.Thread(target=self._sample, daemon=True).start()

    def _stat(self, name): return self.stats.setdefault(name, dict(wall_s=0., cpu_s=0., calls=0, peak_rss_mb=0.))

    def _sample(self):
        while True:
            r = rss_mb()
            with self.lock:
                if self.stack: st = self._stat(self.stack[-1][0]); st['peak_rss_mb'] = max(st['peak_rss_mb'], r)
                else: self.peak_outside = max(self.peak_outside, r)
            time.sleep(0.02)

    def wrap(self, name, fn):
        def timed(*args, **kw):
            stage = f"{args[1].name} epoch" if name == 'phase' else name  # XAAELearner._train(self, phase, ...)
            with self.lock:
                self.stack.append([stage, time.perf_counter(), time.process_time(), 0., 0.])
                st = self._stat(stage); st['peak_rss_mb'] = max(st['peak_rss_mb'], rss_mb())
            try: return fn(*args, **kw)
            finally:
                with self.lock:
                    _, w0, c0, cw, cc = self.stack.pop()
                    w, c = time.perf_counter() - w0, time.process_time() - c0
                    st = self._stat(stage); st['wall_s'] += w - cw; st['cpu_s'] += c - cc; st['calls'] += 1
                    st['peak_rss_mb'] = max(st['peak_rss_mb'], rss_mb())
                    if self.stack: self.stack[-1][3] += w; self.stack[-1][4] += c
        timed.__wrapped__ = fn
        return timed

def make_set(folder:Path, n:int, seed:int=0, chunk:int=1000, size:int=64):
    "A planted-cue set of `n` images (two classes, brightness at d = 2), written in chunks of `chunk` images."
    from tell_me_why.fidelity import make_planted_cue_dataset
    done = folder/'.complete'
    if done.exists(): return
    shutil.rmtree(folder, ignore_errors=True)
    for k in range(0, n, chunk):
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            make_planted_cue_dataset(tmp, 'brightness', 2.0, n_per_class=min(chunk, n - k) // 2, size=size, seed=seed + k)
            for cls in ('control', 'planted'):
                (folder/cls).mkdir(parents=True, exist_ok=True)
                for p in (Path(tmp)/cls).iterdir(): p.rename(folder/cls/f"c{k // chunk:03d}_{p.name}")
    done.write_text(str(n))

def run_job(folder:Path, out:Path, result:Path, threads:int, n_permutations:int):
    "The main job on `folder`, timed per stage; writes the measurements to `result` (JSON)."
    import torch
    torch.set_num_threads(threads)
    import importlib
    clock = StageClock()
    for stage, mod, name in STAGES:
        owner, *path = [importlib.import_module(mod), *name.split('.')]
        for p in path[:-1]: owner = getattr(owner, p)  # 'XAAELearner._train': a method, wrapped on its class
        setattr(owner, path[-1], clock.wrap(stage, getattr(owner, path[-1])))
    from tell_me_why.cli import explain_image_folder
    rss0, t0, c0 = rss_mb(), time.perf_counter(), time.process_time()
    res = explain_image_folder(folder, out=out, label='folder', class_a='planted', size=64, arch='small', encoding_dims=32,
                               epochs_adv=1, epochs_ae=1, epochs_classif=1, lr_max=1e-3, valid_pct=0.4, classif_class_weight=1.0,
                               n_permutations=n_permutations, seed=42, overwrite=True, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    record = json.loads(Path(res['record']).read_text())
    stats = dict(clock.stats)
    stats['other'] = dict(wall_s=wall - sum(s['wall_s'] for s in stats.values()), cpu_s=cpu - sum(s['cpu_s'] for s in stats.values()),
                          calls=1, peak_rss_mb=clock.peak_outside)
    n = record['data']['n_train'] + record['data']['n_valid']
    verdicts = record['result'].get('verdicts') or []
    Path(result).write_text(json.dumps(dict(
        n_images=n, n_train=record['data']['n_train'], n_valid=record['data']['n_valid'], wall_s=wall, cpu_s=cpu,
        run_json_seconds=record['seconds'], run_json_train_s={p: r.get('train_s') for p, r in record['training']['phases'].items()},
        rss_before_job_mb=rss0, ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, stages=stats,
        accuracy=record['result'].get('accuracy'), top_cue=(record['result'].get('top_cues') or [{}])[0].get('feature'),
        first_verdict=verdicts[0] if verdicts else None, threads=threads), indent=1))

def table(results:list[dict]) -> str:
    "Markdown table: per stage, seconds per 1 000 images at each size, the largest/smallest ratio, and peak RSS."
    sizes = [r['n_images'] for r in results]
    lo, hi = results[0], results[-1]
    head = (['stage'] + [f"wall s/1k @ {n}" for n in sizes] + [f"CPU s/1k @ {n}" for n in sizes]
            + ([f"ratio {sizes[-1]}/{sizes[0]} wall", "ratio CPU"] if len(results) > 1 else []) + [f"peak RSS MB @ {n}" for n in sizes])
    rows = [head, ['---'] * len(head)]
    per_k = lambda r, st, k: r['stages'].get(st, {}).get(k, 0.) / r['n_images'] * 1000
    for st in ORDER + sorted(set().union(*[r['stages'] for r in results]) - set(ORDER)):
        if not any(st in r['stages'] for r in results): continue
        row = [st] + [f"{per_k(r, st, 'wall_s'):.3f}" for r in results] + [f"{per_k(r, st, 'cpu_s'):.3f}" for r in results]
        if len(results) > 1:
            for k in ('wall_s', 'cpu_s'):
                a, b = per_k(lo, st, k), per_k(hi, st, k)
                row.append(f"{b / a:.2f}" + (' **>1.3**' if b / a > LINEAR_TARGET and b * hi['n_images'] / 1000 > 1 else '') if a > 0 else '-')
        row += [f"{r['stages'].get(st, {}).get('peak_rss_mb', 0):.0f}" for r in results]
        rows.append(row)
    total = ['**whole job**'] + [f"{r['wall_s'] / r['n_images'] * 1000:.3f}" for r in results] + [f"{r['cpu_s'] / r['n_images'] * 1000:.3f}" for r in results]
    if len(results) > 1: total += [f"{(hi['wall_s'] / hi['n_images']) / (lo['wall_s'] / lo['n_images']):.2f}", f"{(hi['cpu_s'] / hi['n_images']) / (lo['cpu_s'] / lo['n_images']):.2f}"]
    rows.append(total + [f"{r['ru_maxrss_mb']:.0f} (max)" for r in results])
    return '\n'.join('| ' + ' | '.join(r) + ' |' for r in rows)

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', default='1000,4000,16000', help="comma-separated image counts (default: 1000,4000,16000)")
    p.add_argument('--data', default=str(Path(tempfile.gettempdir())/'tmw_scale_data'), help="where the image sets are kept between runs")
    p.add_argument('--threads', type=int, default=1, help="torch threads of the job (default: 1, steadier on a shared machine)")
    p.add_argument('--n-permutations', type=int, default=1000)
    p.add_argument('--json', help="also write every measurement to this file")
    p.add_argument('--job', nargs=3, metavar=('FOLDER', 'OUT', 'RESULT'), help=argparse.SUPPRESS)  # internal: one timed run
    p.add_argument('--make', nargs=2, metavar=('FOLDER', 'N'), help=argparse.SUPPRESS)         # internal: write one set
    a = p.parse_args(argv)
    if a.make: make_set(Path(a.make[0]), int(a.make[1])); return 0
    if a.job: run_job(Path(a.job[0]), Path(a.job[1]), Path(a.job[2]), a.threads, a.n_permutations); return 0
    sizes = sorted(int(s) for s in a.sizes.split(','))
    if any(n < 100 for n in sizes): p.error("--sizes: each size must be at least 100 images")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])),
               MPLBACKEND='Agg', OMP_NUM_THREADS=str(a.threads))
    results = []
    for n in sizes:
        folder = Path(a.data)/f'planted_{n}'
        folder.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, '--make', str(folder), str(n)], check=True, env=env)
        print(f"{n} images ready in {folder} ({time.perf_counter() - t:.0f} s)", flush=True)
        with tempfile.TemporaryDirectory(prefix='tmw_scale_') as tmp:
            res = Path(tmp)/'result.json'
            t = time.perf_counter()
            r = subprocess.run([sys.executable, __file__, '--job', str(folder), str(Path(tmp)/'out'), str(res), '--threads', str(a.threads),
                                '--n-permutations', str(a.n_permutations)], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stdout[-3000:], r.stderr[-5000:], sep='\n', file=sys.stderr)
                print(f"the job on {n} images failed (exit {r.returncode})", file=sys.stderr); return 1
            results.append(json.loads(res.read_text()))
        x = results[-1]
        print(f"{n} images: {x['wall_s']:.0f} s wall, {x['cpu_s']:.0f} s CPU, peak RSS {x['ru_maxrss_mb']:.0f} MB; run.json phases "
              + ', '.join(f"{k} {v} s" for k, v in x['run_json_train_s'].items())
              + f"; accuracy {x['accuracy']}, top cue {x['top_cue']}, first verdict {x['first_verdict']}", flush=True)
    print(); print(table(results))
    ok = True
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        worse = [st for st in lo['stages'] if st in hi['stages'] and lo['stages'][st]['cpu_s'] > 0
                 and (hi['stages'][st]['cpu_s'] / hi['n_images']) / (lo['stages'][st]['cpu_s'] / lo['n_images']) > LINEAR_TARGET
                 and hi['stages'][st]['cpu_s'] > 1]
        growth = hi['ru_maxrss_mb'] - lo['ru_maxrss_mb']
        print(f"\nWorse than linear (CPU time per image, {hi['n_images']} vs {lo['n_images']} images, ratio > {LINEAR_TARGET}, "
              f"stages over 1 s): {', '.join(worse) or 'none'}")
        print(f"Peak RSS growth {lo['n_images']} -> {hi['n_images']} images: {growth:.0f} MB (target < {RSS_GROWTH_TARGET_MB} MB)")
        ok = not worse and growth < RSS_GROWTH_TARGET_MB
    if a.json: Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
