package runreport

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// RSSSampler returns the current resident set size and, where the OS keeps
// one, the kernel's high-water mark (0 if unknown), both in bytes.
type RSSSampler func() (rss, hwm uint64, err error)

// DefaultRSSSampler is used by NewRSSMonitor. rss_gopsutil.go sets it at init to
// gopsutil's process.MemoryInfo (portable beyond Linux), combined with the VmHWM of
// /proc/self/status: the kernel's exact peak, which sampling alone can miss and gopsutil
// does not report. procStatusSampler (/proc/self/status alone) is its starting value.
var DefaultRSSSampler RSSSampler = procStatusSampler

func procStatusSampler() (rss, hwm uint64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read host memory use: %w", err)
	}
	return parseProcStatus(b)
}

// parseProcStatus extracts VmRSS and VmHWM ("VmRSS:   1234 kB").
func parseProcStatus(b []byte) (rss, hwm uint64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	found := false
	for sc.Scan() {
		line := sc.Bytes()
		var dst *uint64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst, found = &rss, true
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &hwm
		default:
			continue
		}
		fields := bytes.Fields(line[6:])
		if len(fields) == 0 {
			return 0, 0, fmt.Errorf("malformed /proc/self/status line %q", line)
		}
		v, perr := strconv.ParseUint(string(fields[0]), 10, 64)
		if perr != nil {
			return 0, 0, fmt.Errorf("malformed /proc/self/status line %q", line)
		}
		*dst = v * 1024 // the kernel reports kB
	}
	if !found {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/self/status")
	}
	return rss, hwm, nil
}

// RSSMonitor samples this process's resident set size on a small goroutine
// and keeps the peak, for the run report. Where the OS reports a high-water
// mark (Linux VmHWM) the peak includes it, so spikes shorter than the
// interval are not missed; Start and Stop each take a sample too.
type RSSMonitor struct {
	interval time.Duration
	sample   RSSSampler

	mu   sync.Mutex
	peak uint64
	err  error

	loop Loop
}

// NewRSSMonitor watches the current process every interval (≤ 0 → 200 ms)
// with DefaultRSSSampler, or with sampler if non-nil (tests).
func NewRSSMonitor(interval time.Duration, sampler RSSSampler) *RSSMonitor {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	if sampler == nil {
		sampler = DefaultRSSSampler
	}
	return &RSSMonitor{interval: interval, sample: sampler}
}

// Sample reads memory use now and folds it into the peak.
func (m *RSSMonitor) Sample() {
	rss, hwm, err := m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.err = err
		return
	}
	m.peak = max(m.peak, rss, hwm)
}

// Start takes a sample and begins sampling every interval; called again before Stop it
// only takes a sample.
func (m *RSSMonitor) Start() {
	m.Sample()
	m.loop.Start(m.interval, m.Sample)
}

// Stop ends sampling (waiting for the goroutine), takes a last sample and
// returns the peak in bytes. Safe to call without Start or twice.
func (m *RSSMonitor) Stop() uint64 {
	m.loop.Stop()
	m.Sample()
	return m.Peak()
}

// Peak returns the largest memory use seen so far, in bytes.
func (m *RSSMonitor) Peak() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

// Err returns the last sampling error (e.g. no /proc), if any.
func (m *RSSMonitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}
