package k8s_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// serveFlags are the flags of `sserelay serve` that manifests may set (DESIGN.md, interface contract). Each is
// also the environment variable SSERELAY_<FLAG_UPPER_SNAKE>. Add a flag here when serve gains one.
var serveFlags = []string{
	"listen", "nats-url", "data-dir", "drain-timeout", "nats-listen",
	"jwt-secret", "jwt-public-key", "jwks-url",
	"subject-prefix", "stream", "log-format",
	"retention-max-age", "retention-max-bytes", "stream-replicas", "no-demo",
}

// Defaults of `sserelay serve` that the checks depend on.
const (
	defaultDrainTimeout = 5 * time.Second
	defaultNATSListen   = "127.0.0.1:4222"
	// exitMargin is the time the relay may take past its drain timeout to exit ("a few seconds").
	exitMargin = 5 * time.Second
)

func envName(flag string) string {
	return "SSERELAY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// decoder decodes YAML or JSON into the typed objects of the registered API groups and, being strict, fails on
// unknown fields, duplicate fields and fields that match only case-insensitively: the apiserver's own strict
// field validation.
var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// kustomization is the part of kustomize's Kustomization that the manifests use; decoded strictly, so a field
// outside it fails the test until it is added here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
}

type object struct {
	file string // relative to k8s/
	obj  runtime.Object
}

// tree is every manifest under k8s/, by directory.
type tree map[string][]object

func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if s := string(bytes.TrimSpace(j)); s == "null" || s == "" {
			continue // only comments or separators
		}
		docs = append(docs, doc)
	}
}

func decodeStrict(doc []byte) (runtime.Object, error) {
	obj, _, err := decoder.Decode(doc, nil, nil)
	return obj, err
}

func decodeKustomization(data []byte) (kustomization, error) {
	var k kustomization
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return k, err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, &k)
	if err != nil {
		return k, err
	}
	if err := errors.Join(strictErrs...); err != nil {
		return k, err
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return k, fmt.Errorf("not a Kustomization: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}
	return k, nil
}

func yamlFiles() ([]string, error) {
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, filepath.ToSlash(p))
		}
		return err
	})
	if err == nil && len(files) == 0 {
		err = errors.New("no manifests found under k8s/")
	}
	return files, err
}

