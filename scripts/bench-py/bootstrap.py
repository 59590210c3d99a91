"""A minimal Lambda runtime loop for the footprint comparison in scripts/bench.

It does what a custom runtime's bootstrap does: import the handler module
(whose module-level code is the function's init), then loop over
GET /invocation/next and POST /invocation/<id>/response (or /error).
Usage: python bootstrap.py <module>   (the module defines handler(event, context))
"""

import http.client
import importlib
import json
import os
import sys
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = "/2018-06-01/runtime"


def call(method, path, body=None):
    host, port = API.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=None)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        handler = importlib.import_module(sys.argv[1]).handler
    except Exception as e:  # an init error, as the managed runtime reports it
        call("POST", f"{BASE}/init/error", json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}))
        raise
    while True:
        response, data = call("GET", f"{BASE}/invocation/next")
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        try:
            result = handler(json.loads(data), None)
            call("POST", f"{BASE}/invocation/{request_id}/response", json.dumps(result))
        except Exception as e:
            traceback.print_exc()
            error = {"errorType": type(e).__name__, "errorMessage": str(e)}
            call("POST", f"{BASE}/invocation/{request_id}/error", json.dumps(error))


if __name__ == "__main__":
    main()
