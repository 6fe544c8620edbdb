"""Draw the Performance page's figure from a run_all.py --out file, as a plain SVG (no plotting library).

    python bench/make_plot.py bench/results.json nbs/performance_throughput.svg
"""
import json, sys


def bars(groups, title, unit, width=760, height=300, note=''):
    "A grouped bar chart: groups = [(label, [(series, value, colour), ...]), ...]."
    top = max(v for _, series in groups for _, v, _ in series) * 1.15
    left, plot_h = 60, height - 90
    slot = (width - left - 20) / len(groups)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    if note: out.append(f'<text x="{width / 2}" y="34" text-anchor="middle" font-size="11" fill="#555">{note}</text>')
    for i in range(5):  # grid and y labels
        v = top * i / 4; y = 40 + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v / 1000:.0f}k</text>')
    out.append(f'<text x="14" y="{40 + plot_h / 2}" transform="rotate(-90 14 {40 + plot_h / 2})" text-anchor="middle">{unit}</text>')
    legend = {}
    for g, (label, series) in enumerate(groups):
        bw = slot * 0.7 / len(series)
        x0 = left + g * slot + slot * 0.15
        for s, (name, v, colour) in enumerate(series):
            h = plot_h * v / top; x = x0 + s * bw; y = 40 + plot_h - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" fill="{colour}"><title>{name}: {v:,.0f}</title></rect>')
            out.append(f'<text x="{x + bw / 2 - 1:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="10">{v / 1000:.1f}k</text>')
            legend[name] = colour
        out.append(f'<text x="{left + g * slot + slot / 2:.1f}" y="{40 + plot_h + 16}" text-anchor="middle">{label}</text>')
    x = left
    for name, colour in legend.items():
        out.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="{height - 12}">{name}</text>'); x += 16 + 7.5 * len(name) + 20
    out.append('</svg>')
    return '\n'.join(out)


SERIES = [('manager', 'JobManager', '#2b6cb0'), ('pool', 'multiprocessing.Pool (spawn)', '#dd6b20'),
          ('loky', 'loky', '#38a169'), ('ppe', 'ProcessPoolExecutor (spawn)', '#a0aec0')]


def series(cell: dict) -> list:
    "The bars of one group: every series the cell has a figure for (older results files have no Pool or loky)."
    return [(label, cell[f'{key}_jobs_per_s'], colour) for key, label, colour in SERIES if cell.get(f'{key}_jobs_per_s') is not None]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    r = json.load(open(src))
    tp, sc = r['throughput']['results'], r['scale']['results']['workers']
    groups = [(f"no-op, {w} worker{'s' if w > 1 else ''}", series(tp[f'noop_w{w}'])) for w in (1, 2)]
    groups.append(('no-op, 4 workers', series(sc['4'])))
    stat = 'median' if tp.get('statistic') == 'median' else 'best'
    bounds = tp.get('bounds')
    note = (f"bound, same run: a pickled request/reply pipeline to one child process does {bounds['pipeline_jobs_per_s'] / 1000:,.0f}k jobs/s"
            if bounds else '')
    open(dst, 'w').write(bars(groups, f"No-op jobs per second ({stat} of {r['throughput']['repeat']}, same run)", 'jobs/s', note=note) + '\n')
    print(f"wrote {dst}")


if __name__ == '__main__':
    main()
