# smalgo developer entry points. `make test` and `make demo` set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SDK_VENV := benchmarks/.venv-sdk
SDK_STAMP := $(SDK_VENV)/.installed
MXNET_VENV := tests/oracles/.venv-mxnet
MXNET_STAMP := $(MXNET_VENV)/.installed
MYFM_VENV := benchmarks/.venv-myfm
MYFM_STAMP := $(MYFM_VENV)/.installed

.PHONY: install sdk-env mxnet-env myfm-env lint typecheck test demo bench bench-recordio bench-csv bench-kmeans bench-pca \
	bench-linear-learner bench-factorization-machines bench-xgboost bench-serve bench-setup bench-smalgo proto clean wheelhouse smalgo-wheels images images-cpu images-gpu push test-images

# Images: smalgo-<algorithm>:cpu and :gpu (containers/Dockerfile, containers/Dockerfile.gpu), one per
# algorithm in the registry (`python -m smalgo.algorithms.registry`), or those named here.
IMAGE_ALGORITHMS ?=
ALGORITHM_LIST = $(or $(strip $(IMAGE_ALGORITHMS)),$$($(PY) -m smalgo.algorithms.registry))
BASE_IMAGE ?= python:3.11-slim-bookworm
# The largest CPU image `make images` accepts (the GPU ones carry CUDA and are larger).
CPU_IMAGE_LIMIT_MB := 1000
# docker when a Docker engine answers, else podman (a docker client alone is not enough).
ifndef CONTAINER_ENGINE
CONTAINER_ENGINE := $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif command -v podman >/dev/null 2>&1; then echo podman; else echo docker; fi)
endif

install: $(STAMP)

# The SageMaker Python SDK v2, the peer the interoperability tests and benchmarks compare
# against, in its own environment: it pins its own protobuf and never enters the project's.
sdk-env: $(SDK_STAMP)

$(SDK_STAMP): benchmarks/recordio/setup_sdk_env.sh pyproject.toml setup.py
	PYTHON=$(PYTHON) bash benchmarks/recordio/setup_sdk_env.sh
	touch $(SDK_STAMP)

# MXNet 1.9.1, which AWS's built-in images write model_algo-1 with: the oracle of the MXNet file
# tests, in its own environment (it needs numpy < 1.24).
mxnet-env: $(MXNET_STAMP)

$(MXNET_STAMP): tests/oracles/setup_mxnet_env.sh
	PYTHON=$(PYTHON) bash tests/oracles/setup_mxnet_env.sh
	touch $(MXNET_STAMP)

# myfm, the C++ factorization machine the factorization-machines benchmark compares against, in
# its own environment too: it never enters the project's.
myfm-env: $(MYFM_STAMP)

