package main

import (
	"bytes"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/nccl"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

func TestDropFlags(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"train --nproc-per-node 2 --device cuda:all --lr 1", "train --lr 1"},
		{"train --nproc-per-node=all --device=cuda:0,cuda:1 --out o", "train --out o"},
		{"train --devices x --nproc-per-node-x 1", "train --devices x --nproc-per-node-x 1"},
	} {
		got := dropFlags(strings.Fields(tc.in), "nproc-per-node", "device")
		if !slices.Equal(got, strings.Fields(tc.want)) {
			t.Errorf("dropFlags(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestDistributedRefusals: bad combinations of the data-parallel flags and torchrun's
// variables, and NCCL missing, are refused with one line naming the flag before anything
// is read or written.
func TestDistributedRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"rank without world", nil, []string{"--rank", "1"}, "need --world-size"},
		{"world without rank", nil, []string{"--world-size", "2", "--master-addr", "h:1", "--device", "cuda:0"}, "needs --rank"},
		{"no master", nil, []string{"--world-size", "2", "--rank", "1", "--device", "cuda:0"}, "needs --master-addr"},
		{"flag contradicts torchrun", map[string]string{"RANK": "1", "WORLD_SIZE": "2"}, []string{"--rank", "0"}, "--rank 0 contradicts $RANK=1"},
		{"cpu rank", nil, []string{"--world-size", "1", "--device", "cpu"}, "each rank trains on one GPU"},
		{"several devices a rank", nil, []string{"--world-size", "1", "--device", "cuda:0,cuda:1"}, "each rank trains on one GPU"},
		{"bad check interval", nil, []string{"--world-size", "1", "--device", "cuda:0", "--dist-check-every", "-1"}, "--dist-check-every -1"},
		{"NCCL absent", map[string]string{"ORTQ_NCCL_LIB": "/nonexistent/libnccl.so.2"}, []string{"--world-size", "1", "--device", "cuda:0"},
			"NCCL library not found"},
		{"NCCL absent under torchrun", map[string]string{"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "ORTQ_NCCL_LIB": "/nonexistent/libnccl.so.2"},
			[]string{"--device", "cuda"}, `"/nonexistent/libnccl.so.2" (from $ORTQ_NCCL_LIB) is not a file`},
		{"launch under torchrun", map[string]string{"WORLD_SIZE": "2"}, []string{"--nproc-per-node", "2", "--device", "cuda:0,cuda:1"},
			"--nproc-per-node launches the ranks itself"},
		{"launch on cpu", nil, []string{"--nproc-per-node", "2", "--device", "cpu"}, "names no GPU"},
		{"launch count", nil, []string{"--nproc-per-node", "3", "--device", "cuda:0,cuda:1"}, "--nproc-per-node 3 but --device"},
		{"launch count, one GPU named", nil, []string{"--nproc-per-node", "2", "--device", "cuda:1"}, `--nproc-per-node 2 but --device "cuda:1" names 1 GPU(s)`},
		{"launch word", nil, []string{"--nproc-per-node", "many", "--device", "cuda:0,cuda:1"}, `--nproc-per-node "many"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ORTQ_NCCL_LIB", envLaunched} {
				t.Setenv(k, tc.env[k])
			}
			args := append([]string{"train", "--artifacts", t.TempDir(), "--data", "x.txt", "--tokenizer", "default"}, tc.args...)
			err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ortq %s: %v; want one line containing %q", strings.Join(args, " "), err, tc.want)
			}
		})
	}
}

// TestLaunchWithoutNCCL: `train --nproc-per-node 2` starts two ranks; without NCCL each
// refuses, and the launcher exits non-zero with one line naming a rank and the refusal.
func TestLaunchWithoutNCCL(t *testing.T) {
	cmd, out := child(t, []string{"ORTQ_NCCL_LIB=/nonexistent/libnccl.so.2", "WORLD_SIZE=", "RANK="},
		"train", "--artifacts", t.TempDir(), "--data", "x.txt", "--tokenizer", "default", "--nproc-per-node", "2", "--device", "cuda:0,cuda:1")
	err := cmd.Wait()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if exitCodeOf(err) != 1 || !strings.Contains(last, "exited with status 1") || !strings.Contains(last, "NCCL library not found") {
		t.Fatalf("exit %d; last line %q; want status 1 and a line naming the rank and NCCL\n%s", exitCodeOf(err), last, out)
	}
	if !strings.Contains(out.String(), "[rank 1]") {
		t.Errorf("rank 1's refusal is not in the output:\n%s", out)
	}
}

// In a child process of the tests below, $ORTQ_TEST_CUDART names the stand-in CUDA runtime
// that the stand-in NCCL ($ORTQ_NCCL_LIB) needs, and ranks may train on the CPU.
func init() {
	if p := os.Getenv("ORTQ_TEST_CUDART"); p != "" {
		nccl.CUDARuntimes = []string{p}
		distAllowCPU = true
	}
}

// fakeNCCLEnv builds internal/nccl's stand-in NCCL and CUDA runtime (host memory as device
// memory; the all-reduce multiplies by $FAKE_WORLD) and returns a child's environment for them.
func fakeNCCLEnv(t *testing.T, world int) []string {
	t.Helper()
	if _, err := exec.LookPath("cc"); err != nil {
		t.Skipf("no C compiler for the stand-in NCCL: %v", err)
	}
	dir, src := t.TempDir(), "../../internal/nccl/testdata/"
	lib, cudart := filepath.Join(dir, "libnccl.so.2"), filepath.Join(dir, "libcudart.so.12")
	for _, b := range [][]string{{lib, "fakenccl.c"}, {cudart, "fakecudart.c"}} {
		if out, err := exec.Command("cc", "-shared", "-fPIC", "-o", b[0], src+b[1]).CombinedOutput(); err != nil {
			t.Fatalf("cc %s: %v\n%s", b[1], err, out)
		}
	}
	return []string{"ORTQ_NCCL_LIB=" + lib, "ORTQ_TEST_CUDART=" + cudart, "FAKE_WORLD=" + strconv.Itoa(world),
		"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "MASTER_ADDR=", "MASTER_PORT="}
}

// TestDistributedRun drives `train` as ranks on the stand-in NCCL, on the CPU. One rank
// (an all-reduce that copies) trains as the plain device step does: the same final eval loss
// within 1e-4 (host AdamW on the all-reduced sums vs the graph's), the report's note names
// NCCL, and the run's files are in --out. Two ranks of which each "sums" only its own
// micro-batches disagree at the first step: both exit non-zero naming the step's token
// count, no adapter or report is written, and rank 1 leaves nothing in its temporary directory.
func TestDistributedRun(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	args := []string{"train", "--artifacts", art, "--data", demoData(t), "--tokenizer", "default", "--max-seq-len", "64", "--micro-batch", "2",
		"--grad-accum", "2", "--max-steps", "4", "--max-eval-batches", "2", "--threads", "1", "--quiet", "--step", "device", "--device", "cpu"}
	plain := filepath.Join(dir, "plain")
	if err := run(t, append(args, "--out", plain)...); err != nil {
		t.Fatal(err)
	}
	one := filepath.Join(dir, "one")
	cmd, out := child(t, fakeNCCLEnv(t, 1), append(args, "--out", one, "--world-size", "1")...)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("one rank: %v\n%s", err, out)
	}
	want, got := readReport(t, plain), readReport(t, one)
	if d := math.Abs(float64(got.Final.Loss-want.Final.Loss)) / float64(want.Final.Loss); !(d <= 1e-4) || got.OptimizerSteps != 4 {
		t.Errorf("one rank: final loss %v after %d steps, plain device step %v (rel %.2g)", got.Final.Loss, got.OptimizerSteps, want.Final.Loss, d)
	}
	if !strings.Contains(strings.Join(got.Notes, "\n"), "through NCCL 22703") {
		t.Errorf("notes %q do not name NCCL", got.Notes)
	}

	tmp := t.TempDir()
	env := append(fakeNCCLEnv(t, 1), "TMPDIR="+tmp)
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	two := filepath.Join(dir, "two")
	var cmds [2]*exec.Cmd
	var outs [2]*bytes.Buffer
	for r := range 2 {
		cmds[r], outs[r] = child(t, env, append(args, "--out", two, "--world-size", "2", "--rank", strconv.Itoa(r), "--master-addr", addr,
			"--dist-timeout", "20s")...)
	}
	for r, c := range cmds {
		err := c.Wait()
		if err == nil || !strings.Contains(outs[r].String(), "counted") {
			t.Errorf("rank %d: %v; want a failure naming the token count\n%s", r, err, outs[r])
		}
	}
	for _, f := range []string{"adapter_model.safetensors", "report.json"} {
		if _, err := os.Stat(filepath.Join(two, f)); err == nil {
			t.Errorf("the failed run wrote %s", f)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "ortq-rank1-*")); len(left) > 0 {
		t.Errorf("rank 1 left its temporary directory %v", left)
	}
}

func freeTCPPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
