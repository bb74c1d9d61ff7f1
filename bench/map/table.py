"""bench/map/table.py: the table of bench/map/run.sh from its JSON lines.
Medians over rounds; ratios are pdlua against each peer (> 1: pdlua ahead)."""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
failed = [r["failed"] for r in rows if "failed" in r]
rows = [r for r in rows if "failed" not in r]
NAMES = {"pdlua": "pdlua pd.map", "mp": "multiprocessing.Pool",
         "cf": "concurrent.futures", "joblib": "joblib (loky)", "dask": "dask.distributed"}
order = [s for s in ["pdlua", "mp", "cf", "joblib", "dask"] if any(r["system"] == s for r in rows)]


def med(system, test, field):
    v = [r[field] for r in rows if r["system"] == system and r["test"] == test and field in r]
    return statistics.median(v) if v else None


def variant(system, test, field):
    for r in rows:
        if r["system"] == system and r["test"] == test and field in r:
            return r[field]
    return ""


def f(x, fmt):
    return "-" if x is None else fmt % x


rounds = len([r for r in rows if r["system"] == "pipe"])
print("bench/map: %d round(s), 2 workers, medians over rounds\n" % rounds)

print("(a) %d trivial tasks, tasks/s" % n)
print("| system | best chunking | tasks/s | pdlua default / this | one task per message | tasks/s | pdlua chunk=1 / this |")
print("|---|---|---|---|---|---|---|")
pb, po = med("pdlua", "tput", "best"), med("pdlua", "tput", "one")
for s in order:
    b, o = med(s, "tput", "best"), med(s, "tput", "one")
    print("| %s | %s | %s | %s | %s | %s | %s |" % (
        NAMES[s], variant(s, "tput", "best_variant"), f(b, "%.0f"),
        f(pb / b if pb and b else None, "%.2fx"), variant(s, "tput", "one_variant"),
        f(o, "%.0f"), f(po / o if po and o else None, "%.2fx")))

print("\n(b) one trivial task on a warm pool: round trip, us (median)")
print("| system | call | us | this / pdlua |")
print("|---|---|---|---|")
pl = med("pdlua", "lat", "median_us")
FLOORS = {"pipe": "1-byte pipe ping-pong (C)",
          "socketpair": "1-byte unix socketpair ping-pong (C): pd.map's way out (replies come back on a pipe)",
          "nng": "nng 1.5.2 pair0 ipc echo (C)"}
for s in ["pipe", "socketpair", "nng"]:
    v = med(s, "floor", "median_us")
    print("| floor: %s | %s | %s | %s |" % (s, FLOORS[s], f(v, "%.1f"),
          f(v / pl if v and pl else None, "%.2f")))
for s in order:
    v = med(s, "lat", "median_us")
    print("| %s | %s | %s | %s |" % (NAMES[s], variant(s, "lat", "variant"), f(v, "%.1f"),
          f(v / pl if v and pl else None, "%.2fx")))

print("\n(c) 200 tasks of ~10 ms pure compute: speed-up over serial (2 cores)")
print("| system | variant | serial s | parallel s | speed-up |")
print("|---|---|---|---|---|")
for s in order:
    print("| %s | %s | %s | %s | %s |" % (NAMES[s], variant(s, "cpu", "variant"),
          f(med(s, "cpu", "serial"), "%.3f"), f(med(s, "cpu", "parallel"), "%.3f"),
          f(med(s, "cpu", "speedup"), "%.2f")))

print("\n(d) cold start: pool creation to first result, s")
print("| system | s | this / pdlua |")
print("|---|---|---|")
pc = med("pdlua", "cold", "seconds")
for s in order:
    v = med(s, "cold", "seconds")
    print("| %s | %s | %s |" % (NAMES[s], f(v, "%.4f"), f(v / pc if v and pc else None, "%.2fx")))

print("\n(e) memory: RSS, MB")
print("| system | idle worker RSS | idle worker PSS (shared pages split) | coordinator RSS (after warm-up) |")
print("|---|---|---|---|")
for s in order:
    w, wp, c = med(s, "mem", "worker_kb"), med(s, "mem", "worker_pss_kb"), med(s, "mem", "coord_kb")
    print("| %s | %s | %s | %s |" % (NAMES[s], f(w and w / 1024, "%.1f"), f(wp and wp / 1024, "%.1f"),
                                     f(c and c / 1024, "%.1f")))
pk = med("pdlua", "mem1m", "coord_peak_kb")
if pk:
    print("\npdlua coordinator peak RSS for a 10^6-task map of numbers: %.1f MB" % (pk / 1024))
ls, lf = med("pdlua", "lb", "slow_tasks"), med("pdlua", "lb", "fast_tasks")
if ls is not None:
    print("\npdlua load balancing, 200 tasks, one worker 4x slower: slow worker ran %d, fast %d; "
          "%.3f s against an ideal %.3f s (an even split: 0.400 s)"
          % (ls, lf, med("pdlua", "lb", "seconds"), med("pdlua", "lb", "ideal")))
if failed:
    print("\nfailed runs: " + "; ".join(failed))
