#!/usr/bin/python3
"""Same-window A/B of two sqlq builds (bench/ab.sh starts the broker): trivial end-to-end
throughput at 8 workers (quorum queue, durability full), respawn after SIGKILL, and cancel. The
builds take turns inside each round (the order flips every round), so a machine that gets busier
or quieter during the run weighs on both alike. Prints one table: median [min-max] over rounds.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="build directory of A (before)")
    ap.add_argument("--b", required=True, help="build directory of B (after)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--demo", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=3000)
    a = ap.parse_args()
    figures = {name: {"tput": [], "resp_p99": [], "resp_p50": [], "cancel_p99": [], "cancel_p50": []} for name in "ab"}
    for rnd in range(a.rounds):
        order = "ab" if rnd % 2 == 0 else "ba"
        for name in order:
            ns = argparse.Namespace(build=getattr(a, name), port=a.port, work=os.path.join(a.work, f"{name}{rnd}"),
                                    demo=a.demo, kills=20, kill_alls=0, respawn_workers=4, cancels=20)
            os.makedirs(ns.work, exist_ok=True)
            b = bench.Bench(ns)
            rate, _ = b.e2e_sqlq("quorum", 8, "full", bench.TRIVIAL, a.tasks)
            b.respawn()
            b.cancel()
            f = figures[name]
            f["tput"].append(rate)
            f["resp_p50"].append(b.results["respawn"]["one"]["p50"])
            f["resp_p99"].append(b.results["respawn"]["one"]["p99"])
            f["cancel_p50"].append(b.results["cancel"]["stop_ms"]["p50"])
            f["cancel_p99"].append(b.results["cancel"]["stop_ms"]["p99"])
            bench.log(f"round {rnd + 1} {name}: {rate:.0f} tasks/s, respawn p99 {f['resp_p99'][-1]:.0f} ms, "
                      f"cancel p99 {f['cancel_p99'][-1]:.0f} ms")

    def cell(xs, digits=0):
        fmt = "{:.%df}" % digits
        return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}–{fmt.format(max(xs))}]"

    rows = [
        ("trivial tasks/s, 8 workers, quorum, full", "tput"),
        ("respawn of one killed worker, p50 ms", "resp_p50"),
        ("respawn of one killed worker, p99 ms", "resp_p99"),
        ("cancel, stop p50 ms", "cancel_p50"),
        ("cancel, stop p99 ms", "cancel_p99"),
    ]
    print(bench.table(["figure (median [min–max] of %d rounds)" % a.rounds, "A: " + a.a, "B: " + a.b],
                      [(label, cell(figures["a"][k]), cell(figures["b"][k])) for label, k in rows]))


if __name__ == "__main__":
    main()
