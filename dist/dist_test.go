package dist

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestResolve(t *testing.T) {
	unset := Flags{Rank: -1, WorldSize: -1}
	for _, tc := range []struct {
		name    string
		flags   Flags
		env     map[string]string
		want    Config
		ok      bool
		wantErr string
	}{
		{name: "not distributed", flags: unset},
		{name: "torchrun", flags: unset, env: map[string]string{"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"},
			want: Config{Rank: 1, WorldSize: 4, LocalRank: 1, MasterAddr: "10.0.0.1:29500", Timeout: time.Second}, ok: true},
		{name: "under torchrun", flags: unset,
			env:  map[string]string{"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x"},
			want: Config{WorldSize: 2, MasterAddr: "h:29501", Timeout: time.Second}, ok: true},
		{name: "flags", flags: Flags{Rank: 0, WorldSize: 2, MasterAddr: "h:1"}, want: Config{WorldSize: 2, MasterAddr: "h:1", Timeout: time.Second}, ok: true},
		{name: "flag agrees with env", flags: Flags{Rank: 1, WorldSize: 2, MasterAddr: "h:1"}, env: map[string]string{"RANK": "1"},
			want: Config{Rank: 1, WorldSize: 2, MasterAddr: "h:1", Timeout: time.Second}, ok: true},
		{name: "flag address wins", flags: Flags{Rank: 1, WorldSize: 2, MasterAddr: "h:1"}, env: map[string]string{"MASTER_ADDR": "x", "MASTER_PORT": "2"},
			want: Config{Rank: 1, WorldSize: 2, MasterAddr: "h:1", Timeout: time.Second}, ok: true},
		{name: "world of one", flags: Flags{Rank: -1, WorldSize: 1}, want: Config{WorldSize: 1, Timeout: time.Second}, ok: true},
		{name: "flag contradicts env", flags: Flags{Rank: 0, WorldSize: 2, MasterAddr: "h:1"}, env: map[string]string{"RANK": "1"},
			wantErr: "--rank 0 contradicts $RANK=1"},
		{name: "bad env", flags: unset, env: map[string]string{"WORLD_SIZE": "two"}, wantErr: `$WORLD_SIZE="two"`},
		{name: "half the master", flags: unset, env: map[string]string{"MASTER_ADDR": "h"}, wantErr: "$MASTER_ADDR and $MASTER_PORT go together"},
		{name: "rank without world", flags: Flags{Rank: 1, WorldSize: -1}, wantErr: "need --world-size"},
		{name: "rank past world", flags: Flags{Rank: 2, WorldSize: 2, MasterAddr: "h:1"}, wantErr: "--rank 2: want 0 to 1"},
		{name: "no rank", flags: Flags{Rank: -1, WorldSize: 2, MasterAddr: "h:1"}, wantErr: "needs --rank"},
		{name: "no address", flags: Flags{Rank: 0, WorldSize: 2}, wantErr: "needs --master-addr"},
		{name: "address without port", flags: Flags{Rank: 0, WorldSize: 2, MasterAddr: "host"}, wantErr: `--master-addr "host": want host:port`},
		{name: "world zero", flags: Flags{Rank: 0, WorldSize: 0}, wantErr: "--world-size 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			got, ok, err := Resolve(tc.flags, lookup, time.Second)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve = %+v, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || ok != tc.ok || (ok && got != tc.want) {
				t.Fatalf("Resolve = %+v, %v, %v; want %+v, %v", got, ok, err, tc.want, tc.ok)
			}
		})
	}
}

