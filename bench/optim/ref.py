#!/usr/bin/python3
"""bench/optim/ref.py: the reference optimisers on the bench protocol.

Runs, where Debian's python3 has them, DEAP's real-coded GA (binary
tournament, SBX eta 20 p 0.9, polynomial mutation eta 20 p 1/n, N = 100,
2 elites), DEAP's CMA-ES (deap.cma.Strategy, classic, no active update),
pyswarms' GlobalBestPSO with the SPSO-2011 constants, and pycma when it is
importable, on the functions of bench/optim/functions.lua with the same
protocol (x0 ~ U(box), sigma0 = 0.25 range, budget 1e5, success when
f - f* < 1e-8), and prints rows in the format of run.lua.

  /usr/bin/python3 bench/optim/ref.py [--seeds N] [--first-seed S] [--algos deap-ga,deap-cma,pyswarms,pycma]
                                      [--funcs sphere,...] [--dims 10,20]
"""
import argparse
import math
import os
import random
import statistics
import sys
import time

# one BLAS thread, as the pdlua side runs (numpy's threaded BLAS took both
# cores of the 2-core machine and inflated the overhead figures)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

XS = 420.968746359982
BOX = {"sphere": 5.12, "ellipsoid": 5.0, "rosenbrock": 2.048, "rastrigin": 5.12,
       "ackley": 32.768, "griewank": 600.0, "schwefel": 500.0}


def f_of(name, n):
    if name == "sphere":
        return lambda x: float(np.sum(x * x)), 0.0
    if name == "ellipsoid":
        c = 10 ** (6 * np.arange(n) / max(n - 1, 1))
        return lambda x: float(np.sum(c * x * x)), 0.0
    if name == "rosenbrock":
        return lambda x: float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)), 0.0
    if name == "rastrigin":
        return lambda x: float(10 * n + np.sum(x * x - 10 * np.cos(2 * np.pi * x))), 0.0
    if name == "ackley":
        return (lambda x: float(-20 * np.exp(-0.2 * np.sqrt(np.sum(x * x) / n))
                                - np.exp(np.sum(np.cos(2 * np.pi * x)) / n) + 20 + math.e)), 0.0
    if name == "griewank":
        i = np.sqrt(np.arange(1, n + 1))
        return lambda x: float(1 + np.sum(x * x) / 4000 - np.prod(np.cos(x / i))), 0.0
    if name == "schwefel":
        fopt = n * (418.9828872724338 - XS * math.sin(math.sqrt(XS)))
        return lambda x: float(418.9828872724338 * n - np.sum(x * np.sin(np.sqrt(np.abs(x))))), fopt
    raise SystemExit("unknown function " + name)


class Budget(Exception):
    pass


class Counter:
    """Counts evaluations, records the first hit of the target, stops the run
    at the budget, and times f."""

    def __init__(self, f, fopt, budget=100000):
        self.f, self.fopt, self.budget = f, fopt, budget
        self.n, self.hit, self.best, self.tin = 0, None, math.inf, 0.0

    def __call__(self, x):
        if self.n >= self.budget or self.hit:
            raise Budget()
        t0 = time.process_time()
        v = self.f(np.asarray(x, dtype=float))
        self.tin += time.process_time() - t0
        self.n += 1
        d = v - self.fopt
        self.best = min(self.best, d)
        if self.hit is None and d < 1e-8:
            self.hit = self.n
        return v


def deap_ga(cnt, n, lo, hi, seed):
    from deap import tools
    random.seed(seed)
    N = 100
    pop = [[random.uniform(lo, hi) for _ in range(n)] for _ in range(N)]
    fit = [cnt(x) for x in pop]
    while True:
        order = sorted(range(N), key=lambda k: fit[k])
        new, nf = [list(pop[order[0]]), list(pop[order[1]])], [fit[order[0]], fit[order[1]]]
        while len(new) < N:
            a = min(random.sample(range(N), 2), key=lambda k: fit[k])
            b = min(random.sample(range(N), 2), key=lambda k: fit[k])
            c1, c2 = list(pop[a]), list(pop[b])
            if random.random() < 0.9:
                tools.cxSimulatedBinaryBounded(c1, c2, 20.0, lo, hi)
            for c in (c1, c2):
                tools.mutPolynomialBounded(c, 20.0, lo, hi, 1.0 / n)
                if len(new) < N:
                    new.append(c)
                    nf.append(cnt(c))
        pop, fit = new, nf


