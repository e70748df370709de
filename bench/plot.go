package bench

import (
	"bufio"
	"fmt"
	"github.com/ortq/ortq/internal/fsutil"
	"image/color"
	"math"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WritePlots draws the report's figures into dir as PNG and SVG and returns the PNG file
// names (for report.md): tokens/s and peak memory per sweep point (peers beside ortq),
// memory over time, and training loss per step.
func WritePlots(dir string, r *Result, peers Peers) ([]string, error) {
	if len(r.Points) == 0 {
		return nil, nil
	}
	labels := shortLabels(r.Points)
	var files []string
	save := func(p *plot.Plot, name string, w vg.Length) error {
		for _, ext := range []string{"png", "svg"} {
			wt, err := p.WriterTo(w, 4*vg.Inch, ext)
			if err != nil {
				return fmt.Errorf("plot %s: %w", name, err)
			}
			path := filepath.Join(dir, name+"."+ext)
			if err := fsutil.WriteFileAtomic(path, 0o644, func(bw *bufio.Writer) error { _, err := wt.WriteTo(bw); return err }); err != nil {
				return err
			}
		}
		files = append(files, name+".png")
		return nil
	}
	width := vg.Length(math.Max(6, 1.2*float64(len(r.Points))+3)) * vg.Inch
	if err := save(throughputPlot(r, peers, labels), "throughput", width); err != nil {
		return nil, err
	}
	if err := save(memoryPlot(r, peers, labels), "memory", width); err != nil {
		return nil, err
	}
	// memory over time, loss per step
	for _, f := range []struct {
		name string
		make func() (*plot.Plot, error)
	}{{"memory_timeline", func() (*plot.Plot, error) { return timelinePlot(r) }}, {"loss", func() (*plot.Plot, error) { return lossPlot(r, labels) }},
		{"frontier", func() (*plot.Plot, error) { return frontierPlot(r, peers) }}} {
		p, err := f.make()
		if err != nil {
			return nil, err
		}
		if p != nil {
			if err := save(p, f.name, 8*vg.Inch); err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

// throughputPlot is tokens/s per sweep point, the matching peer's beside ortq's.
func throughputPlot(r *Result, peers Peers, labels []string) *plot.Plot {
	ours := make(plotter.Values, len(r.Points))
	theirs := make(plotter.Values, len(r.Points))
	havePeer := false
	peerName := ""
	for i, p := range r.Points {
		ours[i] = finite(float64(p.TokensPerSec))
		if pr, q, ok := peers.MatchPeer(p); ok {
			theirs[i], havePeer, peerName = finite(float64(q.TokensPerSec)), true, pr.Tool
		}
	}
	return bars("tokens/s per sweep point", "tokens/s", labels, ours, theirs, havePeer, peerName)
}

// memoryPlot is peak memory per sweep point, the matching peer's beside ortq's: GPU when
// measured, else host RSS.
func memoryPlot(r *Result, peers Peers, labels []string) *plot.Plot {
	useGPU := false
	for _, p := range r.Points {
		useGPU = useGPU || p.PeakGPUBytes > 0
	}
	ours := make(plotter.Values, len(r.Points))
	theirs := make(plotter.Values, len(r.Points))
	havePeer := false
	peerName := ""
	for i, p := range r.Points {
		if useGPU {
			ours[i] = gib(p.PeakGPUBytes)
			if pr, q, ok := peers.MatchPeer(p); ok {
				v, _ := peerGPUPeak(q)
				theirs[i], havePeer, peerName = gib(v), v > 0 || havePeer, pr.Tool
			}
		} else {
			ours[i] = gib(p.PeakRSSBytes)
			if pr, q, ok := peers.MatchPeer(p); ok {
				theirs[i], havePeer, peerName = gib(q.PeakRSSBytes), q.PeakRSSBytes > 0 || havePeer, pr.Tool
			}
		}
	}
	what := "peak host RSS (GiB)"
	if useGPU {
		what = "peak GPU memory (GiB)"
	}
	return bars(what+" per sweep point", "GiB", labels, ours, theirs, havePeer, peerName)
}

// timelinePlot is host RSS and GPU memory over the run (nil without a timeline).
func timelinePlot(r *Result) (*plot.Plot, error) {
	if len(r.Timeline) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "memory over time"
	p.X.Label.Text = "seconds since start"
	p.Y.Label.Text = "GiB"
	host := make(plotter.XYs, 0, len(r.Timeline))
	var gpu plotter.XYs
	for _, s := range r.Timeline {
		host = append(host, plotter.XY{X: s.TMS / 1000, Y: gib(s.HostRSS)})
		if v := s.GPUProcess; v > 0 {
			gpu = append(gpu, plotter.XY{X: s.TMS / 1000, Y: gib(v)})
		} else if s.GPUUsed > 0 {
			gpu = append(gpu, plotter.XY{X: s.TMS / 1000, Y: gib(s.GPUUsed)})
		}
	}
	args := []any{"host RSS", host}
	if len(gpu) > 0 {
		args = append(args, "GPU used", gpu)
	}
	if err := plotutil.AddLines(p, args...); err != nil {
		return nil, err
	}
	p.Legend.Top = true
	return p, nil
}

// lossPlot is every point's loss per step (nil when no point has a finite loss).
func lossPlot(r *Result, labels []string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "training loss per step (warm-up included)"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	var args []any
	for i, pt := range r.Points {
		var xy plotter.XYs
		for s, l := range pt.Losses {
			if v := float64(l); !math.IsNaN(v) && !math.IsInf(v, 0) {
				xy = append(xy, plotter.XY{X: float64(s + 1), Y: v})
			}
		}
		if len(xy) > 0 {
			args = append(args, labels[i], xy)
		}
	}
	if len(args) == 0 {
		return nil, nil
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	p.Legend.Top = true
	return p, nil
}

func bars(title, ylabel string, labels []string, ours, theirs plotter.Values, havePeer bool, peerName string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	w := vg.Points(18)
	a, err := plotter.NewBarChart(ours, w)
	if err != nil {
		panic(err) // Values are finite by construction
	}
	a.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	a.LineStyle.Width = 0
	p.Add(a)
	p.Legend.Add("ortq", a)
	if havePeer {
		b, err := plotter.NewBarChart(theirs, w)
		if err != nil {
			panic(err)
		}
		b.Color = color.RGBA{R: 255, G: 127, B: 14, A: 255}
		b.LineStyle.Width = 0
		a.Offset, b.Offset = -w/2, w/2
		p.Add(b)
		p.Legend.Add(peerName, b)
	}
	p.Legend.Top = true
	p.NominalX(labels...)
	p.Y.Min = 0
	// Headroom above the tallest bar keeps the legend clear of it.
	top := 0.0
	for i := range ours {
		top = max(top, ours[i], theirs[i])
	}
	if top > 0 {
		p.Y.Max = 1.2 * top
	}
	return p
}

// shortLabels names points by the options that differ between them.
func shortLabels(pts []Point) []string {
	type kv struct{ k, v string }
	fields := func(p Params) []kv {
		return []kv{{"mb", fmt.Sprint(p.MicroBatch)}, {"seq", fmt.Sprint(p.SeqLen)}, {"bits", fmt.Sprint(p.Bits)},
			{"rc", orNone(p.Recompute)}, {"t", strings.ReplaceAll(joinComma(p.Targets), "_proj", "")}}
	}
	vary := make([]bool, 5)
	for _, p := range pts[1:] {
		for i, f := range fields(p.Params) {
			vary[i] = vary[i] || f != fields(pts[0].Params)[i]
		}
	}
	out := make([]string, len(pts))
	for i, p := range pts {
		var parts []string
		for j, f := range fields(p.Params) {
			if vary[j] {
				parts = append(parts, f.k+"="+f.v)
			}
		}
		if len(parts) == 0 {
			parts = []string{fmt.Sprintf("mb=%d seq=%d", p.Params.MicroBatch, p.Params.SeqLen)}
		}
		out[i] = strings.Join(parts, " ")
	}
	return out
}

func gib(n uint64) float64 { return float64(n) / (1 << 30) }

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
