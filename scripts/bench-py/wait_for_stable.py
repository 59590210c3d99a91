"""wait-for-stable in Python/boto3: one look at the deployments
(ecs:DescribeServices, 10 services per call), as the Rust Lambda does.
Event and result: the rollout {"cluster", "deployments": [{"service", "deploymentId"}], "deadlineMs", ...};
like the Rust Lambda it raises when the rollout is not complete."""

import time

import boto3

ecs = boto3.client("ecs")


def state_of(ours, deployments):
    tracked = next((d for d in deployments if d["id"] == ours), None) or next(
        (d for d in deployments if d["status"] == "PRIMARY"), None
    )
    if tracked is None:
        return "IN_PROGRESS"
    rollout = tracked.get("rolloutState")
    if rollout == "FAILED":
        return "FAILED"
    if tracked["status"] == "PRIMARY" and (rollout == "COMPLETED" or (rollout is None and len(deployments) == 1)):
        return "COMPLETED"
    return "IN_PROGRESS"


def handler(event, context):
    names = [d["service"] for d in event["deployments"]]
    found = {}
    for i in range(0, len(names), 10):
        out = ecs.describe_services(cluster=event["cluster"], services=names[i : i + 10])
        for s in out["services"]:
            found[s["serviceName"]] = s
    states = []
    for d in event["deployments"]:
        service = found.get(d["service"])
        if service is None or service.get("status") == "INACTIVE":
            raise LookupError(f'{event["cluster"]}/{d["service"]} not found')
        d["rolloutState"] = state_of(d["deploymentId"], service.get("deployments", []))
        states.append(d["rolloutState"])
    if "FAILED" in states:
        raise RuntimeError("RolloutFailed")
    if not all(s == "COMPLETED" for s in states):
        if time.time() * 1000 >= event.get("deadlineMs", 0):
            raise RuntimeError("RolloutTimedOut")
        return {**event, "status": "IN_PROGRESS"}
    return {**event, "status": "COMPLETED"}
