# smalgo developer entry points. `make test` and `make demo` set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench bench-recordio proto clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) -m smalgo.containers.demo

bench: bench-recordio

# The SageMaker Python SDK v2 is the peer; it lives in the benchmark's own environment only.
bench-recordio: install
	$(PY) benchmarks/recordio/run.py

# Regenerates recordio/record_pb2.py (protobuf 5.29 gencode) from recordio/record.proto.
proto:
	test -x $(VENV)-proto/bin/python || $(PYTHON) -m venv $(VENV)-proto
	$(VENV)-proto/bin/python -m pip install --quiet 'grpcio-tools==1.71.0'
	$(VENV)-proto/bin/python -m grpc_tools.protoc -Irecordio --python_out=recordio recordio/record.proto

clean:
	rm -rf $(VENV) $(VENV)-proto build *.egg-info .pytest_cache
