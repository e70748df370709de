//go:build linux

package ortrun

import (
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDeviceThread: every run on one CUDA device executes on one OS thread whatever
// goroutine issues it, and each device has its own (see onDevice). The jobs here stand in
// for ONNX Runtime calls; no GPU is needed.
func TestDeviceThread(t *testing.T) {
	a, b := &Session{device: "cuda", deviceID: 90}, &Session{device: "cuda", deviceID: 91}
	tids := func(s *Session) map[int]bool {
		var mu sync.Mutex
		seen := map[int]bool{}
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.onDevice(false, func() error {
					mu.Lock()
					seen[syscall.Gettid()] = true
					mu.Unlock()
					return nil
				}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		return seen
	}
	ta, tb := tids(a), tids(b)
	if len(ta) != 1 || len(tb) != 1 {
		t.Fatalf("runs on one device used %d and %d OS threads, want 1 each", len(ta), len(tb))
	}
	for tid := range ta {
		if tb[tid] {
			t.Errorf("devices 90 and 91 share OS thread %d", tid)
		}
	}
	cpu := &Session{device: "cpu"}
	if err := cpu.onDevice(false, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestCaptureIsExclusive: while one device's run captures a CUDA graph, no run on another
// device executes (CUDA's global capture mode), and runs that do not capture overlap freely.
func TestCaptureIsExclusive(t *testing.T) {
	a, b := &Session{device: "cuda", deviceID: 92}, &Session{device: "cuda", deviceID: 93}
	overlap := func(capture bool) bool {
		started := make(chan struct{})
		var aEnd, bStart time.Time
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = a.onDevice(capture, func() error {
				close(started)
				time.Sleep(50 * time.Millisecond)
				aEnd = time.Now()
				return nil
			})
		}()
		go func() {
			defer wg.Done()
			<-started
			_ = b.onDevice(false, func() error { bStart = time.Now(); return nil })
		}()
		wg.Wait()
		return bStart.Before(aEnd)
	}
	if overlap(true) {
		t.Error("a run on device 93 executed while device 92 captured")
	}
	if !overlap(false) {
		t.Error("runs on two devices did not overlap without a capture")
	}
}
