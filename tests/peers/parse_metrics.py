"""Parses a Prometheus text exposition from stdin with the reference parser
(prometheus_client) and prints {"name{label=value,...}": value} as JSON, so tests check the
orchestrator's /metrics with a standard parser rather than string matching."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out, sort_keys=True))
