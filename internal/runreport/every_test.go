package runreport

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestLoop: f runs repeatedly until Stop, not after it returns; a second Start while
// running is refused; Stop is safe twice and the loop can start again.
func TestLoop(t *testing.T) {
	var l Loop
	l.Stop() // without Start
	var n atomic.Int32
	if !l.Start(time.Millisecond, func() { n.Add(1) }) {
		t.Fatal("Start refused on a new loop")
	}
	if l.Start(time.Millisecond, func() { t.Error("second loop ran") }) {
		t.Error("a second Start while running was accepted")
	}
	for n.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	l.Stop()
	after := n.Load()
	time.Sleep(5 * time.Millisecond)
	if n.Load() != after {
		t.Error("f ran after Stop returned")
	}
	l.Stop()
	if !l.Start(time.Hour, func() {}) {
		t.Error("Start refused after Stop")
	}
	l.Stop()
}
