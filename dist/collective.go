package dist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ortq/ortq/internal/nccl"
	"github.com/ortq/ortq/ortrun"
)

// NCCL is a rank's train.Collective on the product path: NCCL's all-reduce of the device
// buffers, the rendezvous' comparison of checksums.
type NCCL struct {
	Lib   *nccl.Lib
	Comm  *nccl.Comm
	Group *Group
	// Timeout bounds one all-reduce: a rank that died or hangs inside a step never joins
	// it, and the communicator is aborted.
	Timeout time.Duration
}

// Setup joins the rendezvous of c, loads NCCL (libPath: --nccl-lib, else nccl.FindLibrary's
// search) and makes the communicator on CUDA device dev. Rank 0 makes the unique id before
// joining and sends it with the rendezvous; a rank that cannot load NCCL or join the
// communicator stops every rank with its error (Group.Abort), so that all report the rank
// at fault instead of waiting for it.
func Setup(ctx context.Context, c Config, libPath string, dev int) (*NCCL, error) {
	var lib *nccl.Lib
	var id nccl.UniqueID
	loadErr := func() error {
		p, err := nccl.FindLibrary(libPath)
		if err != nil {
			return err
		}
		if lib, err = nccl.Open(p); err != nil {
			return err
		}
		if c.Rank == 0 {
			id, err = lib.GetUniqueID()
		}
		return err
	}()
	var payload []byte
	if loadErr == nil && c.Rank == 0 {
		payload = id[:]
	}
	g, err := Join(ctx, c, payload)
	if err != nil {
		if loadErr != nil {
			return nil, fmt.Errorf("rank %d: %w", c.Rank, loadErr)
		}
		lib.Close()
		return nil, err
	}
	n := &NCCL{Lib: lib, Group: g, Timeout: c.Timeout}
	if err := n.init(ctx, loadErr, dev); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// init makes the communicator once every rank has the id; a failure anywhere ends it.
func (n *NCCL) init(ctx context.Context, loadErr error, dev int) error {
	g := n.Group
	fail := func(err error) error {
		g.Abort(err)
		return fmt.Errorf("rank %d: %w", g.Rank, err)
	}
	switch {
	case loadErr != nil:
		return fail(loadErr)
	case len(g.Payload) != nccl.UniqueIDBytes:
		// Rank 0 could not make the id: its error follows on the rendezvous.
		select {
		case <-g.Context().Done():
			return g.Err()
		case <-time.After(g.timeout):
			return fmt.Errorf("rank %d: rank 0 sent no NCCL id", g.Rank)
		}
	}
	var id nccl.UniqueID
	copy(id[:], g.Payload)
	type result struct {
		c   *nccl.Comm
		err error
	}
	done := make(chan result, 1)
	go func() { // ncclCommInitRank blocks until every rank has joined
		c, err := n.Lib.InitRank(dev, g.Rank, g.World, id)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return fail(r.err)
		}
		n.Comm = r.c
		return nil
	case <-g.Context().Done():
		return g.Err() // another rank failed; this one stays blocked in NCCL until the process exits
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *NCCL) Rank() int  { return n.Group.Rank }
func (n *NCCL) World() int { return n.Group.World }

// AllReduceSum sums b, a float32 buffer in device memory, across the ranks in place. It
// ends early, aborting the communicator, when the rendezvous reports a failed rank.
func (n *NCCL) AllReduceSum(ctx context.Context, b *ortrun.Buffer) error {
	if b.DType != ortrun.Float32 {
		return fmt.Errorf("NCCL all-reduce of a %s buffer: only float32 is summed", b.DType)
	}
	p, size, err := b.DataPointer()
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(n.Group.Context(), stop)()
	err = n.Comm.AllReduceSum(ctx, p, int(size/4), n.Timeout)
	if gerr := n.Group.Err(); gerr != nil && errors.Is(err, context.Canceled) {
		return gerr
	}
	return err
}

// Agree compares the ranks' checksums over the rendezvous.
func (n *NCCL) Agree(ctx context.Context, step int64, sum uint64) error {
	return n.Group.Agree(ctx, step, sum)
}

// Close destroys the communicator (aborts it after a failure) and leaves the rendezvous.
func (n *NCCL) Close() {
	if n.Comm != nil {
		if n.Group.Err() != nil {
			n.Comm.Abort()
		} else {
			n.Comm.Destroy()
		}
		n.Comm = nil
	}
	n.Group.Close()
	// The library stays loaded: a communicator blocked in another thread may still use it.
}
