package k8s_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

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

// load returns the decoded manifests by topology: a directory with a kustomization that no other kustomization
// uses as a base, with the objects of its own files and those of its bases (directories it lists as
// resources), as `kubectl apply -k` would apply them (plus the *.example.yaml Secrets of the directory).
func load(t *testing.T) tree {
	t.Helper()
	tr, errs := decodeTree()
	if len(errs) > 0 {
		t.Fatalf("%d manifest error(s), see TestManifestsDecodeStrictly; first: %v", len(errs), errs[0])
	}
	files, err := yamlFiles()
	if err != nil {
		t.Fatal(err)
	}
	bases := map[string][]string{} // kustomization dir → the directories it lists
	isBase := map[string]bool{}
	for _, f := range files {
		if path.Base(f) != "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		k, err := decodeKustomization(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		dir := path.Dir(f)
		bases[dir] = nil
		for _, r := range k.Resources {
			if st, err := os.Stat(path.Join(dir, r)); err == nil && st.IsDir() {
				b := path.Clean(path.Join(dir, r))
				bases[dir] = append(bases[dir], b)
				isBase[b] = true
			}
		}
	}
	var collect func(dir string, seen map[string]bool) []object
	collect = func(dir string, seen map[string]bool) []object {
		if seen[dir] {
			t.Fatalf("kustomization %s includes itself", dir)
		}
		seen[dir] = true
		objs := append([]object(nil), tr[dir]...)
		for _, b := range bases[dir] {
			objs = append(objs, collect(b, seen)...)
		}
		return objs
	}
	out := tree{}
	for dir := range bases {
		if !isBase[dir] {
			out[dir] = collect(dir, map[string]bool{})
		}
	}
	return out
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
	for _, want := range []string{"sidecar", "nats-cluster", "leaf-sidecar", "nats"} {
		if !slices.Contains(dirs, want) {
			t.Errorf("kustomizations found in %v, want %s among them", dirs, want)
		}
	}
}
