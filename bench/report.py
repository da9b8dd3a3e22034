#!/usr/bin/env python3
"""report: bench/run's rows as Markdown tables, into bench/README.md.

usage: report.py ROWS_DIR ENV_FILE MODE RESULTS_JSON README
       report.py --render RESULTS_JSON README

ROWS_DIR holds one file per table row ("KEY<TAB>VALUE" lines; "cmd" may
repeat), ENV_FILE the machine and versions of this run (same format).
MODE "write": the rows of the workloads just run replace those workloads'
rows in RESULTS_JSON, and the results section of README (between the
markers) is rewritten from all of RESULTS_JSON.  MODE "print": only print
this run's tables (a scaled smoke run).  Either way the tables go to stdout.
--render: rewrite README's results section from RESULTS_JSON alone.
"""
import json
import os
import sys

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"

TITLES = {
    "1": "Workload 1: 10,000 images of 50 KiB, filesystem -> S3",
    "2": "Workload 2: 4 images of 256 MiB, filesystem -> S3 -> filesystem",
    "3": "Workload 3: sync latency, 200 puts/s of 50 KiB images for 60 s",
    "4": "Workload 4: queue throughput, 20,000 images of 1 KiB, filesystem -> filesystem",
    "5": "Workload 5: the server's ceiling, 50 KiB PUTs from memory",
}


def load_kv(path):
    d = {"cmd": []}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            k, _, v = line.partition("\t")
            if k == "cmd":
                d["cmd"].append(v)
            else:
                d[k] = v
    return d


def num(r, k):
    try:
        return float(r.get(k, ""))
    except ValueError:
        return None


def f(v, digits=1):
    if v is None:
        return "–"
    if digits == 0 or abs(v) >= 1000:
        return "{:,.0f}".format(v)
    return "{:,.{}f}".format(v, digits)


def ok(r):
    return r.get("status") == "ok"


def rate(r):
    """objects per second, wall clock"""
    n, w = num(r, "n"), num(r, "wall")
    return n / w if ok(r) and n and w else None


def mbps(r):
    b, w = num(r, "bytes"), num(r, "wall")
    return b / w / 1e6 if ok(r) and b and w else None


def cpu_per_k(r):
    c, n = num(r, "cpu"), num(r, "n")
    return c / n * 1000 if ok(r) and c is not None and n else None


def rss_mib(r):
    v = num(r, "rss_kib")
    return v / 1024 if ok(r) and v else None


def check(r):
    if r.get("status") == "skipped":
        return "skipped: " + r.get("note", "")
    if r.get("status") != "ok":
        return "**FAILED**: " + r.get("note", "?")
    out = r.get("check", "")
    if r.get("retried"):
        n, _, first = r["retried"].partition(" ")
        out += "; %s failed attempts retried (%s)" % (n, first[:160])
    return out


def other(r):
    """CPU seconds the rest of the machine used meanwhile (other work, the harness)"""
    vals = [num(r, k) for k in ("busy_cpu", "cpu", "srv_cpu", "pg_cpu")]
    if not ok(r) or any(v is None for v in vals):
        return None
    return max(0.0, vals[0] - vals[1] - vals[2] - vals[3])


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return out


def commands(rows):
    out = []
    for r in rows:
        if not r["cmd"]:
            continue
        extra = " (%s)" % r["dir"] if r.get("dir") else ""
        out.append("- %s%s:" % (r["label"], extra))
        for c in r["cmd"]:
            out.append("  `%s`" % c.replace("`", "'"))
    return out


def w1(rows):
    t = []
    for r in rows:
        el = num(r, "elapsed")
        mig = "%s (%s/s)" % (f(el, 2), f(num(r, "n") / el, 0)) if ok(r) and el else "–"
        t.append([r["label"], f(rate(r), 0), f(mbps(r)), f(num(r, "wall") if ok(r) else None, 2), mig,
                  f(cpu_per_k(r), 2), f(rss_mib(r)), f(num(r, "srv_cpu") if ok(r) else None),
                  f(num(r, "pg_cpu") if ok(r) else None), f(other(r)), check(r)])
    return table(["tool", "objects/s", "MB/s", "wall s", "migration's own s (objects/s)",
                  "CPU s per 1,000 images", "peak RSS MiB", "radosgw+OSD CPU s",
                  "PostgreSQL CPU s", "other CPU s", "check"], t)


