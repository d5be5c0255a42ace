"""`smalgo benchmark` and `smalgo benchmark-report`: throughput, latency and cost per instance
type, measured by the product itself (in an image: `docker run IMAGE benchmark`).

    run.py        the `benchmark` command: data -> training jobs -> the server under load -> result
    data.py       the generated data set and its channel files (RecordIO-protobuf and CSV)
    training.py   training through the real job path (local_job.lay_out_job + job.run_training),
                  in a child process that inherits the CPUs the run may use
    inference.py  the real server (`smalgo serve`: gunicorn, its default workers) and the loads
    load.py       the load generators: wrk when on PATH, else a built-in closed-loop one
    machine.py    the machine: instance type (option, variable, resourceconfig.json, EC2's
                  instance metadata service), vCPUs, memory, CPU model, GPUs
    prices.py     dollars per instance-hour from prices.json (SageMaker, on-demand, one region)
    results.py    the result file's schema (versioned), reading, writing, the machine's file name
    report.py     the `benchmark-report` command: one Markdown table and PNG plots over results
    peers.py      `make bench`: the benchmarks/*/run.py comparisons against peers, on the same
                  schema, in benchmarks/results/<machine>.json and .md
"""
