// Package deploy holds no code: the directory carries the deployment files
// of the rerank worker, and its tests (deploy_test.go) check them against
// the code they describe.
//
//   - Dockerfile (+ Dockerfile.dockerignore): the image; build context is the
//     repository root.
//   - compose.yaml, nats/cluster-{1,2,3}.conf, prometheus/prometheus.yml,
//     prometheus/alerts.yaml: a 3-node NATS JetStream cluster, two workers,
//     the HTTP gateway and Prometheus.
//   - grafana/rerank.json (written by grafana/gen.py): the dashboard; the
//     tests check its queries and the alerts' against the exported metrics.
//   - nats/streams/*.json, nats/consumers/*.json: the streams and the
//     consumer for the nats CLI, equal to what worker.Provision declares
//     (regenerate with go test ./deploy -run TestNATSDefinitions -update).
//   - k8s/: Deployment (CPU and GPU), ConfigMap, Service, PodDisruptionBudget,
//     KEDA ScaledObject, and the HTTP gateway's Deployment and Service.
//
// docs/operations.md explains sizing, scaling and operations.
package deploy