// decodeTree decodes every manifest under k8s/ strictly, returning what decoded and an error per failure.
var decodeTree = sync.OnceValues(func() (tree, []error) {
	tr := tree{}
	files, err := yamlFiles()
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	for _, f := range files {
		if path.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		docs, err := splitDocuments(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if len(docs) == 0 {
			errs = append(errs, fmt.Errorf("%s: no documents", f))
		}
		for i, doc := range docs {
			obj, err := decodeStrict(doc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", f, i+1, err))
				continue
			}
			tr[path.Dir(f)] = append(tr[path.Dir(f)], object{f, obj})
		}
	}
	return tr, errs
})

// load returns the decoded manifests; the semantic checks need them all.
func load(t *testing.T) tree {
	t.Helper()
	tr, errs := decodeTree()
	if len(errs) > 0 {
		t.Fatalf("%d manifest error(s), see TestManifestsDecodeStrictly; first: %v", len(errs), errs[0])
	}
	return tr
}

func TestManifestsDecodeStrictly(t *testing.T) {
	tr, errs := decodeTree()
	for _, err := range errs {
		t.Error(err)
	}
	for dir, objs := range tr {
		t.Logf("%s: %d objects", dir, len(objs))
	}
}

// TestStrictDecoderRejectsMistakes guards the guard: the decoding used above must refuse what the apiserver's
// strict field validation refuses.
func TestStrictDecoderRejectsMistakes(t *testing.T) {
	const pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: i\n"
	if _, err := decodeStrict([]byte(pod)); err != nil {
		t.Fatalf("valid pod: %v", err)
	}
	for name, doc := range map[string]string{
		"unknown field":   pod + "    imagePullPolicyy: Always\n",
		"wrong case":      pod + "    ImagePullPolicy: Always\n",
		"duplicate field": pod + "    image: j\n",
		"unknown kind":    strings.Replace(pod, "kind: Pod", "kind: Podd", 1),
	} {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := decodeKustomization([]byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [a.yaml]\n")); err == nil {
		t.Error("kustomization with unknown field decoded without error")
	}
}

func TestKustomizations(t *testing.T) {
	files, err := yamlFiles()
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, f := range files {
		if path.Base(f) != "kustomization.yaml" {
			continue
		}
		dir := path.Dir(f)
		dirs = append(dirs, dir)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		k, err := decodeKustomization(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		listed := map[string]bool{}
		for _, r := range k.Resources {
			p := path.Join(dir, r)
			if listed[p] {
				t.Errorf("%s: %s listed twice", f, r)
			}
			listed[p] = true
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s: resource %s: %v", f, r, err)
			}
		}
		// Every manifest of the directory is applied, except examples (Secrets with placeholder values).
		for _, g := range files {
			if path.Dir(g) == dir && g != f && !strings.HasSuffix(g, ".example.yaml") && !listed[g] {
				t.Errorf("%s: %s is not listed in resources (name it *.example.yaml if it must not be applied)", f, g)
			}
		}
	}
	if !slices.Contains(dirs, "sidecar") || !slices.Contains(dirs, "nats-cluster") {
		t.Errorf("kustomizations found in %v, want sidecar and nats-cluster", dirs)
	}
}

// workload is a Deployment or StatefulSet.
type workload struct {
	kind, name, file string
	replicas         int32
	selector         *metav1.LabelSelector
	pod              *corev1.PodTemplateSpec
	sts              *appsv1.StatefulSet
}

func workloads(objs []object) []workload {
	var ws []workload
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{"Deployment", v.Name, o.file, ptrOr(v.Spec.Replicas, 1), v.Spec.Selector, &v.Spec.Template, nil})
		case *appsv1.StatefulSet:
			ws = append(ws, workload{"StatefulSet", v.Name, o.file, ptrOr(v.Spec.Replicas, 1), v.Spec.Selector, &v.Spec.Template, v})
		}
	}
	return ws
}

