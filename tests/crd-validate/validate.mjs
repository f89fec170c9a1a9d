// Validates Prometheus Operator custom resources against the schemas of their CRDs (the
// monitoring.coreos.com/v1 OpenAPI schemas, as compiled by @kubernetes-models/prometheus-operator).
// Input: a JSON array of resources on stdin. Output: one line per resource, `ok <kind>/<name>` or
// `invalid <kind>/<name>: <errors>`; exit 1 when any is invalid or of a kind not handled here.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = { ServiceMonitor, PrometheusRule };
const resources = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const resource of resources) {
  const id = `${resource.kind}/${resource.metadata?.name}`;
  const Model = resource.apiVersion === "monitoring.coreos.com/v1" ? kinds[resource.kind] : undefined;
  if (!Model) {
    console.log(`invalid ${id}: no schema for ${resource.apiVersion} ${resource.kind}`);
    failed = true;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok ${id}`);
  } catch (error) {
    console.log(`invalid ${id}: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
