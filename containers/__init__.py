"""smalgo.containers: the SageMaker job contract and the `smalgo` command.

paths.py      where a job keeps things (/opt/ml, or $SAGEMAKER_BASE_DIR)
config.py     reading input/config/*.json, and the several-hosts settings (SMALGO_HOST_ADDRESSES, ...)
channels.py   checking the data channels, reading them in File and Pipe mode (TrainingData)
job.py        the `train` command: configuration -> checks -> training -> model/ or failure
local_job.py  laying out a SageMaker-style job in a local directory; `--hosts N`: one per host,
              run as N processes on loopback addresses
cli.py        the `smalgo` command line (`python -m smalgo.containers`)
demo.py       `make demo`
benchmark/    `smalgo benchmark` and `smalgo benchmark-report`: throughput, latency and cost per
              instance type, through the real job path and the real server
"""
