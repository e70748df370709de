package dist

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout is how long a rank may stay silent, and a rendezvous or collective wait,
// before the run stops naming the rank.
const DefaultTimeout = 5 * time.Minute

// Config is one process's place in a data-parallel run.
type Config struct {
	Rank, WorldSize int
	LocalRank       int           // the GPU of this host the process uses (torchrun's LOCAL_RANK)
	MasterAddr      string        // host:port of rank 0's rendezvous
	Timeout         time.Duration // see DefaultTimeout
}

// Flags are the command line's distributed settings; a negative number or "" is unset.
type Flags struct {
	Rank, WorldSize int
	MasterAddr      string
}

// Resolve makes the Config of a process from its flags and torchrun's environment
// variables (read through lookup): a flag wins over the variable, and a flag that
// contradicts a set variable is refused. ok is false when neither names a world size
// (not a distributed run).
func Resolve(f Flags, lookup func(string) (string, bool), timeout time.Duration) (c Config, ok bool, err error) {
	env := func(name string) (int, bool, error) {
		s, set := lookup(name)
		if !set || strings.TrimSpace(s) == "" {
			return -1, false, nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			return -1, false, fmt.Errorf("$%s=%q: want a whole number ≥ 0", name, s)
		}
		return n, true, nil
	}
	c = Config{Rank: f.Rank, WorldSize: f.WorldSize, MasterAddr: f.MasterAddr, Timeout: timeout}
	for _, v := range []struct {
		name, flag string
		to         *int
	}{{"RANK", "--rank", &c.Rank}, {"WORLD_SIZE", "--world-size", &c.WorldSize}, {"LOCAL_RANK", "", &c.LocalRank}} {
		n, set, err := env(v.name)
		if err != nil {
			return Config{}, false, err
		}
		switch {
		case !set:
		case *v.to < 0 || v.flag == "":
			*v.to = n
		case *v.to != n:
			return Config{}, false, fmt.Errorf("%s %d contradicts $%s=%d: drop one", v.flag, *v.to, v.name, n)
		}
	}
	if addr, err := envMaster(lookup); err != nil {
		return Config{}, false, err
	} else if c.MasterAddr == "" {
		c.MasterAddr = addr
	}
	if c.WorldSize < 0 {
		if c.Rank >= 0 || f.MasterAddr != "" {
			return Config{}, false, errors.New("--rank and --master-addr need --world-size (or $WORLD_SIZE)")
		}
		return Config{}, false, nil
	}
	if c.Rank < 0 {
		c.Rank = 0
		if c.WorldSize > 1 {
			return Config{}, false, fmt.Errorf("--world-size %d needs --rank (or $RANK): 0 to %d", c.WorldSize, c.WorldSize-1)
		}
	}
	if c.LocalRank < 0 {
		c.LocalRank = 0
	}
	return c, true, c.Check()
}

// envMaster is MASTER_ADDR:MASTER_PORT ("" when MASTER_ADDR is unset), under torchrun
// ($TORCHELASTIC_RUN_ID set) MASTER_PORT+1.
func envMaster(lookup func(string) (string, bool)) (string, error) {
	host, _ := lookup("MASTER_ADDR")
	port, _ := lookup("MASTER_PORT")
	host, port = strings.TrimSpace(host), strings.TrimSpace(port)
	switch {
	case host == "" && port == "":
		return "", nil
	case host == "" || port == "":
		return "", errors.New("$MASTER_ADDR and $MASTER_PORT go together: set both or neither")
	}
	if _, torchrun := lookup("TORCHELASTIC_RUN_ID"); torchrun {
		// torchrun's agent holds its own store on MASTER_PORT: ortq's rendezvous takes the next.
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p >= 65535 {
			return "", fmt.Errorf("$MASTER_PORT=%q: want a port below 65535", port)
		}
		port = strconv.Itoa(p + 1)
	}
	return net.JoinHostPort(host, port), nil
}

// Check refuses an inconsistent Config with a one-line error naming the flag.
func (c Config) Check() error {
	switch {
	case c.WorldSize < 1:
		return fmt.Errorf("--world-size %d: want ≥ 1", c.WorldSize)
	case c.Rank < 0 || c.Rank >= c.WorldSize:
		return fmt.Errorf("--rank %d: want 0 to %d for --world-size %d", c.Rank, c.WorldSize-1, c.WorldSize)
	case c.LocalRank < 0:
		return fmt.Errorf("$LOCAL_RANK %d: want ≥ 0", c.LocalRank)
	case !(c.Timeout > 0):
		return fmt.Errorf("--dist-timeout %v: want > 0", c.Timeout)
	case c.WorldSize > 1 && c.MasterAddr == "":
		return fmt.Errorf("--world-size %d needs --master-addr host:port (or $MASTER_ADDR and $MASTER_PORT), rank 0's rendezvous", c.WorldSize)
	}
	if c.MasterAddr != "" {
		if _, port, err := net.SplitHostPort(c.MasterAddr); err != nil || port == "" {
			return fmt.Errorf("--master-addr %q: want host:port", c.MasterAddr)
		}
	}
	return nil
}