func (w workload) String() string { return fmt.Sprintf("%s %s/%s", w.file, w.kind, w.name) }

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func objectsOf[T runtime.Object](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func allContainers(p *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range p.InitContainers {
		cs = append(cs, &p.InitContainers[i])
	}
	for i := range p.Containers {
		cs = append(cs, &p.Containers[i])
	}
	return cs
}

func isRelay(c *corev1.Container) bool {
	repo, _, _ := strings.Cut(c.Image, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return path.Base(repo) == "sserelay"
}

func isNATS(c *corev1.Container) bool {
	return strings.HasPrefix(c.Image, "nats:") || strings.Contains(c.Image, "/nats:")
}

// resolvePort returns the number of a probe or Service target port on container c, 0 if it has none such.
func resolvePort(c *corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

func preStopSleep(c *corev1.Container) time.Duration {
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	return 0
}

func gracePeriod(p *corev1.PodSpec) time.Duration {
	return time.Duration(ptrOr(p.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds)) * time.Second
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// relayConfig returns the relay's settings from its args and environment ("" for a value from a Secret or
// field), checking that each one is a known flag of `sserelay serve`.
func relayConfig(t *testing.T, where string, c *corev1.Container) map[string]string {
	t.Helper()
	cfg := map[string]string{}
	if len(c.Command) > 0 {
		t.Errorf("%s: command overrides the image entrypoint; use args", where)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("%s: args %q do not start with serve", where, c.Args)
	}
	for i := 1; i < len(c.Args); i++ {
		arg := c.Args[i]
		name, value, hasValue := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !hasValue && name != "no-demo" && i+1 < len(c.Args) && !strings.HasPrefix(c.Args[i+1], "-") {
			i++ // --flag value
			value = c.Args[i]
		}
		if !strings.HasPrefix(arg, "--") || !slices.Contains(serveFlags, name) {
			t.Errorf("%s: arg %q is not a flag of sserelay serve", where, arg)
			continue
		}
		if _, dup := cfg[name]; dup {
			t.Errorf("%s: --%s is given twice", where, name)
		}
		cfg[name] = value
	}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "SSERELAY_") {
			continue
		}
		i := slices.IndexFunc(serveFlags, func(f string) bool { return envName(f) == e.Name })
		if i < 0 {
			t.Errorf("%s: env %s is not a flag of sserelay serve", where, e.Name)
			continue
		}
		if _, dup := cfg[serveFlags[i]]; dup {
			t.Errorf("%s: %s is set twice", where, e.Name)
		}
		cfg[serveFlags[i]] = e.Value
	}
	return cfg
}

func TestRelayPods(t *testing.T) {
	tr := load(t)
	for dir, objs := range tr {
		relays := 0
		for _, w := range workloads(objs) {
			spec := &w.pod.Spec
			for _, c := range allContainers(spec) {
				// Other containers must not set what looks like relay configuration either.
				for _, e := range c.Env {
					if !isRelay(c) && strings.HasPrefix(e.Name, "SSERELAY_") {
						t.Errorf("%s container %s: env %s belongs to the relay container", w, c.Name, e.Name)
					}
				}
				if !isRelay(c) {
					continue
				}
				relays++
				where := fmt.Sprintf("%s container %s", w, c.Name)
				checkRelay(t, where, w, c, relayConfig(t, where, c), objs)
			}
		}
		if relays == 0 {
			t.Errorf("%s: no sserelay container", dir)
		}
	}
}

func checkRelay(t *testing.T, where string, w workload, c *corev1.Container, cfg map[string]string, objs []object) {
	spec := &w.pod.Spec
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Errorf("%s: set enableServiceLinks: false (Services named sserelay* inject SSERELAY_* variables)", w)
	}

	// Listen address, declared port and probes must agree.
	host, portStr, err := net.SplitHostPort(cfg["listen"])
	if err != nil || isLoopback(host) {
		t.Errorf("%s: listen %q must be set to a non-loopback address such as 0.0.0.0:8080 (%v)", where, cfg["listen"], err)
	}
	port, _ := strconv.Atoi(portStr)
	if resolvePort(c, intstr.FromInt32(int32(port))) == 0 {
		t.Errorf("%s: listen port %d is not a declared containerPort", where, port)
	}
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		paths []string
	}{
		{"readinessProbe", c.ReadinessProbe, []string{"/readyz"}},
		{"livenessProbe", c.LivenessProbe, []string{"/healthz"}},
		{"startupProbe", c.StartupProbe, []string{"/healthz", "/readyz"}},
	} {
		if p.probe == nil {
			if p.kind != "startupProbe" {
				t.Errorf("%s: no %s", where, p.kind)
			}
			continue
		}
		g := p.probe.HTTPGet
		if g == nil {
			t.Errorf("%s: %s is not an httpGet", where, p.kind)
			continue
		}
		if !slices.Contains(p.paths, g.Path) {
			t.Errorf("%s: %s path %q, want one of %q", where, p.kind, g.Path, p.paths)
		}
		if got := resolvePort(c, g.Port); got == 0 || int(got) != port {
			t.Errorf("%s: %s port %s is not the listen port %d", where, p.kind, g.Port.String(), port)
		}
	}

	if f := cfg["log-format"]; f != "" && f != "json" && f != "text" {
		t.Errorf("%s: log-format %q, want text or json", where, f)
	}
	for _, name := range []string{"drain-timeout", "retention-max-age"} {
		if v := cfg[name]; v != "" {
			if _, err := time.ParseDuration(v); err != nil {
				t.Errorf("%s: %s: %v", where, name, err)
			}
		}
	}

	// The pod's grace period covers the relay's preStop, drain and exit; a native sidecar gets SIGTERM only after
	// the main containers have exited, so their preStop hooks come first.
	drain := defaultDrainTimeout
	if v := cfg["drain-timeout"]; v != "" {
		drain, _ = time.ParseDuration(v)
	}
	need := preStopSleep(c) + drain + exitMargin
	if ptrOr(c.RestartPolicy, "") == corev1.ContainerRestartPolicyAlways {
		var longest time.Duration
		for i := range spec.Containers {
			longest = max(longest, preStopSleep(&spec.Containers[i]))
		}
		need += longest
	}
	if got := gracePeriod(spec); got <= need {
		t.Errorf("%s: terminationGracePeriodSeconds %v, want more than %v (preStop + drain-timeout %v + %v)", w, got, need, drain, exitMargin)
	}

	// Secrets referenced by the relay exist in the directory (as the example manifest) with that key.
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		found := false
		for _, s := range objectsOf[*corev1.Secret](objs) {
			_, inData := s.Data[ref.Key]
			_, inString := s.StringData[ref.Key]
			found = found || (s.Name == ref.Name && (inData || inString))
		}
		if !found {
			t.Errorf("%s: env %s: no Secret %s with key %s in this directory", where, e.Name, ref.Name, ref.Key)
		}
	}

	if natsURL, external := cfg["nats-url"]; external && natsURL != "" {
		checkExternal(t, where, cfg, objs)
	} else {
		checkEmbedded(t, where, w, c, cfg)
	}
}

