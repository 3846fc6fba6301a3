package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Linux reports process CPU time in clock ticks of 1/USER_HZ second; USER_HZ
// is 100 on every Linux architecture Go runs on.
const clockTick = 10 * time.Millisecond

// minCPUWindow is the shortest window whose CPU figures mean something: the
// ticks make any reading uncertain by a few hundredths of a second.
const minCPUWindow = 0.5 // seconds

// RaiseFileLimit raises the soft limit of open files to the hard limit and
// returns it. Child processes (a spawned relay) inherit it: the Go runtime
// raises its own limit at start too, but gives children the limit the
// process started with unless the program sets one itself.
func RaiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("read the open files limit: %w", err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("raise the open files limit to %d: %w", l.Max, err)
	}
	return l.Cur, nil
}

func openFilesLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}

// procStatus returns fields of /proc/PID/status, in kB for memory.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(k) == field {
			f := strings.Fields(string(v))
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// procRSS returns the resident set of a process in KiB.
func procRSS(pid int) (int64, error) { return procStatus(pid, "VmRSS") }

// procCPU returns the user and system CPU time of a process (all threads).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in parentheses may contain spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ppid(4) … utime(14) stime(15), so indexes 11 and 12 here.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// procOpenFilesLimit returns the soft limit of open files of a process.
func procOpenFilesLimit(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0], nil
			}
		}
	}
	return "", fmt.Errorf("/proc/%d/limits: no open files limit", pid)
}

// selfCPU returns this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU returns the busy and total CPU time of the machine, summed over
// its cores, from the first line of /proc/stat.
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var sum, idle uint64
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		sum += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return time.Duration(sum-idle) * clockTick, time.Duration(sum) * clockTick
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuSample is the CPU time of the relay, this process and the machine at
// one instant; the difference of two is a window.
type cpuSample struct {
	at          time.Time
	relay, self time.Duration
	busy, total time.Duration
	relayOK     bool
}

func sampleCPU(pid int) cpuSample {
	s := cpuSample{at: time.Now(), self: selfCPU()}
	s.busy, s.total = machineCPU()
	if pid > 0 {
		if c, err := procCPU(pid); err == nil {
			s.relay, s.relayOK = c, true
		}
	}
	return s
}

// cpuWindow is the CPU used during one phase, in seconds and in cores.
type cpuWindow struct {
	Seconds      float64 `json:"seconds"`                  // wall time of the window
	RelayCPU     float64 `json:"relay_cpu_seconds"`        // relay user+system time (0 when its pid is unknown)
	BenchCPU     float64 `json:"bench_cpu_seconds"`        // this load tool
	MachineBusy  float64 `json:"machine_busy_cpu_seconds"` // all processes
	OtherCPU     float64 `json:"other_cpu_seconds"`        // the rest: other processes sharing the machine
	RelayCores   float64 `json:"relay_cores"`
	BenchCores   float64 `json:"bench_cores"`
	OtherCores   float64 `json:"other_cores"`
	MachineCores float64 `json:"machine_cores"` // cores of the machine (busy + idle over the window)
	RelayKnown   bool    `json:"relay_known"`
}

func cpuBetween(a, b cpuSample) cpuWindow {
	w := cpuWindow{Seconds: b.at.Sub(a.at).Seconds(), RelayKnown: a.relayOK && b.relayOK}
	if w.RelayKnown {
		w.RelayCPU = (b.relay - a.relay).Seconds()
	}
	w.BenchCPU = (b.self - a.self).Seconds()
	w.MachineBusy = (b.busy - a.busy).Seconds()
	w.OtherCPU = max(0, w.MachineBusy-w.RelayCPU-w.BenchCPU)
	if w.Seconds > 0 {
		w.RelayCores = w.RelayCPU / w.Seconds
		w.BenchCores = w.BenchCPU / w.Seconds
		w.OtherCores = w.OtherCPU / w.Seconds
		w.MachineCores = (b.total - a.total).Seconds() / w.Seconds
	}
	return w
}
