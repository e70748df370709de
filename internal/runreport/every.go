package runreport

import (
	"sync"
	"time"
)

// A Loop calls a function periodically on a goroutine between Start and Stop: the loop
// behind the run log's host-memory monitor (RSSMonitor) and bench's memory timeline.
// The zero value is ready to use.
type Loop struct {
	mu         sync.Mutex
	stop, done chan struct{}
}

// Start calls f every interval until Stop; it returns false, and does nothing, when the
// loop is already running.
func (l *Loop) Start(interval time.Duration, f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop != nil {
		return false
	}
	stop, done := make(chan struct{}), make(chan struct{})
	l.stop, l.done = stop, done
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return true
}

// Stop ends the loop and waits until f has returned for the last time; it is safe to call
// without Start or twice.
func (l *Loop) Stop() {
	l.mu.Lock()
	stop, done := l.stop, l.done
	l.stop, l.done = nil, nil
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
