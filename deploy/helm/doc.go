// Package helm holds the test of the Helm chart in deploy/helm/rerank: it
// renders the chart with Helm's own engine (with default and non-default
// values) and checks the defaults equal, in substance, the plain manifests
// in deploy/k8s, so that the two cannot drift.
//
// It is a module of its own so that Helm and the Kubernetes libraries it
// brings stay out of the rerank module's dependencies: `make test` runs it
// with `cd deploy/helm && go test ./...`.
package helm
