package runreport

import "time"

// Every calls sample every interval, in a goroutine, until stop is closed, and then closes
// done.
func Every(interval time.Duration, stop <-chan struct{}, done chan<- struct{}, sample func()) {
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	}()
}
