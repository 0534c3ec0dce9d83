"""The floor of a rollback: a bare script making the same REST calls, and nothing else.

``python tests/rest_floor.py TRACE TRACKING_URI MODEL FLOOR_MODEL EXPERIMENT_ID`` replays
the calls one ``mlcp rollback`` made (``MLCP_REST_TRACE`` wrote them to TRACE), in order, on
one kept-alive connection, against a scratch model FLOOR_MODEL (for MODEL) and a scratch
experiment (for every experiment the rollback wrote to), so that the real model's aliases
and history are not touched. Run ids the rollback created are mapped to those the replay
creates. Answers are read and not checked: this measures what the calls cost. Standard
library only, run as a file (not ``-m tests...``), so Python's start is all it adds.
"""

import http.client
import json
import sys
import urllib.parse


def main(trace: str, uri: str, model: str, floor_model: str, experiment_id: str) -> int:
    calls = [json.loads(line) for line in open(trace) if line.strip()]
    parts = urllib.parse.urlsplit(uri)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    run_ids: dict[str, str] = {}
    for call in calls:
        body = call["body"] or {}
        if "experiment_id" in body:
            body["experiment_id"] = experiment_id
        text = json.dumps(body).replace(model, floor_model)
        for old, new in run_ids.items():
            text = text.replace(old, new)
        path = "/api/2.0/mlflow/" + call["endpoint"]
        if call["method"] == "GET":
            query = urllib.parse.urlencode(json.loads(text))
            conn.request("GET", f"{path}?{query}" if query else path, headers=headers)
        else:
            conn.request(call["method"], path, body=text.encode(), headers=headers)
        answer = conn.getresponse().read()
        if call["endpoint"] == "runs/create":
            made = json.loads(answer)["run"]["info"]["run_id"]
            run_ids[call["result_run_id"]] = made
    return len(calls)


if __name__ == "__main__":
    print(main(*sys.argv[1:6]))