def w2(rows):
    t = []
    for r in rows:
        el = num(r, "elapsed")
        gib = (num(r, "bytes") or 0) / 2**30
        t.append([r["label"], r.get("dir", ""), f(mbps(r)), f(num(r, "wall") if ok(r) else None, 2),
                  f(el, 2) if ok(r) and el else "–",
                  f(num(r, "cpu") / gib if ok(r) and gib and num(r, "cpu") is not None else None, 2),
                  f(rss_mib(r)), f(num(r, "srv_cpu") if ok(r) else None),
                  f(num(r, "pg_cpu") if ok(r) else None), f(other(r)), check(r)])
    return table(["tool", "direction", "MB/s", "wall s", "migration's own s", "CPU s per GiB",
                  "peak RSS MiB", "radosgw+OSD CPU s", "PostgreSQL CPU s", "other CPU s", "check"], t)


def w3(rows):
    t = []
    for r in rows:
        drv = dict(kv.split("=", 1) for kv in r.get("driver", "").split() if "=" in kv)
        t.append([r["label"], f(num(r, "n") if ok(r) else None, 0),
                  f(num(r, "min_ms"), 1), f(num(r, "p50_ms"), 1), f(num(r, "p99_ms"), 1),
                  f(num(r, "max_ms"), 1),
                  f(num(r, "mean_ms"), 1), drv.get("rate", "–"),
                  "%s / %s" % (drv.get("put_ms_p50", "–"), drv.get("put_ms_p99", "–")),
                  f(cpu_per_k(r), 2), f(rss_mib(r)), f(num(r, "srv_cpu") if ok(r) else None),
                  f(num(r, "pg_cpu") if ok(r) else None), f(other(r)), check(r)])
    return table(["tool", "images", "min ms", "p50 ms", "p99 ms", "max ms", "mean ms", "puts/s achieved",
                  "put() round trip p50 / p99 ms", "CPU s per 1,000 images", "peak RSS MiB",
                  "radosgw+OSD CPU s", "PostgreSQL CPU s", "other CPU s", "check"], t)


def w4(rows):
    t = []
    for r in rows:
        t.append([r["label"], f(rate(r), 0), f(num(r, "wall") if ok(r) else None, 2),
                  f(num(r, "stmt_s") if ok(r) else None, 2), f(cpu_per_k(r), 2), f(rss_mib(r)),
                  f(num(r, "pg_cpu") if ok(r) else None), f(other(r)), check(r)])
    return table(["tool", "images/s", "s from the COMMIT to the last mirrored",
                  "put statement s", "CPU s per 1,000 images", "peak RSS MiB", "PostgreSQL CPU s",
                  "other CPU s", "check"], t)


def w5(rows):
    t = []
    for r in rows:
        t.append([r["label"], f(rate(r), 0), f(mbps(r)), f(cpu_per_k(r), 2), f(rss_mib(r)),
                  f(num(r, "srv_cpu") if ok(r) else None), f(other(r)), check(r)])
    return table(["client", "PUT/s", "MB/s", "client CPU s per 1,000 PUTs", "peak RSS MiB",
                  "radosgw+OSD CPU s", "other CPU s", "check"], t)


RENDER = {"1": w1, "2": w2, "3": w3, "4": w4, "5": w5}


def verdict(good, text):
    return [text, "met" if good else "**missed**"]


