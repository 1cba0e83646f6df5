package testbed

// Child processes: every one is started in its own process group, with its output in a log file,
// and killed when the command that started it ends, whichever way it ends.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Supervisor starts and tracks child processes.
type Supervisor struct {
	mu    sync.Mutex
	procs []*Proc
}

// Proc is one child process, restartable with the same command line.
type Proc struct {
	Name string
	Log  string // its log file (every start appends to it)
	bin  string
	args []string
	env  []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current run exits
	asked   bool          // the caller stopped or killed it
	exitErr error
	exits   []string // exits nobody asked for
}

// ChildEnv is the environment every child starts from: nothing of the caller's own (a NATS_URL in
// the caller's shell must not leak into a run), plus PATH and HOME.
func ChildEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, extra...)
}

// Start runs bin with args and env, its output appended to log.
func (s *Supervisor) Start(name, log string, env []string, bin string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, Log: log, bin: bin, args: args, env: env}
	if err := p.start(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

func (p *Proc) start() error {
	if err := os.MkdirAll(filepath.Dir(p.Log), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== testbed: start %s at %s\n", p.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = p.env, f, f
	// Its own process group, so a kill reaches everything it started; and killed if the caller
	// itself dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.asked, p.exitErr = cmd, done, false, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exitErr = err
		if !p.asked {
			p.exits = append(p.exits, fmt.Sprintf("%s (%v) at %s", p.Name, exitText(err), time.Now().Format("15:04:05")))
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Restart starts the process again after it stopped.
func (p *Proc) Restart() error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	default:
		return fmt.Errorf("restart %s: it is still running", p.Name)
	}
	return p.start()
}

// Kill sends SIGKILL to the process group and waits for the process to be gone.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to grace, then kills.
func (p *Proc) Stop(grace time.Duration) { p.signal(syscall.SIGTERM, grace) }

func (p *Proc) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	select {
	case <-done:
		p.mu.Unlock()
		return
	default:
	}
	p.asked = true
	p.mu.Unlock()
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	if sig != syscall.SIGKILL {
		select {
		case <-done:
			return
		case <-time.After(grace):
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	<-done
}

// Pid is the process id of the current run (0 before the first start).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// UnaskedExits lists every time the process exited without being asked to.
func (p *Proc) UnaskedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.exits)
}

// ForgetExits clears the unasked exits seen so far (the caller handled them).
func (p *Proc) ForgetExits() {
	p.mu.Lock()
	p.exits = nil
	p.mu.Unlock()
}

// Exits lists the unasked exits of every process started.
func (s *Supervisor) Exits() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.procs {
		out = append(out, p.UnaskedExits()...)
	}
	return out
}

// StopAll stops every process, the last started first, and forgets them.
func (s *Supervisor) StopAll(grace time.Duration) {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range slices.Backward(procs) {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(grace) }()
	}
	wg.Wait()
}

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitFor polls cond every interval until it holds, ctx ends or timeout passes.
func WaitFor(ctx context.Context, timeout, interval time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Sleep waits d, or less when ctx ends. It shapes faults and paces a load; it never stands in
// for waiting on a condition.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Healthy reports whether url answers 200.
func Healthy(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitHealthy waits until url answers 200, or p exits.
func WaitHealthy(ctx context.Context, p *Proc, url string, timeout time.Duration) error {
	err := WaitFor(ctx, timeout, 100*time.Millisecond, func() bool { return !p.Running() || Healthy(ctx, url) })
	if err == nil && !p.Running() {
		err = errors.New("it exited")
	}
	if err != nil {
		return fmt.Errorf("%s did not become healthy at %s: %w (log: %s)", p.Name, url, err, p.Log)
	}
	return nil
}

// Pick returns the items of all named in names (comma-separated), in the order named; an unknown
// name is an error naming it.
func Pick[T any](all []T, names string, name func(T) string) ([]T, error) {
	var picked []T
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		i := slices.IndexFunc(all, func(t T) bool { return name(t) == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown scenario %q (-list lists them)", n)
		}
		picked = append(picked, all[i])
	}
	return picked, nil
}
