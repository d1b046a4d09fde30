#!/usr/bin/env python3
"""Where a training step's time goes, op by op, on two sides: self time per op name from two Chrome traces.

  python3 bench/peer/op_table.py dtrainer.json python.json [--top 25] [--names dtrainer,python]

The traces are what `dtbench train --profile FILE` (LibTorch's profiler in C++) and
`bench/peer/diffusers_unet_step.py --profile FILE` (torch.autograd.profiler in Python) write: one
profiled training step each (forward, backward, optimizer). An op's *self* time is its duration minus
that of the ops it called (nesting is per thread, from the events' start and duration), so that
aten::conv2d, aten::convolution and the kernel under them are not counted three times. Prints, per
op name, milliseconds on each side and their difference, largest absolute difference first, then the
totals. The profiler slows every op by a constant; read the differences, not the step time.
Needs only the standard library.
"""

import argparse
import collections
import json
import sys


def events(path):
    with open(path) as fh:
        data = json.load(fh)
    rows = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in rows if e.get("ph") == "X" and "dur" in e]


def self_times(path):
    """{op name: self microseconds} over every thread of the trace."""
    by_thread = collections.defaultdict(list)
    for e in events(path):
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    total = collections.Counter()
    for rows in by_thread.values():
        rows.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack = []  # [end, name, child time]
        for e in rows:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= ts:
                end, name, child = stack.pop()
                total[name] -= child
            if stack:
                stack[-1][2] += dur
            total[e["name"]] += dur
            stack.append([ts + dur, e["name"], 0.0])
        while stack:
            end, name, child = stack.pop()
            total[name] -= child
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="first trace (e.g. dtbench train --profile)")
    p.add_argument("b", help="second trace (e.g. diffusers_unet_step.py --profile)")
    p.add_argument("--top", type=int, default=25, help="rows to print")
    p.add_argument("--names", default="dtrainer,python", help="column names, comma separated")
    a = p.parse_args()
    names = a.names.split(",")
    if len(names) != 2:
        sys.exit("op_table: --names takes two names, comma separated")
    try:
        ta, tb = self_times(a.a), self_times(a.b)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"op_table: cannot read the traces: {e}")
    ops = sorted(set(ta) | set(tb), key=lambda k: -abs(ta.get(k, 0) - tb.get(k, 0)))
    print(f"| op (self time) | {names[0]} ms | {names[1]} ms | difference ms |")
    print("|---|---|---|---|")
    for k in ops[:a.top]:
        x, y = ta.get(k, 0) / 1e3, tb.get(k, 0) / 1e3
        print(f"| {k} | {x:.1f} | {y:.1f} | {x - y:+.1f} |")
    sa, sb = sum(ta.values()) / 1e3, sum(tb.values()) / 1e3
    print(f"| **all ops** | {sa:.1f} | {sb:.1f} | {sa - sb:+.1f} |")


if __name__ == "__main__":
    main()
