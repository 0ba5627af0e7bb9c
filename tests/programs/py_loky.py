"""joblib as scikit-learn uses it: Parallel(n_jobs=2) runs on loky's reusable pool of exec'd
workers, fed through pipes guarded by POSIX named semaphores in /dev/shm (the creator maps
each under its temporary name, unlinked; the workers under its final name). After restore
the same workers compute again, and a third worker, started then, opens the semaphores by
name. With --sklearn, a real cross_val_score(n_jobs=2) runs before and after."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from joblib.externals.loky import reusable_executor  # noqa: E402

t = ckpt_test.Protocol()
sklearn = "--sklearn" in sys.argv[1:-1]


def square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def workers() -> list[int]:
    """PIDs of the workers of the pool Parallel ran on (joblib's reusable executor)."""
    return sorted(reusable_executor._executor._processes)


def scores() -> list[float]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score
    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    return list(cross_val_score(RandomForestClassifier(n_estimators=10, random_state=0), X, y,
                                n_jobs=2))


first = Parallel(n_jobs=2)(delayed(square)(x) for x in range(20))
t.check([s for s, _ in first] == [x * x for x in range(20)], f"results {first}")
pool = workers()
t.check(len(pool) == 2, f"workers {pool}")
before = scores() if sklearn else []
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

second = Parallel(n_jobs=2)(delayed(square)(x) for x in range(20))
t.check([s for s, _ in second] == [x * x for x in range(20)], f"results after restore {second}")
t.check(workers() == pool, f"the pool replaced its workers {pool} by {workers()}")
t.check({pid for _, pid in second} <= set(pool), "work done outside the pool")
third = Parallel(n_jobs=3)(delayed(square)(x) for x in range(30))
t.check([s for s, _ in third] == [x * x for x in range(30)], f"results with a new worker {third}")
t.check(len(workers()) == 3, f"no third worker: {workers()}")
if sklearn:
    after = scores()
    t.check(after == before, f"cross_val_score {after} after restore, {before} before")
reusable_executor._executor.shutdown(wait=True)
t.passed()