def targets(wl):
    """wl: workload -> rows.  Lines of the targets table."""
    t = []
    by = lambda w, rid: next((r for r in wl.get(w, []) if r["id"] == rid and ok(r)), None)
    rd, rt = by("1", "w1-rclone"), by("1", "w1-rclone-tuned")
    # the ceiling: plain PUTs (not the row shaped as imgsync's)
    ceil = [rate(r) for r in wl.get("5", []) if ok(r) and not r.get("extras")]
    ceiling = max(ceil) if ceil else None
    for r in wl.get("1", []):
        if r["tool"] != "imgsync":
            continue
        name = r["label"]
        if not ok(r):
            t.append(["W1 " + name, "run failed", "**missed**"])
            continue
        ops = rate(r)
        if rd:
            x = ops / rate(rd)
            t.append(["W1 %s: objects/s ≥ 2× rclone default" % name] +
                     verdict(x >= 2, "%.2f× (%s vs %s/s)" % (x, f(ops, 0), f(rate(rd), 0))))
        if rt:
            x = ops / rate(rt)
            t.append(["W1 %s: objects/s ≥ 1.2× rclone tuned" % name] +
                     verdict(x >= 1.2, "%.2f× (%s vs %s/s)" % (x, f(ops, 0), f(rate(rt), 0))))
        if ceiling:
            x = ops / ceiling
            t.append(["W1 %s: objects/s ≥ 90%% of the W5 ceiling" % name] +
                      verdict(x >= 0.9, "%.0f%% (%s vs %s PUT/s)" % (100 * x, f(ops, 0), f(ceiling, 0))))
        for peer, pr in (("rclone default", rd), ("rclone tuned", rt)):
            if pr and cpu_per_k(pr):
                x = cpu_per_k(r) / cpu_per_k(pr)
                t.append(["W1 %s: CPU per 1,000 images ≤ 1/3 of %s" % (name, peer)] +
                         verdict(x <= 1 / 3, "%.2f× (%.2f vs %.2f s)" % (x, cpu_per_k(r), cpu_per_k(pr))))
        if rd and cpu_per_k(rd) and num(r, "pg_cpu") is not None:
            mine = cpu_per_k(r) + num(r, "pg_cpu") / num(r, "n") * 1000
            t.append(["W1 %s: CPU per 1,000 images with PostgreSQL's, against rclone default "
                      "(no target; for the record)" % name,
                      "%.2f× (%.2f vs %.2f s)" % (mine / cpu_per_k(rd), mine, cpu_per_k(rd)), ""])
        t.append(["W1 %s: peak RSS < 32 MiB" % name] +
                 verdict(rss_mib(r) < 32, "%s MiB" % f(rss_mib(r))))
    # what the 90 % target allows at all: the server's ceiling for the PUTs
    # imgsync's guarantees need (If-None-Match), with a client and a
    # database that would cost nothing
    shaped = [rate(r) for r in wl.get("5", []) if ok(r) and "absent" in r.get("extras", "")]
    if ceiling and shaped and wl.get("1"):
        x = max(shaped) / ceiling
        t.append(["W1: the W5 ceiling of PUTs as imgsync sends them (If-None-Match), against the "
                  "plain ceiling: the most any client keeping imgsync's guarantees could reach, "
                  "with no CPU of its own or its database's (no target; for the record)",
                  "%.0f%% (%s vs %s PUT/s)" % (100 * x, f(max(shaped), 0), f(ceiling, 0)), ""])
    for im in wl.get("2", []):
        if im["tool"] != "imgsync":
            continue
        d = im.get("dir", "")
        name = "W2 %s, %s" % (im["label"], d)
        if not ok(im):
            t.append([name, "run failed", "**missed**"])
            continue
        # the plain runs (not the one timed until its files are on the disk)
        peers = [r for r in wl.get("2", []) if r["tool"] == "rclone" and r.get("dir") == d and ok(r)
                 and not r["id"].endswith("-sync")]
        if peers:
            best = max(peers, key=mbps)
            x = mbps(im) / mbps(best)
            t.append(["%s: MB/s ≥ rclone's (the better of default and tuned)" % name] +
                     verdict(x >= 1, "%.2f× (%s vs %s MB/s, %s)" % (x, f(mbps(im)), f(mbps(best)), best["label"])))
        t.append(["%s: peak RSS < 64 MiB" % name] + verdict(rss_mib(im) < 64, "%s MiB" % f(rss_mib(im))))
    for r in wl.get("3", []):
        if not ok(r):
            t.append(["W3 latency", "run failed", "**missed**"])
            continue
        t.append(["W3: p50 < 20 ms"] + verdict(num(r, "p50_ms") < 20, "%s ms" % f(num(r, "p50_ms"))))
        t.append(["W3: p99 < 100 ms"] + verdict(num(r, "p99_ms") < 100, "%s ms" % f(num(r, "p99_ms"))))
    for r in wl.get("4", []):
        if not ok(r):
            t.append(["W4 " + r["label"], "run failed", "**missed**"])
            continue
        t.append(["W4 %s: ≥ 5,000 images/s" % r["label"].replace("imgsync, ", "")] +
                 verdict(rate(r) >= 5000, "%s images/s" % f(rate(r), 0)))
    return table(["target", "measured", ""], t)


