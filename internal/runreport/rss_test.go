package runreport

import (
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseProcStatus(t *testing.T) {
	rss, hwm, err := parseProcStatus([]byte("Name:\tortq\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads: 3\n"))
	if err != nil || rss != 1<<20 || hwm != 2<<20 {
		t.Errorf("rss %d hwm %d err %v", rss, hwm, err)
	}
	for _, bad := range []string{"Name: x\n", "VmRSS: lots kB\n", "VmRSS:\n"} {
		if _, _, err := parseProcStatus([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRSSMonitorPeak(t *testing.T) {
	var n atomic.Int64
	seq := []uint64{100, 500, 300} // the peak sits between samples of the loop
	sampler := func() (uint64, uint64, error) {
		i := n.Add(1) - 1
		if int(i) < len(seq) {
			return seq[i], 0, nil
		}
		return 200, 0, nil
	}
	m := NewRSSMonitor(time.Millisecond, sampler)
	m.Start()
	m.Start() // no-op
	for n.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	if peak := m.Stop(); peak != 500 {
		t.Errorf("peak %d, want 500", peak)
	}
	m.Stop() // safe twice

	hwm := NewRSSMonitor(time.Hour, func() (uint64, uint64, error) { return 10, 999, nil })
	if hwm.Stop() != 999 {
		t.Error("high-water mark ignored")
	}
	failing := NewRSSMonitor(time.Hour, func() (uint64, uint64, error) { return 0, 0, errors.New("no /proc") })
	if failing.Stop() != 0 || failing.Err() == nil {
		t.Error("sampling error not reported")
	}
}

func TestDefaultRSSSampler(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	rss, hwm, err := DefaultRSSSampler()
	if err != nil || rss == 0 || hwm < rss {
		t.Errorf("rss %d hwm %d err %v", rss, hwm, err)
	}
}