// checkEmbedded: the data dir is on a volume (the root filesystem is read-only), and the other containers of the
// pod reach the embedded NATS server on its loopback port.
func checkEmbedded(t *testing.T, where string, w workload, c *corev1.Container, cfg map[string]string) {
	dir := cfg["data-dir"]
	if m := mountOf(c, dir); !path.IsAbs(dir) || m == nil || m.ReadOnly {
		t.Errorf("%s: embedded mode needs data-dir set to an absolute path on a writable volume mount, got %q", where, dir)
	}
	listen, ok := cfg["nats-listen"]
	if !ok {
		listen = defaultNATSListen
	}
	for _, other := range allContainers(&w.pod.Spec) {
		if other == c {
			continue
		}
		for _, e := range other.Env {
			u, err := url.Parse(e.Value)
			if err != nil || u.Scheme != "nats" {
				continue
			}
			if listen == "off" || !isLoopback(u.Hostname()) || !strings.HasSuffix(listen, ":"+u.Port()) {
				t.Errorf("%s container %s: env %s=%s does not reach the embedded server (nats-listen %q)", w, other.Name, e.Name, e.Value, listen)
			}
		}
	}
}

// checkExternal: the NATS URLs name Services of this directory on one of their ports, and the stream does not
// ask for more replicas than there are NATS servers.
func checkExternal(t *testing.T, where string, cfg map[string]string, objs []object) {
	if v := cfg["nats-listen"]; v != "off" {
		t.Errorf("%s: external mode should set nats-listen off, got %q", where, v)
	}
	if v := cfg["data-dir"]; v != "" {
		t.Errorf("%s: data-dir %q is unused in external mode", where, v)
	}
	for raw := range strings.SplitSeq(cfg["nats-url"], ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") {
			t.Errorf("%s: nats-url %q: not a nats:// URL (%v)", where, raw, err)
			continue
		}
		svcName, _, _ := strings.Cut(u.Hostname(), ".")
		port, _ := strconv.Atoi(u.Port())
		if !slices.ContainsFunc(objectsOf[*corev1.Service](objs), func(s *corev1.Service) bool {
			return s.Name == svcName && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == port })
		}) {
			t.Errorf("%s: nats-url %q: no Service %s with port %d in this directory", where, raw, svcName, port)
		}
	}
	if v := cfg["stream-replicas"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5 {
			t.Errorf("%s: stream-replicas %q, want 1 to 5", where, v)
		}
		for _, w := range workloads(objs) {
			if w.sts != nil && slices.ContainsFunc(allContainers(&w.pod.Spec), isNATS) && n > int(w.replicas) {
				t.Errorf("%s: stream-replicas %d exceeds the %d servers of %s", where, n, w.replicas, w)
			}
		}
	}
}

