"""Runtime concerns shared by every algorithm and by the job and the server: which device the
kernels run on, row chunks over the one fork-safe thread pool (whose home, with the CPU count, is
smalgo.recordio.parallel, below every package), the one logging set-up, and the collective through
which the hosts of a job of several exchange arrays (collective.py, on xgboost.collective)."""
