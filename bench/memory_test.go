package bench

import (
	"testing"

	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
)

// TestBreakDown: the parts add up to NVML's peak when the arena's figures fit inside it, no
// part is negative when they do not, and a point without arena statistics has no breakdown.
func TestBreakDown(t *testing.T) {
	const gib = 1 << 30
	for _, c := range []struct {
		name             string
		nvml             uint64
		arena            *ortrun.ArenaStats
		weights, state   int64
		shared           int64
		want             *MemoryBreakdown
		sumsToNVML, none bool
	}{
		{name: "3B device step (H200 figures)", nvml: 9 * gib, arena: &ortrun.ArenaStats{PeakInUse: 7 * gib, Reserved: 7*gib + gib/2},
			weights: 2 * gib, state: gib / 16, sumsToNVML: true,
			want: &MemoryBreakdown{Weights: 2 * gib, StepState: gib / 16, Activations: 5*gib - gib/16, ArenaSlack: gib / 2, OutsideArena: gib + gib/2}},
		{name: "arena larger than NVML's sample", nvml: 6 * gib, arena: &ortrun.ArenaStats{PeakInUse: 7 * gib, Reserved: 7 * gib},
			weights: 8 * gib, state: 0,
			want: &MemoryBreakdown{Weights: 8 * gib}},
		{name: "4-bit weights shared outside the arena", nvml: 9 * gib, arena: &ortrun.ArenaStats{PeakInUse: 6 * gib, Reserved: 6*gib + gib/2},
			weights: 2 * gib, shared: gib + gib/4, state: gib / 16, sumsToNVML: true,
			want: &MemoryBreakdown{Weights: 2 * gib, StepState: gib / 16, Activations: 5*gib + gib/4 - gib/16, ArenaSlack: gib / 2, OutsideArena: gib + gib/4}},
		{name: "no arena statistics", nvml: 6 * gib, none: true},
		{name: "no NVML", arena: &ortrun.ArenaStats{PeakInUse: gib, Reserved: gib}, none: true},
	} {
		p := &Point{PeakGPUBytes: c.nvml, ORTArena: c.arena, SharedWeightBytes: c.shared}
		got := breakDown(p, c.weights, c.state)
		if c.none {
			if got != nil {
				t.Errorf("%s: breakdown %+v, want none", c.name, got)
			}
			continue
		}
		if got == nil || *got != *c.want {
			t.Errorf("%s: breakdown %+v, want %+v", c.name, got, c.want)
			continue
		}
		if sum := got.Weights + got.StepState + got.Activations + got.ArenaSlack + got.OutsideArena; c.sumsToNVML && sum != int64(c.nvml) {
			t.Errorf("%s: parts add up to %d, NVML %d", c.name, sum, c.nvml)
		}
	}
}

// TestStepStateBytes: two sets of four flat vectors and the stats for the device step.
func TestStepStateBytes(t *testing.T) {
	if got, want := stepStateBytes(train.StepGraph, 2293760), int64(2*(4*2293760+3)*4); got != want {
		t.Errorf("graph: %d, want %d", got, want)
	}
	if got, want := stepStateBytes(train.StepHost, 100), int64(800); got != want {
		t.Errorf("host: %d, want %d", got, want)
	}
}
