package main

import (
	"slices"
	"strings"
	"testing"
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
