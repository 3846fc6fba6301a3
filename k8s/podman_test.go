package k8s_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The pod tests run the images for real under podman (a Debian package): the relay's image built from the
// root Dockerfile and the example app's, both from binaries built here (CI can pull no base image, so the
// prebuilt-binary form with the scratch base), and the sidecar Deployment under `podman kube play`.
//
// Podman needs the runc runtime on this machine kind (crun fails on hybrid cgroups) and
// `default_ulimits = []` under [containers] in /etc/containers/containers.conf, and kube play needs catatonit
// for its pause image; .ci/run sets all of it up.

// suffix keeps the names of this run's images, containers and pods apart from other runs on the machine.
var suffix = fmt.Sprintf("e2e-%d", os.Getpid())

var (
	imagesOnce  sync.Once
	imagesErr   error
	relayImage  = "localhost/sserelay:" + suffix
	appImage    = "localhost/sserelay-example-app:" + suffix
	imagesBuilt []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, img := range imagesBuilt {
		_ = exec.Command("podman", "--runtime", "runc", "rmi", "-f", img).Run()
	}
	os.Exit(code)
}

// podmanPath finds podman ($SSERELAY_PODMAN or PATH): missing, the test is skipped, or fails when CI is set.
func podmanPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("SSERELAY_PODMAN")
	if p == "" {
		p = "podman"
	}
	path, err := exec.LookPath(p)
	if err != nil {
		msg := fmt.Sprintf("podman not found (%v): apt-get install podman runc", err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; skipping (set CI=1 to make this a failure)")
	}
	return path
}

