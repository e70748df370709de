package nccl

/*
#include <stdlib.h>
#include "nccl.h"

static int ortq_init_rank(ortq_nccl *l, int dev, void **comm, void **stream, int world, ortq_ncclUniqueId *id, int rank, int *cuda) {
	if ((*cuda = l->setDevice(dev)) != 0) return 0;
	if ((*cuda = l->streamCreateWithFlags(stream, 1)) != 0) return 0; // cudaStreamNonBlocking
	return l->commInitRank(comm, world, *id, rank);
}
// ortq_all_reduce waits for all work on the device (ONNX Runtime's runs included), then
// enqueues the in-place sum on the communicator's stream.
static int ortq_all_reduce(ortq_nccl *l, int dev, void *comm, void *stream, void *buf, size_t count, int *cuda) {
	if ((*cuda = l->setDevice(dev)) != 0) return 0;
	if ((*cuda = l->deviceSynchronize()) != 0) return 0;
	return l->allReduce(buf, buf, count, ORTQ_NCCL_FLOAT32, ORTQ_NCCL_SUM, comm, stream);
}
// ortq_poll returns the stream's state (0 done, ORTQ_CUDA_NOT_READY running, else a CUDA
// error) and the communicator's asynchronous error in *async.
static int ortq_poll(ortq_nccl *l, int dev, void *comm, void *stream, int *async) {
	int r = l->setDevice(dev);
	if (r != 0) return r;
	r = l->streamQuery(stream);
	int a = l->commGetAsyncError(comm, async);
	if (a != 0) *async = a;
	return r;
}
static int ortq_comm_end(ortq_nccl *l, int dev, void *comm, void *stream, int abort) {
	l->setDevice(dev);
	int r = comm ? (abort ? l->commAbort(comm) : l->commDestroy(comm)) : 0;
	if (stream) l->streamDestroy(stream);
	return r;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// inProgress is ncclInProgress: an asynchronous error code that means "still running".
const inProgress = 7

// ErrTimeout is wrapped by AllReduceSum's error when the collective did not finish in time:
// another rank died or hangs.
var ErrTimeout = errors.New("NCCL all-reduce timed out")

// Comm is one rank's communicator, on one CUDA device, with its own CUDA stream.
type Comm struct {
	lib         *Lib
	comm        unsafe.Pointer
	stream      unsafe.Pointer
	device      int
	Rank, World int
}

// InitRank joins rank (of world) to the communicator of id on CUDA device (an ordinal of
// the process's visible devices). It blocks until every rank has joined.
func (l *Lib) InitRank(device, rank, world int, id UniqueID) (*Comm, error) {
	switch {
	case world < 1:
		return nil, fmt.Errorf("NCCL: world size %d: want ≥ 1", world)
	case rank < 0 || rank >= world:
		return nil, fmt.Errorf("NCCL: rank %d outside world size %d", rank, world)
	case device < 0:
		return nil, fmt.Errorf("NCCL: CUDA device %d", device)
	case id == UniqueID{}:
		return nil, errors.New("NCCL: the unique id is zero (rank 0 makes it with GetUniqueID)")
	}
	c := &Comm{lib: l, device: device, Rank: rank, World: world}
	cid := (*C.ortq_ncclUniqueId)(C.CBytes(id[:]))
	defer C.free(unsafe.Pointer(cid))
	var cuda C.int
	r := C.ortq_init_rank(l.c, C.int(device), &c.comm, &c.stream, C.int(world), cid, C.int(rank), &cuda)
	if cuda != 0 {
		return nil, l.cudaError(fmt.Sprintf("NCCL rank %d: CUDA device %d", rank, device), cuda)
	}
	if r != 0 {
		c.end(false)
		return nil, l.ncclError(fmt.Sprintf("ncclCommInitRank (rank %d of %d)", rank, world), r)
	}
	return c, nil
}

// AllReduceSum replaces count float32 values at ptr, in the communicator's device memory,
// by their sum over all ranks. It first waits for all work on the device (ONNX Runtime's
// runs), and returns when the sum is complete, so that the next run reads it. It polls the
// stream and ncclCommGetAsyncError; after timeout (0: none), or when ctx ends, it aborts
// the communicator (a rank that died or hangs never finishes the collective) and returns
// an error wrapping ErrTimeout or ctx's error. After an error the communicator is unusable.
func (c *Comm) AllReduceSum(ctx context.Context, ptr unsafe.Pointer, count int, timeout time.Duration) error {
	if c.comm == nil {
		return errors.New("NCCL all-reduce: the communicator is closed")
	}
	if ptr == nil || count <= 0 {
		return fmt.Errorf("NCCL all-reduce: buffer %p of %d values", ptr, count)
	}
	var cuda C.int
	r := C.ortq_all_reduce(c.lib.c, C.int(c.device), c.comm, c.stream, ptr, C.size_t(count), &cuda)
	if cuda != 0 {
		return c.lib.cudaError("NCCL all-reduce: synchronizing the device before it", cuda)
	}
	if r != 0 {
		return c.lib.ncclError("ncclAllReduce", r)
	}
	return c.wait(ctx, timeout)
}

// wait polls until the stream is idle, backing off from 20 µs to 1 ms.
func (c *Comm) wait(ctx context.Context, timeout time.Duration) error {
	start, pause := time.Now(), 20*time.Microsecond
	for {
		var async C.int
		q := C.ortq_poll(c.lib.c, C.int(c.device), c.comm, c.stream, &async)
		switch {
		case async != 0 && async != inProgress:
			c.Abort()
			return c.lib.ncclError(fmt.Sprintf("NCCL all-reduce (rank %d of %d)", c.Rank, c.World), async)
		case q == 0:
			return nil
		case q != C.ORTQ_CUDA_NOT_READY:
			return c.lib.cudaError("NCCL all-reduce: cudaStreamQuery", q)
		}
		if err := ctx.Err(); err != nil {
			c.Abort()
			return fmt.Errorf("NCCL all-reduce (rank %d of %d): %w", c.Rank, c.World, err)
		}
		if timeout > 0 && time.Since(start) > timeout {
			c.Abort()
			return fmt.Errorf("%w after %v (rank %d of %d): another rank died or hangs", ErrTimeout, timeout, c.Rank, c.World)
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}

// AsyncError is ncclCommGetAsyncError: nil while the communicator is healthy.
func (c *Comm) AsyncError() error {
	if c.comm == nil {
		return errors.New("NCCL: the communicator is closed")
	}
	var async C.int
	if q := C.ortq_poll(c.lib.c, C.int(c.device), c.comm, c.stream, &async); async != 0 && async != inProgress {
		return c.lib.ncclError("ncclCommGetAsyncError", async)
	} else if q != 0 && q != C.ORTQ_CUDA_NOT_READY {
		return c.lib.cudaError("cudaStreamQuery", q)
	}
	return nil
}

// Abort ends the communicator at once (ncclCommAbort), also while a collective waits for
// a peer that will not come; Destroy (ncclCommDestroy) ends it after its work completes.
func (c *Comm) Abort() error { return c.end(true) }

// Destroy: see Abort.
func (c *Comm) Destroy() error { return c.end(false) }

func (c *Comm) end(abort bool) error {
	if c == nil || (c.comm == nil && c.stream == nil) {
		return nil
	}
	r := C.ortq_comm_end(c.lib.c, C.int(c.device), c.comm, c.stream, b2i(abort))
	c.comm, c.stream = nil, nil
	if r != 0 {
		return c.lib.ncclError("ncclCommDestroy", r)
	}
	return nil
}

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
