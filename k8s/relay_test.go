package k8s_test

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// relayConfig returns the relay's settings from its args and environment ("" for a value from a Secret or
// field), checking that each one is a known flag of `sserelay serve` and parses as serve would parse it.
func relayConfig(t *testing.T, where string, c *corev1.Container) map[string]string {
	t.Helper()
	byName, byEnv := serveFlags()
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
		f, known := byName[name]
		if !hasValue && !f.boolean && i+1 < len(c.Args) && !strings.HasPrefix(c.Args[i+1], "-") {
			i++ // --flag value
			value = c.Args[i]
		}
		if !strings.HasPrefix(arg, "--") || !known {
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
		f, ok := byEnv[e.Name]
		if !ok {
			t.Errorf("%s: env %s is not a flag of sserelay serve", where, e.Name)
			continue
		}
		if _, dup := cfg[f.name]; dup {
			t.Errorf("%s: %s is set twice", where, e.Name)
		}
		cfg[f.name] = e.Value
	}
	parseServe(t, where, c)
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
			t.Errorf("%s: no %s", where, p.kind)
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

	// Start-up waits for NATS (and the stream, the consumer) for up to --start-timeout, while the HTTP port takes
	// connections but answers none: without a startup probe that outlasts it, the liveness probe kills the relay
	// it should wait for.
	if sp := c.StartupProbe; sp != nil {
		start, _ := time.ParseDuration(serveDefault(t, "start-timeout"))
		if v := cfg["start-timeout"]; v != "" {
			start, _ = time.ParseDuration(v)
		}
		period, failures := sp.PeriodSeconds, sp.FailureThreshold
		if period == 0 {
			period = 10 // Kubernetes' defaults
		}
		if failures == 0 {
			failures = 3
		}
		budget := time.Duration(period*failures) * time.Second
		if budget <= start {
			t.Errorf("%s: startupProbe allows %v, want more than --start-timeout %v", where, budget, start)
		}
	}

	if f := cfg["log-format"]; f != "" && f != "json" && f != "text" {
		t.Errorf("%s: log-format %q, want text or json", where, f)
	}

	// The pod's grace period covers the relay's preStop, drain and exit; a native sidecar gets SIGTERM only after
	// the main containers have exited, so their preStop hooks come first.
	drain, _ := time.ParseDuration(serveDefault(t, "drain-timeout"))
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

	switch {
	case cfg["leaf-remote"] != "":
		checkLeaf(t, where, w, c, cfg, objs)
	case cfg["nats-url"] != "":
		checkExternal(t, where, cfg, objs)
	default:
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
	checkAppsReachEmbedded(t, w, c, cfg)
}

// checkAppsReachEmbedded: the other containers of the pod reach the embedded server on its loopback port.
func checkAppsReachEmbedded(t *testing.T, w workload, c *corev1.Container, cfg map[string]string) {
	listen, ok := cfg["nats-listen"]
	if !ok {
		listen = serveDefault(t, "nats-listen")
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
	checkReplicas(t, where, cfg, objs)
}

// checkReplicas: the stream does not ask for more replicas than there are NATS servers.
func checkReplicas(t *testing.T, where string, cfg map[string]string, objs []object) {
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

// checkLeaf: the embedded server is a leaf node of a NATS StatefulSet of this topology. The leaf URLs name a
// Service port that leads to the servers' leaf node port, the relay's JetStream domain is the servers' own (the
// leaf has no JetStream: without the domain the stream would not be found), the pod's other containers reach
// the embedded server on loopback, and nothing asks for a store the leaf does not keep.
func checkLeaf(t *testing.T, where string, w workload, c *corev1.Container, cfg map[string]string, objs []object) {
	if v := cfg["nats-url"]; v != "" {
		t.Errorf("%s: nats-url %q with leaf-remote: sserelay serve refuses that", where, v)
	}
	if v := cfg["data-dir"]; v != "" {
		t.Errorf("%s: data-dir %q is unused by a leaf node (it keeps no store)", where, v)
	}
	checkAppsReachEmbedded(t, w, c, cfg)
	checkReplicas(t, where, cfg, objs)
	var hubs []*server.Options
	for _, hw := range workloads(objs) {
		for _, nc := range allContainers(&hw.pod.Spec) {
			if isNATS(nc) {
				if opts, _ := natsConfig(t, hw, nc, objs); opts != nil {
					hubs = append(hubs, opts)
				}
			}
		}
	}
	if len(hubs) == 0 {
		t.Errorf("%s: leaf-remote, but no NATS server in this topology", where)
		return
	}
	for raw := range strings.SplitSeq(cfg["leaf-remote"], ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "nats-leaf" && u.Scheme != "tls") {
			t.Errorf("%s: leaf-remote %q: not a nats-leaf:// URL (%v)", where, raw, err)
			continue
		}
		svcName, _, _ := strings.Cut(u.Hostname(), ".")
		port, _ := strconv.Atoi(u.Port())
		reaches := false
		for _, s := range objectsOf[*corev1.Service](objs) {
			for _, sp := range s.Spec.Ports {
				if s.Name != svcName || int(sp.Port) != port {
					continue
				}
				for _, hw := range workloads(objs) {
					if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(hw.pod.Labels)) {
						continue
					}
					for _, nc := range allContainers(&hw.pod.Spec) {
						if !isNATS(nc) {
							continue
						}
						if opts, _ := natsConfig(t, hw, nc, objs); opts != nil && opts.LeafNode.Port != 0 && int(resolvePort(nc, sp.TargetPort)) == opts.LeafNode.Port {
							reaches = true
						}
					}
				}
			}
		}
		if !reaches {
			t.Errorf("%s: leaf-remote %q: no Service %s port %d leading to a NATS server's leafnodes port", where, raw, svcName, port)
		}
	}
	domain := cfg["js-domain"]
	if !slices.ContainsFunc(hubs, func(o *server.Options) bool { return o.JetStreamDomain != "" && o.JetStreamDomain == domain }) {
		t.Errorf("%s: js-domain %q is not the JetStream domain of the hub's servers", where, domain)
	}
}
