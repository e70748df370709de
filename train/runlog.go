package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/shirou/gopsutil/v4/mem"

	"github.com/ortq/ortq/internal/runreport"
	"github.com/ortq/ortq/ortrun"
)

// MemRecord is one line of a run's memory and progress log (run.jsonl): written every
// LogEvery optimizer steps and whenever host or GPU memory reaches a new peak — the
// PyTorch recipe's memory callback, with the peaks it would miss between steps.
type MemRecord struct {
	Time       time.Time `json:"time"`
	Step       int       `json:"step"`
	Event      string    `json:"event"` // "step", "peak", "start" (sample lines are SampleRecords)
	Loss       float64   `json:"loss,omitempty"`
	LR         float64   `json:"lr,omitempty"`
	TokensPerS float64   `json:"tokens_per_s,omitempty"`
	GradNorm   Float     `json:"grad_norm,omitempty"` // before clipping; null when not finite
	HostRSS    uint64    `json:"host_rss_bytes"`
	SysUsed    uint64    `json:"sys_used_bytes"`
	SysTotal   uint64    `json:"sys_total_bytes"`
	GPUUsed    uint64    `json:"gpu_used_bytes,omitempty"`
	GPUTotal   uint64    `json:"gpu_total_bytes,omitempty"`
	// GPUPerDevice is each device's GPU memory when the run spans several (Config.GPUDevices),
	// by device name; GPUUsed and GPUTotal are then the busiest device's.
	GPUPerDevice map[string]uint64 `json:"gpu_used_per_device_bytes,omitempty"`
	// Arena is ONNX Runtime's account of the training session's memory (its allocator's
	// in use, peak in use and reserved bytes), beside NVML's GPU figure; absent where the
	// session keeps no arena statistics.
	Arena *ortrun.ArenaStats `json:"ort_arena,omitempty"`
}

// GPUSampler samples one device's GPU memory for the run log (Config.GPUDevices).
type GPUSampler struct {
	Device string
	Sample func() (used, total uint64, ok bool)
}

// arenaSource is what can report its training session's allocator statistics (*Engine).
type arenaSource interface {
	TrainAllocatorStats() (ortrun.ArenaStats, bool, error)
}

// runLog writes MemRecords as JSON lines.
type runLog struct {
	f       *os.File
	enc     *json.Encoder
	every   int
	gpu     func() (uint64, uint64, bool)
	arena   arenaSource // nil: no arena figures
	peakRSS uint64
	peakGPU uint64
	devices []GPUSampler
	// peakPerDevice is each device's highest sample (every sample, logged or not).
	peakPerDevice map[string]uint64
}

// openRunLog starts a run log; a resumed run appends to the one it continues.
func openRunLog(path string, every int, gpu func() (uint64, uint64, bool), resume bool) (*runLog, error) {
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if resume {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	// O_NOFOLLOW: a symbolic link planted at run.jsonl must not be written through.
	f, err := os.OpenFile(path, flags|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("run log %q is a symbolic link: remove it (ortq never writes through one)", path)
	}
	if err != nil {
		return nil, err
	}
	return &runLog{f: f, enc: json.NewEncoder(f), every: every, gpu: gpu}, nil
}

// record samples memory and writes a line when the step is due or a peak is new.
func (l *runLog) record(step int, event string, loss, lr, tps, gradNorm float64) {
	if l == nil {
		return
	}
	r := MemRecord{Time: time.Now().UTC(), Step: step, Event: event, Loss: loss, LR: lr, TokensPerS: tps, GradNorm: Float(gradNorm)}
	if rss, _, err := runreport.DefaultRSSSampler(); err == nil {
		r.HostRSS = rss
	}
	if vm, err := mem.VirtualMemory(); err == nil {
		r.SysUsed, r.SysTotal = vm.Used, vm.Total
	}
	if l.gpu != nil {
		if u, t, ok := l.gpu(); ok {
			r.GPUUsed, r.GPUTotal = u, t
		}
	}
	l.sampleDevices(&r)
	if l.arena != nil {
		if st, ok, err := l.arena.TrainAllocatorStats(); err == nil && ok {
			r.Arena = &st
		}
	}
	due := event != "step" || (l.every > 0 && step%l.every == 0)
	// A new peak is logged when it exceeds the last logged peak by 2 % (and 16 MiB), so
	// allocator noise does not turn the log into one line per step.
	newPeak := func(v, peak uint64) bool { return v > peak+max(peak/50, 16<<20) }
	if newPeak(r.HostRSS, l.peakRSS) || newPeak(r.GPUUsed, l.peakGPU) {
		if !due {
			r.Event, due = "peak", true
		}
	}
	if due {
		l.peakRSS, l.peakGPU = max(l.peakRSS, r.HostRSS), max(l.peakGPU, r.GPUUsed)
	}
	if due {
		_ = l.enc.Encode(r) // the log is diagnostic: a full disk must not stop training here
	}
}

// sampleDevices fills r.GPUPerDevice from the per-device samplers, keeps each device's peak,
// and makes the busiest device's figure r's GPU memory.
func (l *runLog) sampleDevices(r *MemRecord) {
	for _, d := range l.devices {
		u, t, ok := d.Sample()
		if !ok {
			continue
		}
		if r.GPUPerDevice == nil || u > r.GPUUsed {
			r.GPUUsed, r.GPUTotal = u, t
		}
		if r.GPUPerDevice == nil {
			r.GPUPerDevice = map[string]uint64{}
		}
		if l.peakPerDevice == nil {
			l.peakPerDevice = map[string]uint64{}
		}
		r.GPUPerDevice[d.Device] = u
		l.peakPerDevice[d.Device] = max(l.peakPerDevice[d.Device], u)
	}
}

func (l *runLog) close() {
	if l != nil {
		l.f.Close()
	}
}
