package bench

import (
	"strings"
	"testing"
)

// TestAtPeerMemory: the fastest ortq point within the peer's peak, any micro-batch or
// recomputation, is held against the peer point; points over the peak or of another
// sequence length are not; a peer peak below every ortq point gives nothing.
func TestAtPeerMemory(t *testing.T) {
	gib := uint64(1 << 30)
	pt := func(mb, seq int, rec string, tps float64, peak uint64) Point {
		return Point{Params: Params{MicroBatch: mb, SeqLen: seq, Recompute: rec}, TokensPerSec: Float(tps), PeakGPUBytes: peak}
	}
	r := &Result{Tool: "ortq", Points: []Point{
		pt(7, 512, "layer", 17000, 5*gib),
		pt(7, 512, "selective", 19000, 10*gib),
		pt(7, 512, "none", 22000, 18*gib), // over the peer's 13.7 GiB
		pt(7, 256, "none", 30000, 9*gib),  // another sequence length
	}}
	peer := &Result{Tool: "torch", Points: []Point{pt(7, 512, "layer", 16000, 13*gib+700<<20), pt(7, 512, "layer", 9000, 2*gib)}}
	fs := AtPeerMemory(r, Peers{peer})
	if len(fs) != 1 {
		t.Fatalf("%d frontier rows, want 1: %+v", len(fs), fs)
	}
	if f := fs[0]; f.Ours.Params.Recompute != "selective" || f.Ratio < 1.187 || f.Ratio > 1.188 {
		t.Errorf("within 13.7 GiB: %s at %.3f×, want selective at 1.1875×", f.Ours.Params.Label(), f.Ratio)
	}
	if s := Summary(r, Peers{peer}); !strings.Contains(s, "Within the peer's peak memory") || !strings.Contains(s, "1.19×") {
		t.Errorf("summary lacks the frontier row:\n%s", s)
	}
	if p, err := frontierPlot(r, Peers{peer}); err != nil || p == nil {
		t.Errorf("frontier plot: %v, %v", p, err)
	}
}
