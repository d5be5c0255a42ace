# smalgo developer entry points. `make test` and `make demo` set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SDK_VENV := benchmarks/.venv-sdk
SDK_STAMP := $(SDK_VENV)/.installed

.PHONY: install sdk-env test demo bench bench-recordio bench-csv bench-kmeans bench-pca bench-serve proto clean

install: $(STAMP)

# The SageMaker Python SDK v2, the peer the interoperability tests and benchmarks compare
# against, in its own environment: it pins its own protobuf and never enters the project's.
sdk-env: $(SDK_STAMP)

$(SDK_STAMP): benchmarks/recordio/setup_sdk_env.sh
	PYTHON=$(PYTHON) bash benchmarks/recordio/setup_sdk_env.sh
	touch $(SDK_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install sdk-env
	$(PY) -m pytest -q

demo: install
	$(PY) -m smalgo.containers.demo

bench: bench-recordio bench-csv bench-kmeans bench-pca bench-serve

# The SageMaker Python SDK v2 is the peer; it lives in the benchmark's own environment only.
bench-recordio: install sdk-env
	$(PY) benchmarks/recordio/run.py

bench-csv: install
	$(PY) benchmarks/csv/run.py

bench-kmeans: install
	$(PY) benchmarks/kmeans/run.py

bench-pca: install
	$(PY) benchmarks/pca/run.py

# Needs wrk, the load generator (Debian: apt-get install -y wrk).
bench-serve: install
	$(PY) benchmarks/serve/run.py

# Regenerates recordio/record_pb2.py (protobuf 5.29 gencode) from recordio/record.proto.
proto:
	test -x $(VENV)-proto/bin/python || $(PYTHON) -m venv $(VENV)-proto
	$(VENV)-proto/bin/python -m pip install --quiet 'grpcio-tools==1.71.0'
	$(VENV)-proto/bin/python -m grpc_tools.protoc -Irecordio --python_out=recordio recordio/record.proto

clean:
	rm -rf $(VENV) $(VENV)-proto $(SDK_VENV) build *.egg-info .pytest_cache