func localAddr(t *testing.T) string {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

// joinAll joins world in-process ranks (goroutines) and returns their groups.
func joinAll(t *testing.T, world int, timeout time.Duration) []*Group {
	t.Helper()
	addr := localAddr(t)
	gs := make([]*Group, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := world - 1; r >= 0; r-- { // the others before rank 0: they wait for it
		wg.Add(1)
		go func() {
			defer wg.Done()
			gs[r], errs[r] = Join(context.Background(), Config{Rank: r, WorldSize: world, MasterAddr: addr, Timeout: timeout}, []byte("unique id"))
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	t.Cleanup(func() {
		for _, g := range gs {
			g.Close()
		}
	})
	return gs
}

func TestRendezvous(t *testing.T) {
	for _, world := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(world), func(t *testing.T) {
			gs := joinAll(t, world, 2*time.Second)
			var wg sync.WaitGroup
			errs := make([]error, world)
			for r, g := range gs {
				if string(g.Payload) != "unique id" {
					t.Errorf("rank %d got payload %q", r, g.Payload)
				}
				wg.Add(1)
				go func() { defer wg.Done(); errs[r] = g.Agree(context.Background(), 5, 0xfeed) }()
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Errorf("rank %d: Agree: %v", r, err)
				}
			}
			time.Sleep(300 * time.Millisecond) // a few heartbeats: nobody is reported silent
			for r, g := range gs {
				if err := g.Err(); err != nil {
					t.Errorf("rank %d: %v", r, err)
				}
			}
		})
	}
}

func TestAgreeMismatch(t *testing.T) {
	gs := joinAll(t, 3, 2*time.Second)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for r, g := range gs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[r] = g.Agree(context.Background(), 7, uint64(10+r/2)) }()
	}
	wg.Wait()
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "rank 2 000000000000000b at step 7") {
			t.Errorf("rank %d: %v; want the mismatch naming rank 2", r, err)
		}
	}
}

// TestAbortReachesEveryRank: a rank that fails stops the others with its message; one that
// vanishes (its connections close without a clean end) is named by rank 0 to the others.
func TestAbortReachesEveryRank(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(g *Group)
		want string
	}{
		{"abort", func(g *Group) { g.Abort(errors.New("out of memory")) }, "rank 2: out of memory"},
		{"vanish", func(g *Group) { g.shut() }, "rank 2 exited or lost its connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gs := joinAll(t, 3, 2*time.Second)
			tc.do(gs[2])
			for _, g := range gs[:2] {
				select {
				case <-g.Context().Done():
				case <-time.After(3 * time.Second):
					t.Fatalf("rank %d still runs", g.Rank)
				}
				if err := g.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("rank %d: %v; want %q", g.Rank, err, tc.want)
				}
			}
		})
	}
}