def deap_cma(cnt, n, lo, hi, seed):
    from deap import base, cma, creator
    if not hasattr(creator, "RefFitnessMin"):
        creator.create("RefFitnessMin", base.Fitness, weights=(-1.0,))
        creator.create("RefIndividual", list, fitness=creator.RefFitnessMin)
    np.random.seed(seed)
    rng = np.random.RandomState(seed)
    s = cma.Strategy(centroid=list(rng.uniform(lo, hi, n)), sigma=0.25 * (hi - lo))
    while True:
        pop = s.generate(creator.RefIndividual)
        for x in pop:
            xc = np.clip(x, lo, hi)
            # f at the clipped point, plus a penalty for selection only
            x.fitness.values = (cnt(xc) + float(np.sum((np.asarray(x) - xc) ** 2)),)
        s.update(pop)
        if s.sigma * math.sqrt(max(s.diagD ** 2)) < 1e-12 * (hi - lo) or max(s.diagD) ** 2 > 1e14 * min(s.diagD) ** 2:
            return


def pyswarms_gbest(cnt, n, lo, hi, seed):
    import logging
    import pyswarms as ps
    logging.disable(logging.CRITICAL)
    np.random.seed(seed)
    opt = ps.single.GlobalBestPSO(n_particles=40, dimensions=n,
                                  options={"c1": 1.1931, "c2": 1.1931, "w": 0.7213},
                                  bounds=(np.full(n, lo), np.full(n, hi)))
    opt.optimize(lambda X: np.array([cnt(x) for x in X]), iters=100000 // 40, verbose=False)


def pycma(cnt, n, lo, hi, seed):
    import cma
    rng = np.random.RandomState(seed)
    es = cma.CMAEvolutionStrategy(list(rng.uniform(lo, hi, n)), 0.25 * (hi - lo),
                                  {"bounds": [lo, hi], "seed": seed, "verbose": -9})
    while not es.stop():
        X = es.ask()
        es.tell(X, [cnt(x) for x in X])


ALGOS = {"deap-ga": deap_ga, "deap-cma": deap_cma, "pyswarms": pyswarms_gbest, "pycma": pycma}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--algos", default="deap-ga,deap-cma,pyswarms,pycma")
    ap.add_argument("--funcs", default="sphere")
    ap.add_argument("--dims", default="10")
    a = ap.parse_args()
    print("python %s, %d seeds, budget 1e5, target 1e-8" % (sys.version.split()[0], a.seeds))
    for algo in a.algos.split(","):
        try:
            __import__({"deap-ga": "deap", "deap-cma": "deap", "pyswarms": "pyswarms", "pycma": "cma"}[algo])
        except ImportError:
            print("%-9s not installed, skipped" % algo)
            continue
        for fname in a.funcs.split(","):
            for n in [int(d) for d in a.dims.split(",")]:
                hits, bests, costs, used = [], [], [], 0
                for seed in range(a.first_seed, a.first_seed + a.seeds):
                    f, fopt = f_of(fname, n)
                    cnt = Counter(f, fopt)
                    t0 = time.process_time()
                    try:
                        ALGOS[algo](cnt, n, -BOX[fname], BOX[fname], seed)
                    except Budget:
                        pass
                    total = time.process_time() - t0
                    used += cnt.hit or cnt.n
                    if cnt.hit:
                        hits.append(cnt.hit)
                    bests.append(cnt.best)
                    costs.append((total - cnt.tin) / max(cnt.n, 1) * 1e6)
                med = statistics.median(hits) if hits else None
                print("%-9s %-10s %3d | %2d/%-2d %7s %7s %9.3g %7.1f" % (
                    algo, fname, n, len(hits), a.seeds, "%d" % med if med else "-",
                    "%d" % (used / len(hits)) if hits else "-", statistics.median(bests),
                    statistics.median(costs)))
                sys.stdout.flush()


if __name__ == "__main__":
    main()
