package ortrun

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// ArenaStats is what ONNX Runtime's allocator of one session reports (AllocatorGetStats):
// for the CUDA provider the BFC arena in GPU memory, on the CPU the CPU arena. Sizes are in
// bytes. These are ONNX Runtime's own figures; NVML's process peak is larger by the CUDA
// context, cuBLAS/cuDNN workspaces and anything allocated outside the arena.
type ArenaStats struct {
	// Device is the allocator's memory: "cpu" or "cuda:N".
	Device string `json:"device"`
	// InUse is what the arena hands out now; PeakInUse its peak since the session began.
	InUse     int64 `json:"in_use_bytes"`
	PeakInUse int64 `json:"peak_in_use_bytes"`
	// Reserved is what the arena holds from the device (ONNX Runtime's TotalAllocated),
	// in use or not: the figure to compare with NVML.
	Reserved int64 `json:"reserved_bytes"`
	// Limit is the arena's cap (gpu_mem_limit); ≤ 0 when there is none.
	Limit int64 `json:"limit_bytes,omitempty"`
	// NumAllocs counts allocations; NumReserves, blocks reserved outside the arena's bins
	// (initializers); NumArenaExtensions, how often the arena grew; MaxAllocSize, the largest
	// single allocation.
	NumAllocs          int64 `json:"num_allocs"`
	NumReserves        int64 `json:"num_reserves"`
	NumArenaExtensions int64 `json:"num_arena_extensions"`
	NumArenaShrinkages int64 `json:"num_arena_shrinkages,omitempty"`
	MaxAllocSize       int64 `json:"max_alloc_bytes"`
}

// memoryInfo describes the memory of the session's device: the CUDA device's for a CUDA
// session (where ONNX Runtime keeps activations and initializers), else the CPU's.
func (s *Session) memoryInfo() (*ort.MemoryInfo, string, error) {
	if s.device == "cuda" {
		mi, err := ort.NewCUDAMemoryInfo(s.deviceID)
		return mi, fmt.Sprintf("cuda:%d", s.deviceID), err
	}
	mi, err := ort.NewCPUMemoryInfo()
	return mi, "cpu", err
}

// AllocatorStats returns the statistics of the session's allocator for its device (the CUDA
// arena for a CUDA session, the CPU arena otherwise). ok is false when that allocator keeps
// none (an allocator without an arena, e.g. with the CPU arena disabled).
func (s *Session) AllocatorStats() (stats ArenaStats, ok bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.sess == nil {
		return ArenaStats{}, false, fmt.Errorf("allocator statistics: session is closed")
	}
	mi, device, err := s.memoryInfo()
	if err != nil {
		return ArenaStats{}, false, fmt.Errorf("allocator statistics: %w", err)
	}
	defer mi.Destroy()
	a, err := s.sess.CreateAllocator(mi)
	if err != nil {
		return ArenaStats{}, false, fmt.Errorf("allocator statistics for %s: %w", device, err)
	}
	defer a.Destroy()
	kv, err := a.GetStats()
	if err != nil {
		return ArenaStats{}, false, fmt.Errorf("allocator statistics for %s: %w", device, err)
	}
	if len(kv) == 0 {
		return ArenaStats{Device: device}, false, nil
	}
	st, err := ort.ParseAllocatorStats(kv)
	if err != nil {
		return ArenaStats{}, false, fmt.Errorf("allocator statistics for %s: %w", device, err)
	}
	return ArenaStats{
		Device:             device,
		InUse:              st.InUse,
		PeakInUse:          st.MaxInUse,
		Reserved:           st.TotalAllocated,
		Limit:              st.Limit,
		NumAllocs:          st.NumAllocs,
		NumReserves:        st.NumReserves,
		NumArenaExtensions: st.NumArenaExtensions,
		NumArenaShrinkages: st.NumArenaShrinkages,
		MaxAllocSize:       st.MaxAllocSize,
	}, true, nil
}
