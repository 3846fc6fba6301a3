package k8s_test

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

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