func TestContainerHygiene(t *testing.T) {
	for _, objs := range load(t) {
		for _, w := range workloads(objs) {
			spec := &w.pod.Spec
			podNonRoot := spec.SecurityContext != nil && ptrOr(spec.SecurityContext.RunAsNonRoot, false)
			for _, c := range allContainers(spec) {
				where := fmt.Sprintf("%s container %s", w, c.Name)
				sc := c.SecurityContext
				if sc == nil {
					t.Errorf("%s: no securityContext", where)
					continue
				}
				if !podNonRoot && !ptrOr(sc.RunAsNonRoot, false) {
					t.Errorf("%s: runAsNonRoot is not set", where)
				}
				if !ptrOr(sc.ReadOnlyRootFilesystem, false) {
					t.Errorf("%s: readOnlyRootFilesystem is not set", where)
				}
				if ptrOr(sc.AllowPrivilegeEscalation, true) {
					t.Errorf("%s: allowPrivilegeEscalation is not false", where)
				}
				if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
					t.Errorf("%s: capabilities must drop ALL and add none", where)
				}
				r := c.Resources
				for _, q := range []struct {
					kind string
					list corev1.ResourceList
					name corev1.ResourceName
				}{{"requests", r.Requests, corev1.ResourceCPU}, {"requests", r.Requests, corev1.ResourceMemory}, {"limits", r.Limits, corev1.ResourceMemory}} {
					if _, ok := q.list[q.name]; !ok {
						t.Errorf("%s: no resources.%s.%s", where, q.kind, q.name)
					}
				}
				for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
					if probe != nil && probe.HTTPGet != nil && resolvePort(c, probe.HTTPGet.Port) == 0 {
						t.Errorf("%s: probe port %s is not a declared containerPort", where, probe.HTTPGet.Port.String())
					}
				}
			}
		}
	}
}

func TestSelectors(t *testing.T) {
	for dir, objs := range load(t) {
		ws := workloads(objs)
		selects := func(sel labels.Selector) []workload {
			var out []workload
			for _, w := range ws {
				if !sel.Empty() && sel.Matches(labels.Set(w.pod.Labels)) {
					out = append(out, w)
				}
			}
			return out
		}
		for _, w := range ws {
			sel, err := metav1.LabelSelectorAsSelector(w.selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
				t.Errorf("%s: selector %v does not match its pod template labels %v (%v)", w, w.selector, w.pod.Labels, err)
			}
			if w.sts != nil && !slices.ContainsFunc(objectsOf[*corev1.Service](objs), func(s *corev1.Service) bool {
				return s.Name == w.sts.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone
			}) {
				t.Errorf("%s: serviceName %q is not a headless Service in %s", w, w.sts.Spec.ServiceName, dir)
			}
		}
		for _, s := range objectsOf[*corev1.Service](objs) {
			matched := selects(labels.SelectorFromSet(s.Spec.Selector))
			if len(matched) == 0 {
				t.Errorf("%s: Service %s selector %v matches no pod template", dir, s.Name, s.Spec.Selector)
			}
			for _, w := range matched {
				for _, p := range s.Spec.Ports {
					target := p.TargetPort
					if target.Type == intstr.Int && target.IntVal == 0 {
						target = intstr.FromInt32(p.Port)
					}
					if !slices.ContainsFunc(allContainers(&w.pod.Spec), func(c *corev1.Container) bool { return resolvePort(c, target) != 0 }) {
						t.Errorf("%s: Service %s port %s: targetPort %s is not a container port of %s", dir, s.Name, p.Name, target.String(), w)
					}
				}
			}
		}
		for _, pdb := range objectsOf[*policyv1.PodDisruptionBudget](objs) {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil || len(selects(sel)) != 1 {
				t.Errorf("%s: PodDisruptionBudget %s must select exactly one workload's pods (%v)", dir, pdb.Name, err)
			}
		}
	}
}

// TestNATSServerConfig parses each NATS StatefulSet's config with nats-server's own parser (unknown fields and
// out-of-range values fail) and checks it against the StatefulSet.
func TestNATSServerConfig(t *testing.T) {
	found := 0
	for _, objs := range load(t) {
		for _, w := range workloads(objs) {
			for _, c := range allContainers(&w.pod.Spec) {
				if !isNATS(c) {
					continue
				}
				found++
				checkNATS(t, fmt.Sprintf("%s container %s", w, c.Name), w, c, objs)
			}
		}
	}
	if found == 0 {
		t.Error("no NATS server container found")
	}
}

