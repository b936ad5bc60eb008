// Package deploy holds no code: the directory carries the deployment files
// of the rerank worker, and its tests (deploy_test.go) check them against
// the code they describe.
//
//   - Dockerfile (+ Dockerfile.dockerignore): the image; build context is the
//     repository root.
//   - compose.yaml, nats/cluster-{1,2,3}.conf, prometheus.yml, alerts.yml: a
//     3-node NATS JetStream cluster, two workers and Prometheus.
//   - nats/streams/*.json, nats/consumers/*.json: the streams and the
//     consumer for the nats CLI, equal to what worker.Provision declares
//     (regenerate with go test ./deploy -run TestNATSDefinitions -update).
//   - k8s/: Deployment (CPU and GPU), ConfigMap, Service, PodDisruptionBudget
//     and KEDA ScaledObject.
//
// docs/operations.md explains sizing, scaling and operations.
package deploy
