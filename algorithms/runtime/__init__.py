"""Runtime concerns shared by every algorithm and by the job and the server: which device the
kernels run on, the one fork-safe thread pool and CPU count, and the one logging set-up."""
