package runreport

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestEvery: the sampler runs repeatedly until stop, and done is closed after the last call.
func TestEvery(t *testing.T) {
	var n atomic.Int32
	stop, done := make(chan struct{}), make(chan struct{})
	Every(time.Millisecond, stop, done, func() { n.Add(1) })
	for n.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("done not closed after stop")
	}
	after := n.Load()
	time.Sleep(5 * time.Millisecond)
	if n.Load() != after {
		t.Error("sampled after done")
	}
}
