package k8s_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sserelay/sserelay/test/testkit"
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

// bins holds the programs built for this run.
var bins *testkit.Binaries

func TestMain(m *testing.M) {
	code := testkit.RunTests(m, &bins)
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
		{testkit.RelayPkg, "sserelay", filepath.Join(root, "Dockerfile"), relayImage},
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
		// --layers=false: no cached intermediate images, so that removing the tagged one at the end
		// leaves nothing behind (with layers, every run left an untagged image per build).
		if _, err := podman(t, tmp, "build", "--pull=never", "--layers=false", "--target", "prebuilt", "--build-arg", "BASE=scratch",
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
	port := testkit.FreePort(t)
	mustPodman(t, "", "run", "-d", "--name", name, "--read-only", "-p", fmt.Sprintf("127.0.0.1:%d:8080", port),
		"-e", "SSERELAY_JWT_SECRET=image-test-secret", relayImage)
	t.Cleanup(func() { _, _ = podman(t, "", "rm", "-f", "-v", "-t", "0", name) }) // -v: and its /data volume
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
//   - images become the ones built here, the HTTP ports get host ports on 127.0.0.1, relayEnv overrides
//     the relay's variables (the hub's address), and there is one replica.
func podmanDeployment(t *testing.T, file, name string, secret string, hostPorts map[string]int32, relayEnv map[string]string) []byte {
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
	one := int32(1)
	d.Spec.Replicas = &one // kube play runs one pod per Deployment
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
		if isRelay(c) {
			for i := range env {
				if v, ok := relayEnv[env[i].Name]; ok {
					env[i].Value = v
				}
			}
		}
		c.Env = env
		var ports []corev1.ContainerPort
		for port, host := range hostPorts {
			cname, pname, _ := strings.Cut(port, "/")
			if c.Name != cname {
				continue
			}
			p := resolveNamedPort(t, c, pname)
			ports = append(ports, corev1.ContainerPort{Name: "p" + strconv.Itoa(int(p)), ContainerPort: p, HostPort: host, HostIP: "127.0.0.1", Protocol: corev1.ProtocolTCP})
		}
		if ports != nil {
			c.Ports = ports
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
	p := playPod(t, "sidecar/deployment.yaml", "sserelay-sidecar-"+suffix, nil)
	events := p.stream(t, p.token(t, "alice"))
	seq := p.say(t, "alice", "hello from the app container")
	p.expect(t, events, seq, "hello from the app container")
	// Metrics on their own port only: the public one (what the Service exposes) has none.
	waitHTTP(t, p.metrics+"/metrics", http.StatusOK, time.Minute, p.logs)
	waitHTTP(t, p.relay+"/metrics", http.StatusNotFound, time.Minute, p.logs)
}

// playedPod is a pod of a manifest under kube play, its relay's and app's HTTP ports on 127.0.0.1.
type playedPod struct {
	name, relay, app, metrics string // pod name, relay, app and relay metrics base URLs
	logs                      func() string
}

const podSecret = "kube-play-secret-of-at-least-32-bytes"

// playPod runs one pod of the Deployment in file (see podmanDeployment) and waits until its relay is ready
// and its app answers; kube down removes it at cleanup.
func playPod(t *testing.T, file, name string, relayEnv map[string]string) *playedPod {
	t.Helper()
	relayPort, appPort, metricsPort := testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t)
	manifest := podmanDeployment(t, file, name, podSecret,
		map[string]int32{"sserelay/http": int32(relayPort), "sserelay/metrics": int32(metricsPort), "app/3000": int32(appPort)}, relayEnv)
	// kube play builds an image from a directory named like an image, if there is one: run it elsewhere.
	dir := t.TempDir()
	pf := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(pf, manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	mustPodman(t, dir, "kube", "play", pf)
	pod := name + "-pod-0"
	t.Cleanup(func() {
		// kube down (podman 4.3) leaves the pod's volumes (emptyDir, the image's /data): remove them by name.
		var volumes []string
		for _, c := range []string{"sserelay", "app"} {
			out, _ := podman(t, "", "inspect", "--format", "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}", pod+"-"+c)
			volumes = append(volumes, strings.Fields(out)...)
		}
		if _, err := podman(t, dir, "kube", "down", pf); err != nil {
			t.Log(err)
		}
		for _, v := range volumes {
			if _, err := podman(t, "", "volume", "rm", v); err != nil {
				t.Log(err)
			}
		}
	})
	p := &playedPod{name: pod, relay: fmt.Sprintf("http://127.0.0.1:%d", relayPort), app: fmt.Sprintf("http://127.0.0.1:%d", appPort),
		metrics: fmt.Sprintf("http://127.0.0.1:%d", metricsPort)}
	p.logs = func() string {
		var b strings.Builder
		for _, c := range []string{"sserelay", "app"} {
			fmt.Fprintf(&b, "---- %s %s:\n%s\n", p.name, c, podmanLogs(t, p.name+"-"+c))
		}
		return b.String()
	}
	waitHTTP(t, p.relay+"/readyz", http.StatusOK, time.Minute, p.logs)
	waitHTTP(t, p.app+"/healthz", http.StatusOK, time.Minute, p.logs)
	return p
}

// token asks the pod's app for a user's token.
func (p *playedPod) token(t *testing.T, user string) string {
	t.Helper()
	var tok struct{ Token string }
	getJSON(t, p.app+"/token?user="+user, &tok)
	return tok.Token
}

// stream opens a stream on the pod's relay and returns its events after sserelay.connected.
func (p *playedPod) stream(t *testing.T, token string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.relay+"/v1/events?app_id=example", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, b)
	}
	events := make(chan sseEvent, 16)
	done := make(chan struct{})
	go func() { defer close(done); readSSE(resp.Body, events) }()
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	select {
	case ev := <-events:
		if ev.event != "sserelay.connected" {
			t.Fatalf("first event %+v, want sserelay.connected", ev)
		}
	case <-time.After(time.Minute):
		t.Fatalf("no sserelay.connected within a minute\n%s", p.logs())
	}
	return events
}

// say makes the pod's app publish data to user's feed over its 127.0.0.1:4222 and returns the id.
func (p *playedPod) say(t *testing.T, user, data string) uint64 {
	t.Helper()
	resp, err := http.Post(p.app+"/say?user="+user, "text/plain", strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var said struct{ Seq uint64 }
	err = json.NewDecoder(resp.Body).Decode(&said)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || said.Seq == 0 {
		t.Fatalf("POST /say: %d %v %+v\n%s", resp.StatusCode, err, said, p.logs())
	}
	return said.Seq
}

// expect waits for the next event of a stream of p and checks its id and data.
func (p *playedPod) expect(t *testing.T, events <-chan sseEvent, seq uint64, data string) {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatalf("stream on %s ended before event %d\n%s", p.name, seq, p.logs())
		}
		if ev.id != strconv.FormatUint(seq, 10) || ev.data != data {
			t.Errorf("stream on %s: got %+v, want id %d data %q", p.name, ev, seq, data)
		}
	case <-time.After(time.Minute):
		t.Fatalf("stream on %s: no event %d within a minute\n%s", p.name, seq, p.logs())
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
