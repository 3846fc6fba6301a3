package k8s_test

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

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
	opts, err := natsConfig(t, w, c, objs)
	if err != nil {
		t.Errorf("%s: %v", where, err)
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
	}{{"client", opts.Port}, {"cluster", opts.Cluster.Port}, {"monitor", opts.HTTPPort}, {"leafnodes", opts.LeafNode.Port}} {
		if p.port == 0 && p.name == "leafnodes" {
			continue // no leaf node port configured; the containerPort may be declared for another topology
		}
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

// natsConfig parses the nats.conf that NATS container c of w runs with (its --config, a key of a ConfigMap of
// objs mounted there) with nats-server's own parser.
func natsConfig(t *testing.T, w workload, c *corev1.Container, objs []object) (*server.Options, error) {
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		return nil, fmt.Errorf("no --config in args %q", c.Args)
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
		return nil, fmt.Errorf("config %s is not a key of a ConfigMap mounted there", confPath)
	}
	// Variables such as $POD_NAME come from the container's environment.
	for _, e := range c.Env {
		t.Setenv(e.Name, w.name+"-0")
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		return nil, fmt.Errorf("nats-server rejects %s: %w", confPath, err)
	}
	return opts, nil
}
