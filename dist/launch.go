package dist

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LaunchSpec is a one-host run of one child process per GPU.
type LaunchSpec struct {
	Exe  string   // the program (os.Executable)
	Args []string // its arguments, the same for every rank
	// GPUs are the devices of the children, one each, pinned with CUDA_VISIBLE_DEVICES
	// (each child then sees its GPU as cuda:0); nil: Procs children, no pinning.
	GPUs  []int
	Procs int
	// Nodes and NodeRank place this host among several (torchrun's --nnodes, --node-rank):
	// its children are ranks NodeRank·n … NodeRank·n + n − 1 of Nodes·n. Zero Nodes: one.
	Nodes, NodeRank int
	// MasterAddr is rank 0's rendezvous (default on one host: 127.0.0.1 and a free port).
	MasterAddr string
	Timeout    time.Duration // how long the others may take to stop after a child failed
	// Stdout receives rank 0's standard output; Stderr every rank's standard error, the lines
	// of rank N > 0 prefixed "[rank N] ".
	Stdout, Stderr io.Writer
	// Env is added to every child's environment (after os.Environ).
	Env []string
}

// Launch runs the children until all have exited. SIGINT, SIGTERM and SIGHUP are forwarded to
// every child (each runs in its own process group, so a terminal's Ctrl-C reaches them once,
// through the launcher). When a child exits non-zero, the others are given Timeout to stop
// (their rendezvous tells them), then killed; the error names the first rank that failed on
// its own (not with status ExitPeer) and the last line it wrote to standard error.
func Launch(ctx context.Context, s LaunchSpec) error {
	n := s.Procs
	if s.GPUs != nil {
		n = len(s.GPUs)
	}
	if n < 1 {
		return errors.New("launch: no processes to start")
	}
	nodes := max(1, s.Nodes)
	if s.NodeRank < 0 || s.NodeRank >= nodes {
		return fmt.Errorf("--node-rank %d: want 0 to %d for --nnodes %d", s.NodeRank, nodes-1, nodes)
	}
	addr := s.MasterAddr
	if addr == "" && nodes > 1 {
		return fmt.Errorf("--nnodes %d needs --master-addr host:port, the first host's address and a free port", nodes)
	}
	if addr == "" {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("launch: choosing the rendezvous port: %w", err)
		}
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--master-addr %q: want host:port", addr)
	}
	if s.Stderr != nil {
		s.Stderr = &lockedWriter{w: s.Stderr}
	}
	visible := strings.Split(os.Getenv("CUDA_VISIBLE_DEVICES"), ",")
	kids := make([]*child, n)
	for r := range kids {
		env := append(os.Environ(), s.Env...)
		local := r
		if s.GPUs != nil {
			// The child sees its GPU alone, as device 0; a GPU numbers the devices this
			// process sees, so under CUDA_VISIBLE_DEVICES it is an index into that list.
			gpu := strconv.Itoa(s.GPUs[r])
			if os.Getenv("CUDA_VISIBLE_DEVICES") != "" && s.GPUs[r] < len(visible) {
				gpu = strings.TrimSpace(visible[s.GPUs[r]])
			}
			env, local = append(env, "CUDA_VISIBLE_DEVICES="+gpu), 0
		}
		env = append(env, "RANK="+strconv.Itoa(s.NodeRank*n+r), "WORLD_SIZE="+strconv.Itoa(nodes*n), "LOCAL_RANK="+strconv.Itoa(local),
			"LOCAL_WORLD_SIZE="+strconv.Itoa(n), "MASTER_ADDR="+host, "MASTER_PORT="+port)
		kids[r] = &child{rank: s.NodeRank*n + r}
		if err := kids[r].start(s, env); err != nil {
			for _, k := range kids[:r] {
				k.kill()
			}
			return fmt.Errorf("launch: rank %d: %w", r, err)
		}
	}
	return watch(ctx, kids, s.Timeout)
}

// child is one launched rank.
type child struct {
	rank int
	cmd  *exec.Cmd
	mu   sync.Mutex
	last string // its last line on standard error
	out  sync.WaitGroup
}

func (c *child) start(s LaunchSpec, env []string) error {
	c.cmd = exec.Command(s.Exe, s.Args...)
	c.cmd.Env = env
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.rank == 0 {
		c.cmd.Stdout = s.Stdout
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := c.cmd.Start(); err != nil {
		return err
	}
	c.out.Add(1)
	go func() {
		defer c.out.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if t := strings.TrimSpace(line); t != "" {
				c.mu.Lock()
				c.last = t
				c.mu.Unlock()
			}
			if s.Stderr != nil {
				if c.rank > 0 {
					line = fmt.Sprintf("[rank %d] %s", c.rank, line)
				}
				io.WriteString(s.Stderr, line+"\n")
			}
		}
	}()
	return nil
}

func (c *child) signal(sig syscall.Signal) { syscall.Kill(-c.cmd.Process.Pid, sig) }
func (c *child) kill()                     { c.signal(syscall.SIGKILL); c.cmd.Wait() }

type exit struct {
	k   *child
	err error
}

// watch waits for the children, forwarding signals, and stops them all after a failure.
func watch(ctx context.Context, kids []*child, timeout time.Duration) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	exits := make(chan exit, len(kids))
	for _, k := range kids {
		go func() {
			k.out.Wait() // its standard error is read to the end before Wait closes the pipe
			exits <- exit{k, k.cmd.Wait()}
		}()
	}
	var first, firstPeer error // the first failure; the first of a rank another took down
	var deadline <-chan time.Time
	killed := false
	for left := len(kids); left > 0; {
		select {
		case sig := <-sigs:
			for _, k := range kids {
				k.signal(sig.(syscall.Signal))
			}
		case <-ctx.Done():
			ctx = context.Background() // forward once
			for _, k := range kids {
				k.signal(syscall.SIGTERM)
			}
		case e := <-exits:
			left--
			if e.err == nil {
				continue
			}
			if first == nil && firstPeer == nil {
				deadline = time.After(timeout)
			}
			var ee *exec.ExitError
			switch {
			case errors.As(e.err, &ee) && ee.ExitCode() == ExitPeer:
				if firstPeer == nil {
					firstPeer = e.k.peerFailure()
				}
			case killed:
				// Killed by the launcher after the deadline: another's failure is the story.
				if firstPeer == nil {
					firstPeer = fmt.Errorf("rank %d did not stop within %v of a failure and was killed", e.k.rank, timeout)
				}
			case first == nil:
				first = e.k.failure(e.err)
			}
		case <-deadline:
			for _, k := range kids {
				k.signal(syscall.SIGKILL)
			}
			deadline, killed = nil, true
		}
	}
	if first == nil {
		return firstPeer
	}
	return first
}

// failure is the one-line error of a child that exited with err.
func (c *child) failure(err error) error {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	how := err.Error()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			how = "was killed by " + ws.Signal().String()
		} else {
			how = fmt.Sprintf("exited with status %d", ee.ExitCode())
		}
	}
	if last != "" {
		return fmt.Errorf("rank %d %s: %s", c.rank, how, last)
	}
	return fmt.Errorf("rank %d %s", c.rank, how)
}

// lockedWriter serializes the children's lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// peerFailure is the error of a child that stopped because another rank failed: its last
// line names that rank.
func (c *child) peerFailure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == "" {
		return fmt.Errorf("rank %d stopped because another rank failed", c.rank)
	}
	return fmt.Errorf("%s (reported by rank %d)", c.last, c.rank)
}

// freePort asks the kernel for a free TCP port on the loopback interface.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
