"""Runtime concerns shared by every algorithm and by the job and the server: which device the
kernels run on, row chunks over the one fork-safe thread pool (whose home, with the CPU count, is
smalgo.recordio.parallel, below every package), and the one logging set-up."""
