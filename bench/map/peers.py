"""bench/map/peers.py: the Python peers of pd.map, one measurement per run.

Usage: /usr/bin/python3 peers.py SYSTEM TEST [N]
  SYSTEM: mp (multiprocessing.Pool), cf (concurrent.futures.ProcessPoolExecutor),
          joblib (loky), dask (distributed.LocalCluster, processes)
  TEST:   tput (N trivial tasks: best chunking and one task per message),
          lat (one trivial task round trip on a warm pool),
          cpu (200 tasks of ~10 ms pure compute: speed-up over serial),
          cold (pool creation to first result), mem (worker RSS, idle)
Prints one JSON object.  Two workers everywhere (the machine has 2 cores).
"""
import json
import os
import statistics
import sys
import time

W = 2


def noop(x):
    return x


def burn(n):
    s = 0
    for i in range(n):
        s += (i * i) % 7
    return s


def calibrate():
    n = 100000
    while True:
        t0 = time.perf_counter()
        burn(n)
        dt = time.perf_counter() - t0
        if dt > 0.003:
            return int(n * 0.010 / dt)
        n *= 2


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_of(out, pids):
    out["worker_kb"] = max(rss_kb(p) for p in pids)
    out["worker_pss_kb"] = max(pss_kb(p) for p in pids)
    out["coord_kb"] = rss_kb(os.getpid())


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def descendants(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def pool_pids_mp(pool):
    return [p.pid for p in pool._pool]


def run(system, test, n):
    out = {"system": system, "test": test}
    if system == "mp":
        import multiprocessing as mp
        t0 = time.perf_counter()
        pool = mp.Pool(W)
        if test == "cold":
            pool.apply(noop, (1,))
            out["seconds"] = time.perf_counter() - t0
            pool.terminate()
            return out
        pool.map(noop, range(100))
        if test == "tput":
            xs = list(range(n))
            t0 = time.perf_counter(); pool.map(noop, xs); d = time.perf_counter() - t0
            out["best"] = n / d
            out["best_variant"] = "Pool.map default chunksize"
            t0 = time.perf_counter(); pool.map(noop, xs, chunksize=1); d = time.perf_counter() - t0
            out["one"] = n / d
            out["one_variant"] = "Pool.map chunksize=1"
        elif test == "lat":
            ts = []
            for i in range(2200):
                t0 = time.perf_counter(); pool.apply(noop, (i,)); ts.append(time.perf_counter() - t0)
            out["median_us"] = statistics.median(ts[200:]) * 1e6
            out["variant"] = "Pool.apply"
        elif test == "cpu":
            k = calibrate()
            t0 = time.perf_counter(); [burn(k) for _ in range(200)]; serial = time.perf_counter() - t0
            t0 = time.perf_counter(); pool.map(burn, [k] * 200, chunksize=1); par = time.perf_counter() - t0
            out.update(serial=serial, parallel=par, speedup=serial / par, variant="Pool.map chunksize=1")
        elif test == "mem":
            mem_of(out, pool_pids_mp(pool))
        pool.terminate()
    elif system == "cf":
        from concurrent.futures import ProcessPoolExecutor
        t0 = time.perf_counter()
        ex = ProcessPoolExecutor(W)
        if test == "cold":
            ex.submit(noop, 1).result()
            out["seconds"] = time.perf_counter() - t0
            ex.shutdown()
            return out
        list(ex.map(noop, range(100)))
        if test == "tput":
            xs = list(range(n))
            t0 = time.perf_counter(); list(ex.map(noop, xs, chunksize=1000)); d = time.perf_counter() - t0
            out["best"] = n / d
            out["best_variant"] = "map chunksize=1000"
            m = min(n, 20000)
            t0 = time.perf_counter(); list(ex.map(noop, xs[:m])); d = time.perf_counter() - t0
            out["one"] = m / d
            out["one_variant"] = "map chunksize=1 (%d tasks)" % m
        elif test == "lat":
            ts = []
            for i in range(2200):
                t0 = time.perf_counter(); ex.submit(noop, i).result(); ts.append(time.perf_counter() - t0)
            out["median_us"] = statistics.median(ts[200:]) * 1e6
            out["variant"] = "submit().result()"
        elif test == "cpu":
            k = calibrate()
            t0 = time.perf_counter(); [burn(k) for _ in range(200)]; serial = time.perf_counter() - t0
            t0 = time.perf_counter(); list(ex.map(burn, [k] * 200)); par = time.perf_counter() - t0
            out.update(serial=serial, parallel=par, speedup=serial / par, variant="map chunksize=1")
        elif test == "mem":
            mem_of(out, list(ex._processes))
        ex.shutdown()
    elif system == "joblib":
        from joblib import Parallel, delayed
        t0 = time.perf_counter()
        par = Parallel(n_jobs=W)
        with par:
            if test == "cold":
                par(delayed(noop)(i) for i in range(1))
                out["seconds"] = time.perf_counter() - t0
                return out
            par(delayed(noop)(i) for i in range(100))
            if test == "tput":
                t0 = time.perf_counter(); par(delayed(noop)(i) for i in range(n)); d = time.perf_counter() - t0
                out["best"] = n / d
                out["best_variant"] = "batch_size='auto'"
            elif test == "lat":
                ts = []
                for i in range(1200):
                    t0 = time.perf_counter(); par(delayed(noop)(i) for i in range(1)); ts.append(time.perf_counter() - t0)
                out["median_us"] = statistics.median(ts[200:]) * 1e6
                out["variant"] = "one-task Parallel call"
            elif test == "cpu":
                k = calibrate()
                t0 = time.perf_counter(); [burn(k) for _ in range(200)]; serial = time.perf_counter() - t0
                t0 = time.perf_counter(); par(delayed(burn)(k) for _ in range(200)); p = time.perf_counter() - t0
                out.update(serial=serial, parallel=p, speedup=serial / p, variant="batch_size='auto'")
            elif test == "mem":
                mem_of(out, [p for p in descendants(os.getpid()) if b"loky" in cmdline(p)
                             and b"semaphore_tracker" not in cmdline(p)
                             and b"resource_tracker" not in cmdline(p)])

        if test == "tput":
            m = min(n, 5000)
            with Parallel(n_jobs=W, batch_size=1) as p1:
                p1(delayed(noop)(i) for i in range(10))
                t0 = time.perf_counter(); p1(delayed(noop)(i) for i in range(m)); d = time.perf_counter() - t0
            out["one"] = m / d
            out["one_variant"] = "batch_size=1 (%d tasks)" % m
    elif system == "dask":
        import logging
        logging.disable(logging.WARNING)
        from dask.distributed import Client, LocalCluster
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=W, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        try:
            if test == "cold":
                client.submit(noop, 1, pure=False).result()
                out["seconds"] = time.perf_counter() - t0
                return out
            client.gather(client.map(noop, range(100), pure=False))
            if test == "tput":
                m = min(n, 10000)
                t0 = time.perf_counter(); client.gather(client.map(noop, range(m), pure=False)); d = time.perf_counter() - t0
                out["best"] = m / d
                out["best_variant"] = "client.map (%d tasks)" % m
                out["one"] = m / d
                out["one_variant"] = "client.map (%d tasks)" % m
            elif test == "lat":
                ts = []
                for i in range(300):
                    t0 = time.perf_counter(); client.submit(noop, i, pure=False).result(); ts.append(time.perf_counter() - t0)
                out["median_us"] = statistics.median(ts[50:]) * 1e6
                out["variant"] = "submit().result()"
            elif test == "cpu":
                k = calibrate()
                t0 = time.perf_counter(); [burn(k) for _ in range(200)]; serial = time.perf_counter() - t0
                t0 = time.perf_counter(); client.gather(client.map(burn, [k] * 200, pure=False)); p = time.perf_counter() - t0
                out.update(serial=serial, parallel=p, speedup=serial / p, variant="client.map")
            elif test == "mem":
                pids = [w.process.pid for w in cluster.workers.values()]
                mem_of(out, pids)
        finally:
            client.close()
            cluster.close()
    return out


if __name__ == "__main__":
    system, test = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100000
    print(json.dumps(run(system, test, n)))
