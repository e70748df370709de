package bench

import (
	"fmt"
	"math"
	"strings"
)

// Thresholds are `ortq bench compare`'s limits, as fractions of the old value.
type Thresholds struct {
	MaxSlowdown     float64 // fail when throughput falls by more than this (0.25 = 25 %)
	MaxMemoryGrowth float64 // fail when peak memory grows by more than this
	MaxPPLIncrease  float64 // fail when final eval perplexity grows by more than this
	// Normalize: "auto" (scale throughput by reference_ms when every point ran on the
	// CPU, where the reference computation measures the same silicon), "on" or "off".
	Normalize string
}

// DefaultThresholds suit a shared CI runner.
func DefaultThresholds() Thresholds {
	return Thresholds{MaxSlowdown: 0.25, MaxMemoryGrowth: 0.2, MaxPPLIncrease: 0.05, Normalize: "auto"}
}

// Delta is one point's change from the old run to the new.
type Delta struct {
	Point string
	// Throughput: tokens/s, and the relative change new/old − 1 after normalisation.
	OldTPS, NewTPS Float
	TPSChange      Float
	MemBasis       string
	OldMem, NewMem uint64
	MemChange      Float
	OldPPL, NewPPL Float
	PPLChange      Float
	Failures       []string
}

// Comparison is Compare's verdict.
type Comparison struct {
	Normalized     bool
	OldRef, NewRef Float
	Deltas         []Delta
	// Failures are the threshold breaches and missing points; empty means pass.
	Failures []string
	Notes    []string
}

// OK reports whether every threshold held.
func (c *Comparison) OK() bool { return len(c.Failures) == 0 }

// Compare holds the new run against the old point by point (matched by label).
//
// Throughput on a noisy or different machine is compared after normalisation: each run's
// tokens/s is multiplied by its own reference_ms (the time of a fixed pure-Go matmul in
// the same process), so a runner that is uniformly 30 % slower today leaves tokens/s ×
// reference_ms unchanged. Memory and perplexity are not machine-dependent and are
// compared as they are.
func Compare(old, cur *Result, th Thresholds) (*Comparison, error) {
	c := &Comparison{OldRef: old.ReferenceMS, NewRef: cur.ReferenceMS}
	switch th.Normalize {
	case "", "auto":
		c.Normalized = old.ReferenceMS > 0 && cur.ReferenceMS > 0 && allCPU(old) && allCPU(cur)
	case "on":
		if !(old.ReferenceMS > 0 && cur.ReferenceMS > 0) {
			return nil, fmt.Errorf("--normalize on: both results need reference_ms (written by this ortq)")
		}
		c.Normalized = true
	case "off":
	default:
		return nil, fmt.Errorf("--normalize %q: use auto, on or off", th.Normalize)
	}
	byLabel := map[string]*Point{}
	for i := range cur.Points {
		byLabel[cur.Points[i].Label] = &cur.Points[i]
	}
	seen := map[string]bool{}
	for i := range old.Points {
		o := &old.Points[i]
		n, ok := byLabel[o.Label]
		if !ok {
			c.Failures = append(c.Failures, fmt.Sprintf("point %s is in the old result but not in the new one", o.Label))
			continue
		}
		seen[o.Label] = true
		d := c.comparePoint(old, cur, o, n, th)
		for _, f := range d.Failures {
			c.Failures = append(c.Failures, d.Point+": "+f)
		}
		c.Deltas = append(c.Deltas, d)
	}
	for _, p := range cur.Points {
		if !seen[p.Label] {
			c.Notes = append(c.Notes, fmt.Sprintf("point %s is new (not in the old result)", p.Label))
		}
	}
	return c, nil
}

