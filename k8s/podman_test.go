package k8s_test

import (
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
	"strings"
	"sync"
	"testing"
	"time"
)

// The pod tests run the images for real under podman (a Debian package): the relay's image built from the
// root Dockerfile and the example app's, both from binaries built here (CI can pull no base image, so the
// prebuilt-binary form with the scratch base), and the sidecar Deployment under `podman kube play`.
//
// Podman needs the runc runtime on this machine kind (crun fails on hybrid cgroups) and
// `default_ulimits = []` under [containers] in /etc/containers/containers.conf; .ci/run sets both up.

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
// `podman build --build-arg BINARY=prebuilt --build-arg BASE=scratch` with the real Dockerfiles.
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
		if _, err := podman(t, tmp, "build", "--pull=never", "--build-arg", "BINARY=prebuilt", "--build-arg", "BASE=scratch",
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
