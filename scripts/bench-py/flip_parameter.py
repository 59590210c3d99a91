"""flip-parameter in Python/boto3: the same calls as the Rust Lambda
(ssm:GetParameter, then ssm:PutParameter when the value changes).
Event: {"parameterName": "...", "to": "blue" | "green"}."""

import os

import boto3

USERS = {os.environ.get("BLUE_USER", "blue"), os.environ.get("GREEN_USER", "green")}
ssm = boto3.client("ssm")


def handler(event, context):
    to = event["to"]
    if to not in USERS:
        raise ValueError(f'field "to" must be one of {sorted(USERS)}')
    name = event["parameterName"]
    was = ssm.get_parameter(Name=name)["Parameter"]["Value"].strip()
    changed = was != to
    if changed:
        ssm.put_parameter(Name=name, Value=to, Overwrite=True)
    return {"activeUser": to, "was": was, "changed": changed}
