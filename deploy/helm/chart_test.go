package helm

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/yaml"
)

// object is one rendered or written Kubernetes object.
type object map[string]any

func (o object) kindName() string {
	md, _ := o["metadata"].(map[string]any)
	return o["kind"].(string) + "/" + md["name"].(string)
}

// render renders the chart as `helm install <release>` would with vals
// over its defaults.
func render(t *testing.T, release string, vals map[string]any) map[string]object {
	t.Helper()
	ch, err := loader.Load("rerank")
	if err != nil {
		t.Fatal(err)
	}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: release, Namespace: "rerank", IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]object{}
	for name, text := range files {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for k, o := range parse(t, name, text) {
			out[k] = o
		}
	}
	return out
}

// parse splits a multi-document YAML text into its objects.
func parse(t *testing.T, name, text string) map[string]object {
	t.Helper()
	out := map[string]object{}
	for _, doc := range strings.Split("\n"+text, "\n---") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, doc)
		}
		if len(o) > 0 {
			out[o.kindName()] = o
		}
	}
	return out
}

// manifests reads deploy/k8s.
func manifests(t *testing.T) map[string]object {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join("..", "k8s", "*.yaml"))
	out := map[string]object{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for k, o := range parse(t, p, string(b)) {
			out[k] = o
		}
	}
	return out
}

// substance is what of an object must agree between the chart and
// deploy/k8s: everything but the metadata (the chart adds its labels), the
// pod template's config checksum, and the text of rerank.toml (its
// settings are compared).
func substance(o object) object {
	c := object{}
	for k, v := range o {
		if k != "metadata" {
			c[k] = v
		}
	}
	if tmpl, ok := dig(c, "spec", "template", "metadata").(map[string]any); ok {
		if ann, ok := tmpl["annotations"].(map[string]any); ok {
			delete(ann, "checksum/config")
			if len(ann) == 0 {
				delete(tmpl, "annotations")
			}
		}
	}
	if data, ok := c["data"].(map[string]any); ok {
		if toml, ok := data["rerank.toml"].(string); ok {
			data["rerank.toml"] = settings(toml)
		}
	}
	return c
}

// settings reads a flat TOML settings file into key → value text.
func settings(toml string) map[string]any {
	out := map[string]any{}
	sc := bufio.NewScanner(strings.NewReader(toml))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out
}

func dig(v any, path ...string) any {
	for _, p := range path {
		switch m := v.(type) {
		case object:
			v = m[p]
		case map[string]any:
			v = m[p]
		default:
			return nil
		}
	}
	return v
}

// The chart with its default values renders, in substance, exactly the
// objects of deploy/k8s (but for the GPU worker, which the chart does not
// have): same images, commands, arguments, environment, probes, resources,
// volumes, settings, triggers and budgets.
func TestDefaultsEqualTheManifests(t *testing.T) {
	chart := render(t, "rerank", nil)
	k8s := manifests(t)
	notInChart := []string{"Deployment/rerank-gpu", "PodDisruptionBudget/rerank-gpu"}
	for k, want := range k8s {
		got, ok := chart[k]
		switch {
		case !ok && !slices.Contains(notInChart, k):
			t.Errorf("%s is in deploy/k8s, not rendered by the chart", k)
		case ok && !reflect.DeepEqual(substance(got), substance(want)):
			a, _ := yaml.Marshal(substance(got))
			b, _ := yaml.Marshal(substance(want))
			t.Errorf("%s differs:\nchart:\n%s\ndeploy/k8s:\n%s", k, a, b)
		}
	}
	for k, o := range chart {
		if _, ok := k8s[k]; !ok {
			t.Errorf("%s is rendered by the chart, not in deploy/k8s", k)
		}
		md, _ := o["metadata"].(map[string]any)
		labels, _ := md["labels"].(map[string]any)
		if labels["helm.sh/chart"] != "rerank-0.1.0" || labels["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s: labels %v", k, labels)
		}
	}
}

// Non-default values: no KEDA (a fixed replica count), no gateway, another
// image, NATS credentials from a Secret, a real model from a claim instead
// of the demo model, a ServiceMonitor, another release name.
func TestNonDefaultValues(t *testing.T) {
	vals := map[string]any{
		"image":   map[string]any{"repository": "registry.example/rerank", "tag": "v1.2.3"},
		"nats":    map[string]any{"url": "nats://a:4222,nats://b:4222"},
		"keda":    map[string]any{"enabled": false},
		"gateway": map[string]any{"enabled": false},
		"worker": map[string]any{"replicas": 3, "demoModel": false,
			"nats":         map[string]any{"secretName": "rerank-nats", "nkeyKey": "worker.nk", "inboxPrefix": "_INBOX_worker"},
			"extraEnv":     []any{map[string]any{"name": "RERANK_LOG_LEVEL", "value": "debug"}},
			"modelsVolume": map[string]any{"persistentVolumeClaim": map[string]any{"claimName": "models", "readOnly": true}},
			"settings":     map[string]any{"model": []any{"a=/models/a", "b=/models/b"}, "concurrency": 16}},
		"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
	}
	objs := render(t, "search", vals)
	var kinds []string
	for k := range objs {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	want := []string{"ConfigMap/search-rerank-config", "Deployment/search-rerank", "PodDisruptionBudget/search-rerank",
		"Service/search-rerank-metrics", "ServiceMonitor/search-rerank"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("rendered %v, want %v", kinds, want)
	}
	d := objs["Deployment/search-rerank"]
	if r := dig(d, "spec", "replicas"); r != float64(3) {
		t.Errorf("replicas %v, want 3 without KEDA", r)
	}
	pod := dig(d, "spec", "template", "spec").(map[string]any)
	if pod["initContainers"] != nil {
		t.Error("the demo model's init container is rendered with demoModel false")
	}
	c := pod["containers"].([]any)[0].(map[string]any)
	if c["image"] != "registry.example/rerank:v1.2.3" {
		t.Errorf("image %v", c["image"])
	}
	env := map[string]any{}
	for _, e := range c["env"].([]any) {
		env[dig(e, "name").(string)] = dig(e, "value")
	}
	if env["RERANK_NATS_NKEY"] != "/etc/rerank-nats/worker.nk" || env["RERANK_NATS_INBOX_PREFIX"] != "_INBOX_worker" || env["RERANK_LOG_LEVEL"] != "debug" {
		t.Errorf("env %v: want the worker's NKEY, inbox prefix and extra variable", env)
	}
	vols, _ := yaml.Marshal(pod["volumes"])
	if !strings.Contains(string(vols), "claimName: models") || !strings.Contains(string(vols), "secretName: rerank-nats") {
		t.Errorf("volumes:\n%s", vols)
	}
	s := settings(dig(objs["ConfigMap/search-rerank-config"], "data", "rerank.toml").(string))
	if s["model"] != `["a=/models/a", "b=/models/b"]` || s["concurrency"] != "16" || s["nats-url"] != `"nats://a:4222,nats://b:4222"` || s["ack-wait"] != `"30s"` {
		t.Errorf("rerank.toml settings %v", s)
	}
	// Tokens given inline become a Secret the gateway reads.
	objs = render(t, "rerank", map[string]any{"gateway": map[string]any{"tokens": "search:abc"}})
	if sec := objs["Secret/rerank-gateway-tokens"]; dig(sec, "stringData", "tokens") != "search:abc" {
		t.Errorf("inline tokens: %v", sec)
	}
}