func TestJoinRefusals(t *testing.T) {
	addr := localAddr(t)
	start := time.Now()
	_, err := Join(context.Background(), Config{Rank: 1, WorldSize: 2, MasterAddr: addr, Timeout: 300 * time.Millisecond}, nil)
	if err == nil || !strings.Contains(err.Error(), "rank 1 cannot reach rank 0") || time.Since(start) > 3*time.Second {
		t.Errorf("no rank 0: %v after %v", err, time.Since(start))
	}
	_, err = Join(context.Background(), Config{Rank: 0, WorldSize: 3, MasterAddr: addr, Timeout: 300 * time.Millisecond}, nil)
	if err == nil || !strings.Contains(err.Error(), "1 of 3 ranks joined") || !strings.Contains(err.Error(), "missing: 1 2") {
		t.Errorf("nobody joins: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var err0 error
	go func() {
		defer wg.Done()
		_, err0 = Join(context.Background(), Config{Rank: 0, WorldSize: 2, MasterAddr: addr, Timeout: 2 * time.Second}, nil)
	}()
	_, err = Join(context.Background(), Config{Rank: 1, WorldSize: 3, MasterAddr: addr, Timeout: 2 * time.Second}, nil)
	wg.Wait()
	if err == nil || !strings.Contains(err.Error(), "rank 1 has --world-size 3, rank 0 2") || err0 == nil {
		t.Errorf("world sizes differ: rank 1 %v; rank 0 %v", err, err0)
	}
}

// The launcher's children are this test binary, in the role $DIST_TEST_CHILD names.
func TestMain(m *testing.M) {
	if mode := os.Getenv("DIST_TEST_CHILD"); mode != "" {
		os.Exit(child_(mode))
	}
	os.Exit(m.Run())
}

// child_ is a rank of a launched test run: it joins, then behaves as mode says.
func child_(mode string) int {
	c, _, err := Resolve(Flags{Rank: -1, WorldSize: -1}, os.LookupEnv, time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	g, err := Join(context.Background(), c, []byte("id"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("rank %d of %d joined\n", c.Rank, c.WorldSize)
	switch {
	case mode == "die" && c.Rank == 1:
		fmt.Fprintln(os.Stderr, "rank 1 failing on purpose")
		return 3
	case mode == "hang" && c.Rank == 1:
		syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	case mode == "signal":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "ready")
		select {
		case <-sigs:
			fmt.Fprintln(os.Stderr, "terminated")
			g.Close()
			return 0
		case <-time.After(20 * time.Second):
			return 4
		}
	case mode == "ok":
		if os.Getenv("RANK") == "0" {
			fmt.Printf("world %d\n", c.WorldSize)
		}
		if err := g.Agree(context.Background(), 1, 42); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		g.Close()
		return 0
	}
	select {
	case <-g.Context().Done():
		fmt.Fprintf(os.Stderr, "error: %v\n", g.Err())
		var pe *PeerError
		if errors.As(g.Err(), &pe) {
			return ExitPeer
		}
		return 1
	case <-time.After(20 * time.Second):
		return 4
	}
}

func TestLaunch(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode  string
		procs int
		want  string // "" success
	}{
		{"ok", 3, ""},
		{"die", 3, "rank 1 exited with status 3: rank 1 failing on purpose"},
		{"hang", 2, "error: rank 1 stopped answering (silent for"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			var out, errs strings.Builder
			start := time.Now()
			err := Launch(context.Background(), LaunchSpec{Exe: exe, Procs: tc.procs, Timeout: time.Second, Stdout: &out, Stderr: &errs,
				Env: []string{"DIST_TEST_CHILD=" + tc.mode}})
			took := time.Since(start)
			if took > 8*time.Second {
				t.Errorf("took %v", took)
			}
			if tc.want == "" {
				if err != nil || !strings.Contains(out.String(), "rank 0 of 3 joined") {
					t.Fatalf("Launch: %v\nstdout %q\nstderr %q", err, out.String(), errs.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Launch: %v; want one line containing %q\nstderr:\n%s", err, tc.want, errs.String())
			}
		})
	}
}

// TestLaunchTwoHosts: two launchers standing in for two hosts (--nnodes 2), two ranks each,
// make one run of four ranks through the first host's rendezvous.
func TestLaunchTwoHosts(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := localAddr(t)
	var outs [2]strings.Builder
	var errs [2]error
	var wg sync.WaitGroup
	for node := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[node] = Launch(context.Background(), LaunchSpec{Exe: exe, Procs: 2, Nodes: 2, NodeRank: node, MasterAddr: addr, Timeout: 2 * time.Second,
				Stdout: &outs[node], Env: []string{"DIST_TEST_CHILD=ok"}})
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || !strings.Contains(outs[0].String(), "world 4") {
		t.Fatalf("host 0: %v %q; host 1: %v %q", errs[0], outs[0].String(), errs[1], outs[1].String())
	}
	err = Launch(context.Background(), LaunchSpec{Exe: exe, Procs: 2, Nodes: 2, NodeRank: 1})
	if err == nil || !strings.Contains(err.Error(), "needs --master-addr") {
		t.Errorf("two hosts without an address: %v", err)
	}
}

// TestLaunchForwardsSignals: a SIGTERM to the launcher reaches every rank once; ranks that
// then end cleanly make the launch succeed.
func TestLaunchForwardsSignals(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var errs strings.Builder
	w := &lockedWriter{w: &errs}
	done := make(chan error, 1)
	go func() {
		done <- Launch(context.Background(), LaunchSpec{Exe: exe, Procs: 2, Timeout: time.Second, Stderr: w, Env: []string{"DIST_TEST_CHILD=signal"}})
	}()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		w.mu.Lock()
		n := strings.Count(errs.String(), "ready")
		w.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the ranks did not start")
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // Launch has the signal: the test process lives on
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(errs.String(), "terminated"); n != 2 {
		t.Fatalf("%d ranks saw the signal:\n%s", n, errs.String())
	}
}