// podman runs one podman command (with the runc runtime) in dir and returns its stdout.
func podman(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, podmanPath(t), append([]string{"--runtime", "runc"}, args...)...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

func mustPodman(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := podman(t, dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// buildImages builds both images once per run: a static binary each (CGO_ENABLED=0), then
// `podman build --target prebuilt --build-arg BASE=scratch` with the real Dockerfiles.
func buildImages(t *testing.T) {
	t.Helper()
	podmanPath(t)
	imagesOnce.Do(func() { imagesErr = doBuildImages(t) })
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
}

func doBuildImages(t *testing.T) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "sserelay-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, b := range []struct{ pkg, bin, dockerfile, image string }{
		{"github.com/sserelay/sserelay/cli/sserelay", "sserelay", filepath.Join(root, "Dockerfile"), relayImage},
		{"./example/app", "app", filepath.Join(root, "k8s", "example", "app", "Dockerfile"), appImage},
	} {
		ctxDir := filepath.Join(tmp, b.bin)
		if err := os.Mkdir(ctxDir, 0o755); err != nil {
			return err
		}
		build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, b.bin), b.pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
		start := time.Now()
		if _, err := podman(t, tmp, "build", "--pull=never", "--target", "prebuilt", "--build-arg", "BASE=scratch",
			"-f", b.dockerfile, "-t", b.image, ctxDir); err != nil {
			return err
		}
		imagesBuilt = append(imagesBuilt, b.image)
		t.Logf("built %s in %s", b.image, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// podmanLogs returns a container's output; podman logs replays the container's stderr on its own stderr.
func podmanLogs(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command(podmanPath(t), "--runtime", "runc", "logs", name).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("podman logs %s: %v\n%s", name, err, out)
	}
	return string(out)
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitHTTP polls url until it answers status or the deadline passes; logs says what to show on failure.
func waitHTTP(t *testing.T, url string, status int, timeout time.Duration, logs func() string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("GET %s: no %d within %s (last: %s)\n%s", url, status, timeout, last, logs())
}

// TestImage: the relay's image (scratch base, prebuilt binary) runs `serve` with nothing but a secret,
// as user 65532, on a read-only root filesystem (the store goes to the /data volume), answers /readyz,
// and stops cleanly on SIGTERM.
func TestImage(t *testing.T) {
	buildImages(t)
	var cfg struct {
		User       string
		Volumes    map[string]any
		Env        []string
		Entrypoint []string
		Cmd        []string
	}
	if err := json.Unmarshal([]byte(mustPodman(t, "", "image", "inspect", "--format", "{{json .Config}}", relayImage)), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.User != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532", cfg.User)
	}
	if _, ok := cfg.Volumes["/data"]; !ok || len(cfg.Volumes) != 1 {
		t.Errorf("image volumes %v, want exactly /data", cfg.Volumes)
	}
	for _, want := range []string{"SSERELAY_LISTEN=0.0.0.0:8080", "SSERELAY_DATA_DIR=/data"} {
		if !strings.Contains(strings.Join(cfg.Env, "\n"), want) {
			t.Errorf("image env %v lacks %s", cfg.Env, want)
		}
	}
	if strings.Join(cfg.Cmd, " ") != "serve" {
		t.Errorf("image cmd %v, want serve", cfg.Cmd)
	}

	name := "sserelay-image-" + suffix
	port := freeLoopbackPort(t)
	mustPodman(t, "", "run", "-d", "--name", name, "--read-only", "-p", fmt.Sprintf("127.0.0.1:%d:8080", port),
		"-e", "SSERELAY_JWT_SECRET=image-test-secret", relayImage)
	t.Cleanup(func() { _, _ = podman(t, "", "rm", "-f", "-t", "0", name) })
	logs := func() string { return podmanLogs(t, name) }
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), http.StatusOK, time.Minute, logs)

	if user := mustPodman(t, "", "top", name, "user"); !strings.Contains(user, "65532") {
		t.Errorf("podman top: the relay runs as %q, want 65532", user)
	}
	// SIGTERM: the relay drains and exits 0 within its drain timeout plus a few seconds.
	mustPodman(t, "", "stop", "-t", "20", name)
	if code := mustPodman(t, "", "inspect", "--format", "{{.State.ExitCode}}", name); code != "0" {
		t.Errorf("exit code after SIGTERM %s, want 0\n%s", code, logs())
	}
	if l := logs(); !strings.Contains(l, "data_dir=/data") {
		t.Errorf("the store is not in /data:\n%s", l)
	}
}

// podmanDeployment turns the sidecar Deployment into what podman 4.3's `kube play` can run, changing only
// what podman lacks or what the test must set:
//   - native sidecars: podman runs an init container with restartPolicy: Always to completion before the
//     app starts, so the relay would block the pod; it becomes the first of the regular containers (the
//     app retries its NATS connection until the relay is up, as an app should anyway);
//   - Secrets: secretKeyRef values become literal values (kube play reads podman secrets, not the Secret
//     objects of a cluster);
//   - resourceFieldRef (GOMEMLIMIT from the memory limit) is dropped;
//   - images become the ones built here, and the HTTP ports get host ports on 127.0.0.1.
func podmanDeployment(t *testing.T, file, name string, secret string, hostPorts map[string]int32) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := decodeStrict(data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	d, ok := obj.(*appsv1.Deployment)
	if !ok {
		t.Fatalf("%s: %T, want a Deployment", file, obj)
	}
	d.Name = name
	spec := &d.Spec.Template.Spec
	var inits []corev1.Container
	var sidecars []corev1.Container
	for _, c := range spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			c.RestartPolicy = nil
			sidecars = append(sidecars, c)
		} else {
			inits = append(inits, c)
		}
	}
	if len(sidecars) == 0 {
		t.Fatalf("%s: no native sidecar: the transformation has nothing to move", file)
	}
	spec.InitContainers = inits
	spec.Containers = append(sidecars, spec.Containers...)
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if isRelay(c) {
			c.Image = relayImage
		} else {
			c.Image = appImage
		}
		var env []corev1.EnvVar
		for _, e := range c.Env {
			switch {
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				env = append(env, corev1.EnvVar{Name: e.Name, Value: secret})
			case e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil:
			default:
				env = append(env, e)
			}
		}
		c.Env = env
		for port, host := range hostPorts {
			if c.Name != strings.SplitN(port, "/", 2)[0] {
				continue
			}
			p := resolveNamedPort(t, c, strings.SplitN(port, "/", 2)[1])
			c.Ports = append(c.Ports[:0:0], corev1.ContainerPort{Name: "http", ContainerPort: p, HostPort: host, HostIP: "127.0.0.1", Protocol: corev1.ProtocolTCP})
		}
	}
	out, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// resolveNamedPort returns the container port named name, or the number name itself.
func resolveNamedPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	n, err := strconv.Atoi(name)
	if err != nil {
		t.Fatalf("container %s has no port %s", c.Name, name)
	}
	return int32(n)
}

// TestKubePlaySidecar runs k8s/sidecar's Deployment under `podman kube play`: the relay and the example app
// in one pod, sharing its loopback. A browser's token comes from the app, its stream from the relay, and an
// event the app publishes to 127.0.0.1:4222 reaches the stream with the id the app was told.
func TestKubePlaySidecar(t *testing.T) {
	buildImages(t)
	const secret = "kube-play-secret-of-at-least-32-bytes"
	relayPort, appPort := freeLoopbackPort(t), freeLoopbackPort(t)
	name := "sserelay-sidecar-" + suffix
	manifest := podmanDeployment(t, "sidecar/deployment.yaml", name, secret,
		map[string]int32{"sserelay/http": int32(relayPort), "app/3000": int32(appPort)})
	// kube play builds an image from a directory named like an image, if there is one: run it elsewhere.
	dir := t.TempDir()
	file := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(file, manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	mustPodman(t, dir, "kube", "play", file)
	pod := name + "-pod-0"
	t.Cleanup(func() {
		if _, err := podman(t, dir, "kube", "down", file); err != nil {
			t.Log(err)
		}
	})
	logs := func() string {
		var b strings.Builder
		for _, c := range []string{"sserelay", "app"} {
			fmt.Fprintf(&b, "---- %s:\n%s\n", c, podmanLogs(t, pod+"-"+c))
		}
		return b.String()
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", relayPort)
	waitHTTP(t, base+"/readyz", http.StatusOK, time.Minute, logs)
	appBase := fmt.Sprintf("http://127.0.0.1:%d", appPort)
	waitHTTP(t, appBase+"/healthz", http.StatusOK, time.Minute, logs)

	var tok struct{ Token string }
	getJSON(t, appBase+"/token?user=alice", &tok)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events?app_id=example", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, b)
	}
	events := make(chan sseEvent, 16)
	go readSSE(resp.Body, events)
	if ev := <-events; ev.event != "sserelay.connected" {
		t.Fatalf("first event %+v, want sserelay.connected", ev)
	}

	presp, err := http.Post(appBase+"/say?user=alice", "text/plain", strings.NewReader("hello from the app container"))
	if err != nil {
		t.Fatal(err)
	}
	var said struct{ Seq uint64 }
	err = json.NewDecoder(presp.Body).Decode(&said)
	presp.Body.Close()
	if presp.StatusCode != http.StatusOK || err != nil || said.Seq == 0 {
		t.Fatalf("POST /say: %d %v %+v\n%s", presp.StatusCode, err, said, logs())
	}
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatalf("stream ended before the event\n%s", logs())
		}
		if ev.id != strconv.FormatUint(said.Seq, 10) || ev.data != "hello from the app container" {
			t.Errorf("got %+v, want id %d with the app's data", ev, said.Seq)
		}
	case <-ctx.Done():
		t.Fatalf("no event within a minute\n%s", logs())
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

type sseEvent struct{ id, event, data string }

// readSSE parses an SSE body into events (comments and retry fields skipped) until it ends.
func readSSE(r io.Reader, out chan<- sseEvent) {
	defer close(out)
	sc := bufio.NewScanner(r)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil || ev.event != "" {
				ev.data = strings.Join(data, "\n")
				out <- ev
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
}
