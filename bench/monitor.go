package bench

import (
	"bufio"
	"encoding/json"
	"os"
	"sync"
	"time"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/runreport"

	"github.com/shirou/gopsutil/v4/mem"
)

// MemSample is one line of memory.jsonl.
type MemSample struct {
	TMS   float64 `json:"t_ms"` // since the run started
	Point string  `json:"point,omitempty"`
	// Phase: "open" (sessions being created), "eval_before", "warmup", "measure",
	// "eval_after"; Step counts optimizer steps within the point.
	Phase string `json:"phase,omitempty"`
	Step  int    `json:"step,omitempty"`
	// Boundary marks a sample taken at a step or phase boundary (others are periodic).
	Boundary   bool   `json:"boundary,omitempty"`
	HostRSS    uint64 `json:"host_rss_bytes"`
	HostUsed   uint64 `json:"host_used_bytes,omitempty"` // whole system (gopsutil)
	GPUProcess uint64 `json:"gpu_process_bytes,omitempty"`
	GPUUsed    uint64 `json:"gpu_used_bytes,omitempty"` // whole device
	GPUTotal   uint64 `json:"gpu_total_bytes,omitempty"`
}

// monitor samples host and GPU memory on a goroutine every interval and at every mark,
// keeping a timeline and per-point peaks. One monitor serves a whole Run; begin/end
// bracket each point.
type monitor struct {
	start    time.Time
	interval time.Duration
	gpu      gpuProbe
	rss      runreport.RSSSampler
	// gpuBaseline is device used memory before the run (for the device-delta fallback).
	gpuBaseline uint64

	mu       sync.Mutex
	samples  []MemSample
	point    string
	phase    string
	step     int
	procPeak uint64
	procSeen bool
	devPeak  uint64
	gpuErr   error
	// counting is on in the phases whose memory is the point's peak (training: "open",
	// "warmup", "measure"); evaluation is sampled for the timeline only.
	counting bool

	loop runreport.Loop
}

func newMonitor(start time.Time, interval time.Duration, gpu gpuProbe) *monitor {
	if interval <= 0 {
		interval = 10 * time.Millisecond
	}
	m := &monitor{start: start, interval: interval, gpu: gpu, rss: runreport.DefaultRSSSampler}
	if gpu != nil {
		if _, _, used, _, err := gpu.sample(); err == nil {
			m.gpuBaseline = used
		}
	}
	return m
}

func (m *monitor) sampleNow(boundary bool) {
	s := MemSample{TMS: float64(time.Since(m.start)) / float64(time.Millisecond), Boundary: boundary}
	if rss, _, err := m.rss(); err == nil {
		s.HostRSS = rss
	}
	if boundary {
		// /proc/meminfo is parsed in full: at boundaries only, to keep periodic samples cheap.
		if vm, err := mem.VirtualMemory(); err == nil {
			s.HostUsed = vm.Used
		}
	}
	var gerr error
	if m.gpu != nil {
		var ok bool
		s.GPUProcess, ok, s.GPUUsed, s.GPUTotal, gerr = m.gpu.sample()
		if !ok {
			s.GPUProcess = 0
		}
		m.mu.Lock()
		if gerr == nil && m.counting {
			if ok {
				m.procSeen = true
				m.procPeak = max(m.procPeak, s.GPUProcess)
			}
			m.devPeak = max(m.devPeak, s.GPUUsed)
		} else if gerr != nil {
			m.gpuErr = gerr
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	s.Point, s.Phase, s.Step = m.point, m.phase, m.step
	m.samples = append(m.samples, s)
	m.mu.Unlock()
}

func countPhase(phase string) bool { return phase == "open" || phase == "warmup" || phase == "measure" }

// begin starts sampling for a point, with fresh peaks.
func (m *monitor) begin(point, phase string) {
	m.mu.Lock()
	m.point, m.phase, m.step = point, phase, 0
	m.procPeak, m.procSeen, m.devPeak, m.gpuErr = 0, false, 0, nil
	m.counting = countPhase(phase)
	m.mu.Unlock()
	m.sampleNow(true)
	m.loop.Start(m.interval, func() { m.sampleNow(false) })
}

// mark records a phase/step boundary and samples at it.
func (m *monitor) mark(phase string, step int) {
	m.mu.Lock()
	m.phase, m.step = phase, step
	m.counting = countPhase(phase)
	m.mu.Unlock()
	m.sampleNow(true)
}

// gpuPeak is what end reports for a point.
type gpuPeak struct {
	bytes, device uint64
	source        string
	err           error
}

// end stops sampling (a last sample included) and returns the point's GPU peak.
func (m *monitor) end() gpuPeak {
	m.mark("done", 0)
	m.loop.Stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gpu == nil {
		return gpuPeak{}
	}
	p := gpuPeak{device: m.devPeak, err: m.gpuErr}
	switch {
	case m.procSeen:
		p.bytes, p.source = m.procPeak, "nvml-process"
	case m.devPeak > 0:
		if m.devPeak > m.gpuBaseline {
			p.bytes = m.devPeak - m.gpuBaseline
		}
		p.source = "nvml-device-delta"
	}
	return p
}

func (m *monitor) timeline() []MemSample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]MemSample(nil), m.samples...)
}

// WriteTimeline writes samples as JSON lines, atomically.
func WriteTimeline(path string, samples []MemSample) error {
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		for _, s := range samples {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// resetPeakRSS resets the kernel's VmHWM to the current RSS (Linux ≥ 4.0:
// /proc/self/clear_refs "5"), so a point's peak host RSS is not the peak of whatever the
// process did before — `prepare` of a 3B model in the same process, or an earlier point.
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}
