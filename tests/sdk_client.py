"""A SageMaker Python SDK v2 client of a running smalgo server, for tests/test_serve_server.py.

Runs in the SDK's own environment (benchmarks/.venv-sdk, made by
benchmarks/recordio/setup_sdk_env.sh), never the project's:

    benchmarks/.venv-sdk/bin/python tests/sdk_client.py URL ROWS_JSON
    benchmarks/.venv-sdk/bin/python tests/sdk_client.py linear-learner-predictor URL ROWS_JSON
    benchmarks/.venv-sdk/bin/python tests/sdk_client.py factorization-machines-predictor URL ROWS_JSON

Serializes ROWS_JSON (a list of rows) with the SDK's serializers, POSTs each body to URL (an
/invocations address) as an SDK Predictor would send it, reads the answers with the SDK's
deserializers, and prints, as JSON, what the SDK handed back for each combination:
JSONDeserializer results as they are, RecordDeserializer records as
[{label key: [values]}, ...].

The linear-learner-predictor mode calls `sagemaker.LinearLearnerPredictor(...).predict(rows)` itself
(factorization-machines-predictor: `sagemaker.FactorizationMachinesPredictor`), with the serializer
and deserializer the SDK gives that predictor by default, through a session
whose runtime client POSTs to URL instead of calling InvokeEndpoint. It prints the predictor's
configuration and the records as [{label key: {"tensor": which Value field, "values": [...]}}].
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import urllib.request

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402
from sagemaker import FactorizationMachinesPredictor, LinearLearnerPredictor  # noqa: E402
from sagemaker.amazon.common import RecordDeserializer, RecordSerializer  # noqa: E402
from sagemaker.deserializers import JSONDeserializer  # noqa: E402
from sagemaker.serializers import CSVSerializer, JSONSerializer  # noqa: E402


def invoke(url: str, serializer, deserializer, data):
    body = serializer.serialize(data)
    if isinstance(body, str):
        body = body.encode("utf-8")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": serializer.CONTENT_TYPE, "Accept": deserializer.ACCEPT[0]},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        content_type = response.headers["Content-Type"]
        return deserializer.deserialize(io.BytesIO(response.read()), content_type)


def records_as_json(records) -> list[dict]:
    return [{key: list(record.label[key].float32_tensor.values) for key in record.label} for record in records]


def label_tensor(value) -> dict:
    """A Record label Value as {"tensor": the field set (float32_tensor, int32_tensor...), "values"}."""
    field = value.WhichOneof("value")
    return {"tensor": field, "values": list(getattr(value, field).values) if field else []}


class _HttpRuntimeClient:
    """Stands in for boto3's sagemaker-runtime client: InvokeEndpoint as a POST to url."""

    def __init__(self, url: str):
        self.url = url

    def invoke_endpoint(self, *, EndpointName, ContentType, Accept, Body, **_):  # noqa: N803 (boto3's names)
        if isinstance(Body, str):
            Body = Body.encode("utf-8")
        request = urllib.request.Request(
            self.url, data=Body, method="POST", headers={"Content-Type": ContentType, "Accept": Accept}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return {"ContentType": response.headers["Content-Type"], "Body": io.BytesIO(response.read())}


class _LocalSession:
    """All of a Session that Predictor.predict() uses: its runtime client."""

    def __init__(self, url: str):
        self.sagemaker_runtime_client = _HttpRuntimeClient(url)


# The SDK's predictor classes of the algorithms that have one, by this script's mode.
PREDICTORS = {
    "linear-learner-predictor": LinearLearnerPredictor,
    "factorization-machines-predictor": FactorizationMachinesPredictor,
}


def sdk_predictor(mode: str, url: str, rows_json: str) -> None:
    rows = np.array(json.loads(rows_json), dtype=np.float32)
    predictor = PREDICTORS[mode]("smalgo-endpoint", sagemaker_session=_LocalSession(url))
    records = predictor.predict(rows)
    json.dump(
        {
            "serializer": type(predictor.serializer).__name__,
            "deserializer": type(predictor.deserializer).__name__,
            "content_type": predictor.content_type,
            "accept": list(predictor.accept),
            "records": [{key: label_tensor(value) for key, value in record.label.items()} for record in records],
        },
        sys.stdout,
    )


def main(url: str, rows_json: str) -> None:
    rows = np.array(json.loads(rows_json), dtype=np.float32)
    results = {
        "csv+json": invoke(url, CSVSerializer(), JSONDeserializer(), rows),
        "json+json": invoke(url, JSONSerializer(), JSONDeserializer(), rows),
        "json-one-row+json": invoke(url, JSONSerializer(), JSONDeserializer(), rows[0]),
        "recordio+recordio": records_as_json(invoke(url, RecordSerializer(), RecordDeserializer(), rows)),
        "recordio-one-row+recordio": records_as_json(invoke(url, RecordSerializer(), RecordDeserializer(), rows[0])),
        "csv+recordio": records_as_json(invoke(url, CSVSerializer(), RecordDeserializer(), rows)),
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in PREDICTORS:
        sdk_predictor(*sys.argv[1:])
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        sys.exit(__doc__)