// comparePoint holds point n of cur against point o of old: throughput (normalised by
// each run's reference_ms when c says so), peak memory (GPU where both measured it, else
// host RSS) and final eval perplexity, each against its threshold.
func (c *Comparison) comparePoint(old, cur *Result, o, n *Point, th Thresholds) Delta {
	d := Delta{Point: o.Label, OldTPS: o.TokensPerSec, NewTPS: n.TokensPerSec,
		TPSChange: Float(math.NaN()), MemChange: Float(math.NaN()), PPLChange: Float(math.NaN()),
		OldPPL: Float(math.NaN()), NewPPL: Float(math.NaN())}
	oldT, newT := float64(o.TokensPerSec), float64(n.TokensPerSec)
	if c.Normalized {
		oldT *= float64(old.ReferenceMS)
		newT *= float64(cur.ReferenceMS)
	}
	if oldT > 0 && newT >= 0 && !math.IsNaN(newT) {
		d.TPSChange = Float(newT/oldT - 1)
		if -float64(d.TPSChange) > th.MaxSlowdown {
			d.Failures = append(d.Failures, fmt.Sprintf("throughput %s by %.1f %% (limit %.1f %%)", normWord(c.Normalized), -100*float64(d.TPSChange),
				100*th.MaxSlowdown))
		}
	} else {
		d.Failures = append(d.Failures, "throughput missing")
	}
	switch {
	case o.PeakGPUBytes > 0 && n.PeakGPUBytes > 0:
		d.MemBasis, d.OldMem, d.NewMem = "peak GPU", o.PeakGPUBytes, n.PeakGPUBytes
	case o.PeakRSSBytes > 0 && n.PeakRSSBytes > 0:
		d.MemBasis, d.OldMem, d.NewMem = "peak host RSS", o.PeakRSSBytes, n.PeakRSSBytes
	}
	if d.OldMem > 0 {
		d.MemChange = Float(float64(d.NewMem)/float64(d.OldMem) - 1)
		if float64(d.MemChange) > th.MaxMemoryGrowth {
			d.Failures = append(d.Failures, fmt.Sprintf("%s grew by %.1f %% (limit %.1f %%)", d.MemBasis, 100*float64(d.MemChange), 100*th.MaxMemoryGrowth))
		}
	}
	if o.Eval != nil && n.Eval != nil {
		d.OldPPL, d.NewPPL = o.Eval.After.Perplexity, n.Eval.After.Perplexity
		if d.OldPPL > 0 && !math.IsInf(float64(d.OldPPL), 0) {
			d.PPLChange = d.NewPPL/d.OldPPL - 1
			if math.IsNaN(float64(d.NewPPL)) || math.IsInf(float64(d.NewPPL), 0) {
				d.Failures = append(d.Failures, "final perplexity is not finite")
			} else if float64(d.PPLChange) > th.MaxPPLIncrease {
				d.Failures = append(d.Failures, fmt.Sprintf("final perplexity rose by %.2f %% (limit %.2f %%)", 100*float64(d.PPLChange), 100*th.MaxPPLIncrease))
			}
		}
	} else if o.Eval != nil {
		d.Failures = append(d.Failures, "the new result has no eval perplexity (run with --eval-batches)")
	}
	return d
}

func normWord(norm bool) string {
	if norm {
		return "(normalised by reference_ms) fell"
	}
	return "fell"
}

func allCPU(r *Result) bool {
	for _, p := range r.Points {
		if d := strings.ToLower(p.Device); d != "" && d != "cpu" {
			return false
		}
	}
	return true
}

// Text renders the comparison as a table and a verdict.
func (c *Comparison) Text() string {
	var b strings.Builder
	if c.Normalized {
		fmt.Fprintf(&b, "throughput normalised by reference_ms: old %.2f ms, new %.2f ms\n", float64(c.OldRef), float64(c.NewRef))
	} else {
		b.WriteString("throughput compared as measured (not normalised)\n")
	}
	b.WriteString("| point | tokens/s old → new | change | memory old → new | change | final ppl old → new | change |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, d := range c.Deltas {
		mem := "n/a"
		if d.OldMem > 0 {
			mem = fmt.Sprintf("%s → %s (%s)", fbytes(d.OldMem), fbytes(d.NewMem), d.MemBasis)
		}
		fmt.Fprintf(&b, "| %s | %s → %s | %s | %s | %s | %s → %s | %s |\n", d.Point, ftps(d.OldTPS), ftps(d.NewTPS), fsigned(d.TPSChange),
			mem, fsigned(d.MemChange), fnum(d.OldPPL, 3), fnum(d.NewPPL, 3), fsigned(d.PPLChange))
	}
	for _, n := range c.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if c.OK() {
		b.WriteString("PASS: every threshold held\n")
	} else {
		for _, f := range c.Failures {
			fmt.Fprintf(&b, "FAIL: %s\n", f)
		}
	}
	return b.String()
}

func fsigned(f Float) string {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f %%", 100*v)
}
