"""Writes a statemachine/*.asl.json with its ${...} placeholders replaced
the way the template's DefinitionSubstitutions would replace them, so that
statelint and asl-validator see real-looking ARNs.

Usage: python substitute_asl.py TEMPLATE ASL OUT.json

Fails when the ASL uses a placeholder the template does not substitute, or
the template substitutes one the ASL does not use.
"""

import json
import re
import sys

from samtranslator.yaml_helper import yaml_parse

REGION, ACCOUNT, STACK = "us-east-1", "123456789012", "pgflip"


def arn_for(value):
    """A well-formed ARN for a substitution value such as !GetAtt X.Arn."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical, attribute = value["Fn::GetAtt"]
        if attribute == "Arn" and logical.endswith("Function"):
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-{logical}"
    if isinstance(value, dict) and value.get("Ref", "").endswith("StateMachine"):
        return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STACK}-{value['Ref']}"
    if isinstance(value, dict) and "Ref" in value:
        return f"arn:aws:sns:{REGION}:{ACCOUNT}:{STACK}-{value['Ref']}"
    if isinstance(value, str):
        return value
    raise SystemExit(f"substitute_asl.py: no example value for {json.dumps(value)}")


def main():
    template_path, asl_path, out = sys.argv[1:4]
    with open(template_path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    name = asl_path.replace("\\", "/").split("/")[-1]
    machines = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::StateMachine"
        and str(r["Properties"].get("DefinitionUri", "")).endswith("/" + name)
    ]
    if len(machines) != 1:
        raise SystemExit(f"expected one AWS::Serverless::StateMachine with DefinitionUri .../{name}, found {len(machines)}")
    substitutions = machines[0].get("DefinitionSubstitutions", {})
    with open(asl_path, encoding="utf-8") as f:
        text = f.read()
    used = set(re.findall(r"\$\{([^}]+)\}", text))
    missing = sorted(used - set(substitutions))
    unused = sorted(set(substitutions) - used)
    if missing or unused:
        raise SystemExit(
            f"placeholders without a DefinitionSubstitutions key: {missing or '-'}; "
            f"keys the ASL does not use: {unused or '-'}"
        )
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", arn_for(value))
    json.loads(text)  # still JSON
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"substituted {len(used)} placeholders: {', '.join(sorted(used))}")


if __name__ == "__main__":
    main()
