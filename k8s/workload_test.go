package k8s_test

import (
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

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