$(MYFM_STAMP): benchmarks/factorization_machines/setup_myfm_env.sh
	PYTHON=$(PYTHON) bash benchmarks/factorization_machines/setup_myfm_env.sh
	touch $(MYFM_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install sdk-env mxnet-env lint
	$(PY) -m pytest -q

# ruff (pyproject.toml's [tool.ruff]) and mypy on the five packages; any finding fails.
lint: install typecheck
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# mypy sees the folders as the smalgo.* packages they are through a tree of links (the
# package-dir mapping lives in setup.py, which mypy does not read).
TYPECHECK_TREE := $(VENV)/typecheck
typecheck: install
	mkdir -p $(TYPECHECK_TREE)/smalgo
	for package in recordio algorithms serve containers sagemaker; do ln -sfn $(CURDIR)/$$package $(TYPECHECK_TREE)/smalgo/$$package; done
	MYPYPATH=$(CURDIR)/$(TYPECHECK_TREE) $(PY) -m mypy --config-file pyproject.toml --cache-dir $(VENV)/.mypy_cache -p smalgo

demo: install
	$(PY) -m smalgo.containers.demo

# Each benchmark records its comparisons with its peer in benchmarks/results/<machine>.json and
# rewrites benchmarks/results/<machine>.md, the table of ratios (smalgo.containers.benchmark.peers).
bench: bench-recordio bench-csv bench-kmeans bench-pca bench-linear-learner bench-factorization-machines bench-xgboost bench-serve

# wrk, the load generator, from the system's packages when it is missing (benchmarks/setup_wrk.sh).
bench-setup:
	bash benchmarks/setup_wrk.sh

# `smalgo benchmark` for every algorithm on this machine (throughput, latency, cost), into
# benchmarks/results/; `smalgo benchmark-report benchmarks/results/*vcpu*.json` tabulates and plots.
bench-smalgo: install bench-setup
	$(PY) -m smalgo.containers benchmark --algorithm all --output benchmarks/results

# The SageMaker Python SDK v2 is the peer; it lives in the benchmark's own environment only.
bench-recordio: install sdk-env
	$(PY) benchmarks/recordio/run.py

bench-csv: install
	$(PY) benchmarks/csv/run.py

bench-kmeans: install
	$(PY) benchmarks/kmeans/run.py

bench-pca: install
	$(PY) benchmarks/pca/run.py

bench-linear-learner: install
	$(PY) benchmarks/linear_learner/run.py

# smalgo's XGBoost job vs raw xgboost.train, and its CSV/LIBSVM loading vs AWS's image's way.
bench-xgboost: install
	$(PY) benchmarks/xgboost/run.py

bench-factorization-machines: install myfm-env
	$(PY) benchmarks/factorization_machines/run.py

# Needs wrk, the load generator: bench-setup installs it.
bench-serve: install bench-setup
	$(PY) benchmarks/serve/run.py

# The wheels the images install from: wheelhouse/cpu and wheelhouse/gpu (needs PyPI). Fetched
# again when pyproject.toml changes; after that, `make images` works offline.
wheelhouse: install
	PYTHON=$(PY) bash containers/build_wheelhouse.sh

wheelhouse/.complete: pyproject.toml | $(STAMP)
	PYTHON=$(PY) bash containers/build_wheelhouse.sh

images: images-cpu images-gpu

# The smalgo wheel of the working tree, into both wheelhouses, offline; once per make run.
smalgo-wheels: wheelhouse/.complete
	PYTHON=$(PY) bash containers/build_wheelhouse.sh --smalgo-only

images-cpu: smalgo-wheels
	$(call build_images,cpu,containers/Dockerfile,$(CPU_IMAGE_LIMIT_MB))

images-gpu: smalgo-wheels
	$(call build_images,gpu,containers/Dockerfile.gpu,)

# $(call build_images,TAG,DOCKERFILE,LIMIT_MB): one image per algorithm, all from the Dockerfile's
# parameterised `algorithm` stage over one shared stage (built once, then cached), then their
# sizes (and a failure when one is over LIMIT_MB, if given).
define build_images
	set -e; algorithms="$(ALGORITHM_LIST)"; for algorithm in $$algorithms; do \
		echo "== smalgo-$$algorithm:$(1) ($(CONTAINER_ENGINE), FROM $(BASE_IMAGE))"; \
		$(CONTAINER_ENGINE) build --file $(2) --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg ALGORITHM=$$algorithm \
			--target algorithm --tag smalgo-$$algorithm:$(1) wheelhouse/$(1); \
	done; \
	for algorithm in $$algorithms; do \
		bytes=$$($(CONTAINER_ENGINE) image inspect --format '{{.Size}}' smalgo-$$algorithm:$(1)); \
		mb=$$((bytes / 1000000)); \
		echo "image size: smalgo-$$algorithm:$(1) $$mb MB"; \
		if [ -n "$(3)" ] && [ $$mb -ge $(3) ]; then echo "smalgo-$$algorithm:$(1) is over $(3) MB" >&2; exit 1; fi; \
	done
endef

# Pushes the built images to REGISTRY as REGISTRY/smalgo-<algorithm>:<VERSION>-<cpu|gpu> and the
# moving REGISTRY/smalgo-<algorithm>:<cpu|gpu> (containers/push_images.sh), with the engine that
# built them; the README shows the ECR login before it. FLAVOURS=cpu pushes only the CPU images;
# PUSH_FLAGS goes to each push (--tls-verify=false for podman and a registry without TLS).
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
FLAVOURS ?= cpu gpu
push: install
	PUSH_FLAGS="$(PUSH_FLAGS)" bash containers/push_images.sh $(CONTAINER_ENGINE) "$(REGISTRY)" $(VERSION) "$(FLAVOURS)" $(ALGORITHM_LIST)

# Builds the images on a base it makes itself where no registry answers (debootstrap), then
# checks them as SageMaker uses them (tests/images/check_images.py), pushes them to a registry on
# loopback and pulls one back by digest (check_registry.py), and trains and serves each CPU image
# through the SageMaker SDK v2's local mode (check_sdk_local_mode.py). Needs a container engine,
# docker-registry and docker-compose; .ci/run installs them (containers/setup_podman.sh).
test-images: install sdk-env
	base=$$(bash containers/base_image.sh $(CONTAINER_ENGINE)) && $(MAKE) images BASE_IMAGE=$$base
	$(PY) tests/images/check_images.py --engine $(CONTAINER_ENGINE) --tag cpu --tag gpu $(ALGORITHM_LIST)
	$(PY) tests/images/check_several_hosts.py --engine $(CONTAINER_ENGINE) --tag cpu
	$(PY) tests/images/check_registry.py --engine $(CONTAINER_ENGINE) --tag cpu --tag gpu $(ALGORITHM_LIST)
	$(PY) tests/images/check_sdk_local_mode.py --engine $(CONTAINER_ENGINE) --tag cpu $(ALGORITHM_LIST)

# Regenerates recordio/record_pb2.py (protobuf 5.29 gencode) from recordio/record.proto.
proto:
	test -x $(VENV)-proto/bin/python || $(PYTHON) -m venv $(VENV)-proto
	$(VENV)-proto/bin/python -m pip install --quiet 'grpcio-tools==1.71.0'
	$(VENV)-proto/bin/python -m grpc_tools.protoc -Irecordio --python_out=recordio --pyi_out=recordio recordio/record.proto

clean:
	rm -rf $(VENV) $(VENV)-proto $(SDK_VENV) $(MXNET_VENV) $(MYFM_VENV) build *.egg-info .pytest_cache wheelhouse