def env_block(env, which):
    e = env
    lines = table(["", ""], [
        ["workloads", which],
        ["date", e.get("date", "?")],
        ["machine", "%s, %s cores, %s RAM, %s, %s" % (e.get("cpu"), e.get("cores"), e.get("ram"),
                                                      e.get("kernel"), e.get("os"))],
        ["disk (fs stores)", e.get("disk", "?")],
        ["load average at start", e.get("loadavg", "?")],
        ["S3 server", "%s, one memstore OSD, on loopback; a fresh PostgreSQL and radosgw "
                      "for each tool's run in workloads 1 and 2, for each workload otherwise" % e.get("radosgw")],
        ["PostgreSQL", "%s (tests/harness/servers.sh: fsync off, synchronous_commit off)" % e.get("postgres")],
        ["imgsync", "%s (%s), built with -O2; libcurl %s" % (e.get("imgsync"), e.get("imgsync_rev"),
                                                          e.get("curl", "").replace("curl ", ""))],
        ["rclone", e.get("rclone", "?")],
        ["aws", e.get("aws", "?")],
        ["s3cmd", e.get("s3cmd", "?")],
        ["scale, concurrency", "BENCH_SCALE=%s, transfer.concurrency %s" % (e.get("scale"), e.get("concurrency"))],
        ["duration", "%s s for `bench/run %s` (servers started in %s ms)" %
         (e.get("seconds", "?"), e.get("workloads", ""), e.get("servers_start_ms", "?"))],
    ])
    return lines


def render(runs, workloads):
    out = [BEGIN, "<!-- written by bench/run from bench/results.json: edits here are lost -->", ""]
    # which run produced which workloads
    by_run = {}
    for w in sorted(workloads):
        by_run.setdefault(workloads[w]["run"], []).append(w)
    for run_id, ws in sorted(by_run.items()):
        out.append("Run of %s:" % runs[run_id].get("date", run_id))
        out.append("")
        out += env_block(runs[run_id], ", ".join(ws))
        out.append("")
    wl = {w: workloads[w]["rows"] for w in workloads}
    out.append("### Targets")
    out.append("")
    out += targets(wl)
    out.append("")
    for w in sorted(workloads):
        out.append("### " + TITLES[w])
        out.append("")
        out += RENDER[w](wl[w])
        out.append("")
        out.append("Commands (`$W` is the run's work directory, `$ENDPOINT` radosgw's URL):")
        out.append("")
        out += commands(wl[w])
        out.append("")
    out.append(END)
    return "\n".join(out)


def splice(readme, text):
    try:
        with open(readme) as fh:
            doc = fh.read()
    except OSError:
        doc = "# imgsync benchmarks\n\n"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## Results\n\n" + text + "\n"
    with open(readme + ".tmp", "w") as fh:
        fh.write(doc)
    os.replace(readme + ".tmp", readme)


def main():
    if sys.argv[1] == "--render":
        with open(sys.argv[2]) as fh:
            saved = json.load(fh)
        splice(sys.argv[3], render(saved["runs"], saved["workloads"]))
        return
    rows_dir, env_file, mode, results, readme = sys.argv[1:6]
    env = load_kv(env_file)
    env.pop("cmd", None)
    rows = [load_kv(os.path.join(rows_dir, n)) for n in sorted(os.listdir(rows_dir))]
    run_id = env.get("date", "run")
    this = {}
    for w in env.get("workloads", "").split():
        this[w] = {"run": run_id, "rows": [r for r in rows if r.get("w") == w]}
    if mode == "write":
        try:
            with open(results) as fh:
                saved = json.load(fh)
        except (OSError, ValueError):
            saved = {"runs": {}, "workloads": {}}
        saved["workloads"].update(this)
        saved["runs"][run_id] = env
        used = {v["run"] for v in saved["workloads"].values()}
        saved["runs"] = {k: v for k, v in saved["runs"].items() if k in used}
        with open(results + ".tmp", "w") as fh:
            json.dump(saved, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.replace(results + ".tmp", results)
        splice(readme, render(saved["runs"], saved["workloads"]))
        print(render({run_id: env}, this))
        print("\nbench: results written to %s and %s" % (readme, results), file=sys.stderr)
    else:
        print(render({run_id: env}, this))
        print("\nbench: a scaled run (BENCH_SCALE=%s): %s left as it was" % (env.get("scale"), readme),
              file=sys.stderr)


if __name__ == "__main__":
    main()
