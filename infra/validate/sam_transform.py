"""Runs the AWS SAM transform on infra/template.yaml offline, the way
CloudFormation would at deploy time, and writes the resulting plain
CloudFormation template (JSON) for cfn-lint.

Usage: python sam_transform.py TEMPLATE OUT.json

No AWS call is made:
- local paths (CodeUri, ContentUri, DefinitionUri) are replaced by the S3
  locations `sam package` would upload them to;
- managed policies are resolved from a fixed map (the translator would list
  them through IAM otherwise); the template names them by ARN anyway, so the
  map is only there to fail loudly if a bare policy name sneaks in.

It also checks what the transform produced: every IAM policy statement of
every role, including the ones SAM writes itself, names its actions without
wildcards and scopes them to resources, except for the few actions whose API
has no resource-level permissions.
"""

import json
import os
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402

# Actions whose API cannot be scoped to a resource: "Resource": "*" is the
# only thing IAM accepts for them.
# ECS list calls that name no service or task: allowed on "*" only with an
# ecs:cluster condition.
HELD_TO_CLUSTER = {"ecs:ListServices", "ecs:ListTasks"}

UNSCOPABLE = {
    "ecs:DescribeTaskDefinition",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}

# Example values for the parameters that have no default, so that the
# transform resolves what it can, as it would at deploy time.
EXAMPLE_PARAMETERS = {
    "BlueSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/blue-AbCdEf",
    "GreenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/green-GhIjKl",
    "EcsClusterName": "app",
    "EcsServices": "web,worker",
    "SubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    "SecurityGroupIds": "sg-0123456789abcdef0",
}


class OfflinePolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader (which lists IAM)."""

    KNOWN = {
        "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "AWSLambdaVPCAccessExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
        "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        "AWSXRayDaemonWriteAccess": "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess",
    }

    def load(self):
        return dict(self.KNOWN)


def as_s3_locations(template):
    for name, resource in template.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        kind = resource.get("Type")
        keys = {
            "AWS::Serverless::Function": ["CodeUri"],
            "AWS::Serverless::LayerVersion": ["ContentUri"],
            "AWS::Serverless::StateMachine": ["DefinitionUri"],
        }.get(kind, [])
        for key in keys:
            value = props.get(key)
            if isinstance(value, str) and not value.startswith("s3://"):
                props[key] = f"s3://pgflip-artifacts/{name}/{os.path.basename(value.rstrip('/'))}"


def as_list(value):
    return value if isinstance(value, list) else [value]


def unwrap_if(items):
    """Both branches of each Fn::If in a list (AWS::NoValue dropped)."""
    for item in items:
        if isinstance(item, dict) and "Fn::If" in item:
            yield from unwrap_if(item["Fn::If"][1:])
        elif isinstance(item, dict) and item != {"Ref": "AWS::NoValue"}:
            yield item


def statements(document):
    if isinstance(document, dict) and "Fn::If" in document:
        for branch in document["Fn::If"][1:]:
            yield from statements(branch)
        return
    if not isinstance(document, dict):
        return
    for statement in as_list(document.get("Statement", [])):
        if isinstance(statement, dict) and "Fn::If" in statement:
            yield from statements({"Statement": statement["Fn::If"][1:]})
        elif isinstance(statement, dict):
            yield statement


def check_policies(template):
    problems = []
    summary = []
    for name, resource in sorted(template["Resources"].items()):
        if resource["Type"] != "AWS::IAM::Role":
            continue
        props = resource["Properties"]
        managed = [
            arn if isinstance(arn, str) else json.dumps(arn)
            for arn in props.get("ManagedPolicyArns", [])
        ]
        actions = []
        for policy in unwrap_if(props.get("Policies", [])):
            for st in statements(policy.get("PolicyDocument")):
                if st.get("Effect") != "Allow":
                    continue
                acts = as_list(st.get("Action", []))
                actions.extend(a for a in acts if isinstance(a, str))
                if "NotAction" in st or "NotResource" in st:
                    problems.append(f"{name}: NotAction/NotResource")
                for a in acts:
                    if isinstance(a, str) and "*" in a:
                        problems.append(f"{name}: wildcard action {a}")
                if "*" in as_list(st.get("Resource", [])):
                    cond = st.get("Condition") or {}
                    held = any("ecs:cluster" in cond.get(op, {}) for op in ("ArnEquals", "ArnLike"))
                    scoped = [
                        a
                        for a in acts
                        if a not in UNSCOPABLE and not (held and a in HELD_TO_CLUSTER)
                    ]
                    if scoped:
                        problems.append(f'{name}: Resource "*" for {", ".join(scoped)}')
        summary.append(
            f"  {name}: {', '.join(sorted(set(actions))) or '-'}"
            + (f" + managed {', '.join(m.rsplit('/', 1)[-1] for m in managed)}" if managed else "")
        )
    return problems, summary


def main():
    source, out = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    as_s3_locations(template)
    result = transform(template, dict(EXAMPLE_PARAMETERS), OfflinePolicyLoader())
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    kinds = {}
    for resource in result["Resources"].values():
        kinds[resource["Type"]] = kinds.get(resource["Type"], 0) + 1
    print(
        f"SAM transform: {len(result['Resources'])} resources "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"
    )
    problems, summary = check_policies(result)
    print("IAM roles after the transform (allowed actions):")
    print("\n".join(summary))
    if problems:
        print("IAM problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
