"""Run every benchmark, one subprocess each, and collect their JSON lines.

    python bench/run_all.py --quick                  # CI smoke test: ~20 s, numbers not meaningful
    python bench/run_all.py --out bench/results.json # full run (~5 min on 2 cores)
    python bench/run_all.py --backend ray --out bench/results_ray.json   # the same with the workers as Ray actors

Exits non-zero when a script fails (error, missing JSON line) or leaves a process behind; never on timings.
"""
import argparse, json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ['throughput', 'latency', 'cancel', 'streaming', 'memory', 'scale', 'store', 'hotspots', 'backends']


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='small sizes, one repeat (CI smoke test)')
    p.add_argument('--repeat', type=int, default=None, help='passed on to every script')
    p.add_argument('--only', nargs='*', choices=SCRIPTS, help='run only these')
    p.add_argument('--out', help='write {script: its JSON object} to this file')
    p.add_argument('--backend', choices=('process', 'ray'), default='process', help="passed on to every script: what hosts the manager's workers")
    a = p.parse_args()
    results, failed, t_all = {}, [], time.perf_counter()
    for name in a.only or SCRIPTS:
        cmd = [sys.executable, os.path.join(HERE, f'{name}.py')] + (['--quick'] if a.quick else []) + \
              (['--repeat', str(a.repeat)] if a.repeat else []) + (['--backend', a.backend] if a.backend != 'process' else [])
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(HERE))
        out = proc.stdout
        print('\n'.join(l for l in out.splitlines() if not l.startswith('JSON ')), flush=True)
        lines = [l[5:] for l in out.splitlines() if l.startswith('JSON ')]
        if proc.returncode != 0 or len(lines) != 1:
            failed.append(name)
            print(f"!!! {name} failed (exit code {proc.returncode}, {len(lines)} JSON lines)", flush=True)
            continue
        results[name] = json.loads(lines[0])
        results[name]['seconds'] = time.perf_counter() - t0
        print(f"--- {name}: {results[name]['seconds']:.1f} s")
    print(f"\n{len(results)} of {len(a.only or SCRIPTS)} benchmarks ran in {time.perf_counter() - t_all:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ''))
    if a.out:
        with open(a.out, 'w') as f: json.dump(results, f, indent=1, sort_keys=True)
        print(f"wrote {a.out}")
    print('JSON ' + json.dumps({'bench': 'run_all', 'quick': a.quick, 'failed': failed,
                                'seconds': {k: round(v['seconds'], 1) for k, v in results.items()}}))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