func checkNATS(t *testing.T, where string, w workload, c *corev1.Container, objs []object) {
	if w.sts == nil {
		t.Errorf("%s: NATS servers with JetStream need a StatefulSet", where)
		return
	}
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Errorf("%s: no --config in args %q", where, c.Args)
		return
	}
	confPath := c.Args[i+1]
	mount := mountOf(c, confPath)
	var text string
	for _, v := range w.pod.Spec.Volumes {
		if mount == nil || v.Name != mount.Name || v.ConfigMap == nil {
			continue
		}
		for _, cm := range objectsOf[*corev1.ConfigMap](objs) {
			if cm.Name == v.ConfigMap.Name {
				text = cm.Data[path.Base(confPath)]
			}
		}
	}
	if text == "" {
		t.Errorf("%s: config %s is not a key of a ConfigMap mounted there", where, confPath)
		return
	}

	// Variables such as $POD_NAME come from the container's environment.
	for _, e := range c.Env {
		t.Setenv(e.Name, w.name+"-0")
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Errorf("%s: nats-server rejects %s: %v", where, confPath, err)
		return
	}

	grace := gracePeriod(&w.pod.Spec)
	switch {
	case opts.LameDuckDuration == 0:
		t.Errorf("%s: set lame_duck_duration (the 2m default exceeds the grace period)", where)
	case opts.LameDuckGracePeriod >= opts.LameDuckDuration:
		t.Errorf("%s: lame_duck_grace_period %v must be below lame_duck_duration %v", where, opts.LameDuckGracePeriod, opts.LameDuckDuration)
	case grace <= opts.LameDuckDuration+exitMargin:
		t.Errorf("%s: terminationGracePeriodSeconds %v, want more than lame_duck_duration %v + %v", where, grace, opts.LameDuckDuration, exitMargin)
	}
	if ps := c.Lifecycle; ps == nil || ps.PreStop == nil || ps.PreStop.Exec == nil ||
		!slices.ContainsFunc(ps.PreStop.Exec.Command, func(s string) bool { return strings.Contains(s, "ldm="+opts.PidFile) }) {
		t.Errorf("%s: preStop must signal ldm to the pid_file %q", where, opts.PidFile)
	}
	if m := mountOf(c, opts.PidFile); opts.PidFile == "" || m == nil || m.ReadOnly {
		t.Errorf("%s: pid_file %q is not on a writable volume", where, opts.PidFile)
	}

	for _, p := range []struct {
		name string
		port int
	}{{"client", opts.Port}, {"cluster", opts.Cluster.Port}, {"monitor", opts.HTTPPort}} {
		if got := resolvePort(c, intstr.FromString(p.name)); got == 0 || int(got) != p.port {
			t.Errorf("%s: containerPort %s is %d, config says %d", where, p.name, got, p.port)
		}
	}
	if len(opts.Routes) != int(w.replicas) {
		t.Errorf("%s: %d routes for %d replicas", where, len(opts.Routes), w.replicas)
	}
	for i, r := range opts.Routes {
		want := fmt.Sprintf("%s-%d.%s", w.name, i, w.sts.Spec.ServiceName)
		host := r.Hostname()
		if (host != want && !strings.HasPrefix(host, want+".")) || r.Port() != strconv.Itoa(opts.Cluster.Port) {
			t.Errorf("%s: route %s, want host %s port %d", where, r, want, opts.Cluster.Port)
		}
	}

	if !opts.JetStream {
		t.Errorf("%s: JetStream is not enabled", where)
	}
	storeMount := mountOf(c, opts.StoreDir)
	claim := slices.IndexFunc(w.sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool {
		return storeMount != nil && p.Name == storeMount.Name
	})
	if claim < 0 {
		t.Errorf("%s: store_dir %q is not on a volumeClaimTemplate", where, opts.StoreDir)
	} else if size := w.sts.Spec.VolumeClaimTemplates[claim].Spec.Resources.Requests[corev1.ResourceStorage]; opts.JetStreamMaxStore <= 0 || opts.JetStreamMaxStore >= size.Value() {
		t.Errorf("%s: max_file_store %d must be set below the volume's %s", where, opts.JetStreamMaxStore, size.String())
	}
	if limit, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || opts.JetStreamMaxMemory <= 0 || opts.JetStreamMaxMemory >= limit.Value() {
		t.Errorf("%s: max_memory_store %d must be set below the memory limit %s", where, opts.JetStreamMaxMemory, limit.String())
	}
}

// mountOf returns the volume mount that holds file p in container c, nil if none does.
func mountOf(c *corev1.Container, p string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (p == mp || strings.HasPrefix(p, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	return best
}
