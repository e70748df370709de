package bench

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
)

// peakMemory is a point's peak: GPU (NVML, or the peer's own figure) when measured, else
// host RSS; gpu says which.
func peakMemory(p *Point) (bytes uint64, gpu bool) {
	if v, _ := peerGPUPeak(p); v > 0 {
		return v, true
	}
	return p.PeakRSSBytes, false
}

// Frontier is the best ortq point that needs no more memory than a peer point, against it.
type Frontier struct {
	Peer, Ours *Point
	PeerTool   string
	Ratio      float64 // ours tokens/s over the peer's
}

// AtPeerMemory returns, for each peer point with a peak, the fastest ortq point of r (by
// MedianTokensPerSec) whose
// peak is at most the peer's (ok=false when no ortq point fits): the speed ortq reaches
// within the memory the peer used, whatever its recomputation or micro-batch. Only points of
// the same sequence length are compared; the micro-batch may differ, since tokens/s is what
// is held against the memory.
func AtPeerMemory(r *Result, peers Peers) []Frontier {
	var out []Frontier
	for _, pr := range peers {
		for i := range pr.Points {
			q := &pr.Points[i]
			limit, _ := peakMemory(q)
			if limit == 0 || q.TokensPerSec <= 0 {
				continue
			}
			var best *Point
			for j := range r.Points {
				p := &r.Points[j]
				if m, _ := peakMemory(p); m == 0 || m > limit || p.Params.SeqLen != q.Params.SeqLen {
					continue
				}
				if best == nil || MedianTokensPerSec(p) > MedianTokensPerSec(best) {
					best = p
				}
			}
			if best != nil {
				out = append(out, Frontier{Peer: q, Ours: best, PeerTool: pr.Tool, Ratio: float64(MedianTokensPerSec(best)) / float64(MedianTokensPerSec(q))})
			}
		}
	}
	return out
}

// frontierPlot draws tokens/s against peak memory: every ortq point and every peer point
// (nil with fewer than two points in all).
func frontierPlot(r *Result, peers Peers) (*plot.Plot, error) {
	xy := func(pts []Point) (plotter.XYs, bool) {
		var out plotter.XYs
		gpu := false
		for i := range pts {
			m, g := peakMemory(&pts[i])
			if m == 0 || pts[i].TokensPerSec <= 0 {
				continue
			}
			gpu = gpu || g
			out = append(out, plotter.XY{X: gib(m), Y: finite(float64(pts[i].TokensPerSec))})
		}
		return out, gpu
	}
	ours, gpu := xy(r.Points)
	args := []any{"ortq", ours}
	n := len(ours)
	for _, pr := range peers {
		theirs, _ := xy(pr.Points)
		n += len(theirs)
		if len(theirs) > 0 {
			args = append(args, pr.Tool, theirs)
		}
	}
	if n < 2 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "tokens/s against peak memory"
	p.X.Label.Text = "peak host RSS (GiB)"
	if gpu {
		p.X.Label.Text = "peak GPU memory (GiB)"
	}
	p.Y.Label.Text = "tokens/s"
	if err := plotutil.AddScatters(p, args...); err != nil {
		return nil, fmt.Errorf("frontier plot: %w", err)
	}
	p.Legend.Top = true
	return p, nil
}
