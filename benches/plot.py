"""Draws the PNGs of a bench output directory (target/bench unless given): failover.png, podium's
failover times beside client-go Lease election; failure_kinds.png; and scale.png, groups settled
over time in each scale run beside the API server's bound."""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench")
r = json.loads((out / "results.json").read_text())
s = r.get("samples", {})
series = [
    ("podium: leader deleted", s.get("failover_delete_ms", [])),
    ("podium: leader NotReady", s.get("failover_unready_ms", [])),
    ("Lease: leader kill -9", s.get("lease_kill_ms", [])),
    ("Lease: leader released", s.get("lease_release_ms", [])),
    ("podium app: successor's process started", s.get("app_failover_ms", [])),
    ("podium app: old leader's process stopped", s.get("app_stepdown_ms", [])),
    ("Lease tuned: leader kill -9", s.get("lease_tuned_kill_ms", [])),
]
series = [(name, xs) for name, xs in series if xs]


def draw(rows, xlabel, title, name):
    """One row per series: its samples scattered, and a box of their spread (log scale)."""
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(rows)))
    for i, (_, xs) in enumerate(rows):
        ax.scatter(xs, [i + (j % 7 - 3) * 0.03 for j in range(len(xs))], s=14, alpha=0.6)
        ax.boxplot(xs, positions=[i], orientation="horizontal", widths=0.35, showfliers=False)
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [n for n, _ in rows])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    print(f"wrote {out / name}")


m = r["machine"]
if series:
    draw(series, "time until another pod/candidate leads (ms, log scale)",
         f"Failover: podium vs client-go Lease election ({m['cores']} cores, Kubernetes {r['kubernetes']})",
         "failover.png")

# Failover by kind of failure on the real node: one row per kind and side.
kinds = r.get("failure_kinds") or []
rows = []
for k in kinds:
    ks = k.get("samples", {})
    for key, side in [("podium_label_ms", "podium labelled"), ("podium_traffic_ms", "podium traffic, label route"), ("podium_owned_traffic_ms", "podium traffic, owned route"), ("lease_ms", "Lease holder")]:
        xs = ks.get(key) or []
        if xs:
            rows.append((f"{k['kind']}: {side}", xs))
if rows:
    draw(rows, "time from the failure (ms, log scale)",
         "Failover by kind of failure, real node: podium vs client-go Lease (15/10/2 s)",
         "failure_kinds.png")

# Scale: groups settled over time after a cold start, one panel per run, beside the API bound
# (every minimal write at the raw patch rate). Results without timelines draw nothing.
runs = [x for x in r.get("scale") or [] if x.get("timeline")]
if runs:
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, x in zip(axes[0], runs):
        t, settled = zip(*x["timeline"])
        ax.plot(t, settled, label="groups settled (podium)")
        bound = x.get("api_bound_ms")
        if bound:
            ax.plot([0, bound / 1000], [0, x["groups"]], "--", label="API bound (min writes at raw patch rate)")
        converge = x.get("converge_ms")
        if converge:
            ax.axvline(converge / 1000, color="grey", linewidth=0.8, label="converged (pods labelled too)")
        ns = x.get("namespaces", 1)
        where = f"{ns:,} namespaces × {x['groups'] // ns}" if ns > 1 else "one namespace"
        ax.set_title(f"{x['groups']:,} groups ({where}), {x['pods']:,} pods")
        ax.set_xlabel("seconds since the operator started")
        ax.set_ylabel("groups settled")
        ax.set_xlim(0, max(t[-1], (converge or 0) / 1000, (bound or 0) / 1000) * 1.03)
        ax.set_ylim(0, x["groups"] * 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Cold start: groups settled over time ({m['cores']} cores, concurrency {runs[0].get('concurrency')})")
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=120)
    print(f"wrote {out / 'scale.png'}")
