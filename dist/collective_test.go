package dist

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ortq/ortq/internal/nccl"
)

// fakeNCCL builds the stand-in NCCL and CUDA runtime of internal/nccl/testdata (host
// memory as "device" memory; the all-reduce multiplies by $FAKE_WORLD) and makes Open use
// that runtime; partial is a build that lacks ncclGetUniqueId.
func fakeNCCL(t *testing.T) (full, partial string) {
	t.Helper()
	if _, err := exec.LookPath("cc"); err != nil {
		t.Skipf("no C compiler to build the fake NCCL: %v", err)
	}
	dir, src := t.TempDir(), "../internal/nccl/testdata/"
	full, partial = filepath.Join(dir, "libnccl.so.2"), filepath.Join(dir, "partial", "libnccl.so.2")
	cudart := filepath.Join(dir, "libcudart.so.12")
	os.Mkdir(filepath.Dir(partial), 0o755)
	for _, b := range [][]string{{full, "fakenccl.c"}, {partial, "fakenccl.c", "-DPARTIAL"}, {cudart, "fakecudart.c"}} {
		args := append([]string{"-shared", "-fPIC", "-o", b[0], src + b[1]}, b[2:]...)
		if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
			t.Fatalf("cc %v: %v\n%s", args, err, out)
		}
	}
	old := nccl.CUDARuntimes
	nccl.CUDARuntimes = []string{cudart}
	t.Cleanup(func() { nccl.CUDARuntimes = old })
	return full, partial
}

// setupAll runs Setup on world goroutine ranks, rank r loading libs[r].
func setupAll(t *testing.T, libs []string) ([]*NCCL, []error) {
	addr := localAddr(t)
	ns, errs := make([]*NCCL, len(libs)), make([]error, len(libs))
	var wg sync.WaitGroup
	for r := range libs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns[r], errs[r] = Setup(context.Background(), Config{Rank: r, WorldSize: len(libs), MasterAddr: addr, Timeout: 2 * time.Second}, libs[r], 0)
		}()
	}
	wg.Wait()
	return ns, errs
}

func TestSetup(t *testing.T) {
	full, partial := fakeNCCL(t)
	t.Run("joined", func(t *testing.T) {
		ns, errs := setupAll(t, []string{full, full})
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.Comm == nil || n.World() != 2 || n.Lib.Version != 22703 {
				t.Errorf("rank %d: %+v", n.Rank(), n)
			}
			n.Close()
		}
	})
	// A rank that cannot load NCCL stops the other, which names it.
	t.Run("rank 1 without NCCL", func(t *testing.T) {
		start := time.Now()
		ns, errs := setupAll(t, []string{full, partial})
		if errs[1] == nil || !strings.Contains(errs[1].Error(), "rank 1: loading NCCL") || !strings.Contains(errs[1].Error(), "missing symbol ncclGetUniqueId") {
			t.Fatalf("rank 1: %v", errs[1])
		}
		// Rank 0 may have made its communicator before the abort arrived: its next
		// all-reduce or its context ends then.
		if errs[0] == nil {
			<-ns[0].Group.Context().Done()
			errs[0] = ns[0].Group.Err()
			ns[0].Close()
		}
		var pe *PeerError
		if !errors.As(errs[0], &pe) || !strings.Contains(errs[0].Error(), "rank 1: loading NCCL") || time.Since(start) > 2*time.Second {
			t.Fatalf("rank 0 after %v: %v; want a PeerError naming rank 1", time.Since(start), errs[0])
		}
	})
	t.Run("rank 0 without NCCL", func(t *testing.T) {
		_, errs := setupAll(t, []string{partial, full})
		var pe *PeerError
		if !strings.Contains(errs[0].Error(), "rank 0: loading NCCL") || !errors.As(errs[1], &pe) || !strings.Contains(errs[1].Error(), "rank 0: loading NCCL") {
			t.Fatalf("rank 0: %v; rank 1: %v", errs[0], errs[1])
		}
	})
}
