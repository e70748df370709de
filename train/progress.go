package train

import (
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
)

// ProgressOptions configures a Progress.
type ProgressOptions struct {
	// Total optimizer steps; ≤ 0 when unknown (a spinner, no ETA).
	Total int
	// Writer receives the bar; nil means os.Stderr, so stdout stays clean
	// for piping.
	Writer io.Writer
	// Quiet disables all drawing (tests, --quiet, non-terminal CI logs); the
	// last values are still kept for Last.
	Quiet bool
	// Throttle limits redraws (0 → 100 ms, negative → every update).
	Throttle time.Duration
	// Start is the step the bar starts at (a resumed run's checkpoint step).
	Start int
	// Bar forces the redrawn bar even when Writer is not a terminal. Otherwise a Writer
	// that is not a terminal (a CI log, `make demo | tee`, a buffer) gets a plain line
	// every LineEvery steps (and at the last step) instead of one endless line of redraws.
	Bar bool
	// LineEvery is the step interval of the plain lines (0 → a tenth of Total, at least 1;
	// 10 when Total is unknown).
	LineEvery int
}

// Progress is the training progress line: step/total, loss, tokens/s and
// the bar's own elapsed:remaining (ETA) estimate.
type Progress struct {
	bar   *progressbar.ProgressBar
	quiet bool
	w     io.Writer
	last  ProgressUpdate
	// plain: no bar, a line every `every` steps (Writer is not a terminal).
	plain   bool
	every   int
	total   int
	printed int // the step of the last plain line
	start   time.Time
}

// ProgressUpdate is what the loop reports after each optimizer step.
type ProgressUpdate struct {
	Step         int
	Loss         float64
	TokensPerSec float64
	LR           float64
	LossScale    float32
	// GradNorm is the step's gradient norm before clipping (0: not shown).
	GradNorm float64
}

// NewProgress creates the display.
func NewProgress(opts ProgressOptions) *Progress {
	p := &Progress{quiet: opts.Quiet, w: opts.Writer}
	if p.w == nil {
		p.w = os.Stderr
	}
	if p.quiet {
		return p
	}
	if !opts.Bar && !isTerminal(p.w) {
		p.plain, p.total, p.start = true, opts.Total, time.Now()
		p.every = opts.LineEvery
		if p.every <= 0 {
			p.every = 10
			if opts.Total > 0 {
				p.every = max(1, opts.Total/10)
			}
		}
		return p
	}
	throttle := opts.Throttle
	if throttle == 0 {
		throttle = 100 * time.Millisecond
	} else if throttle < 0 {
		throttle = 0
	}
	total := opts.Total
	if total <= 0 {
		total = -1
	}
	p.bar = progressbar.NewOptions(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription("training"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(throttle),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
	if opts.Start > 0 {
		_ = p.bar.Set(opts.Start)
	}
	return p
}

// isTerminal reports whether w is a character device (a terminal), where the bar's
// carriage-return redraws make sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Describe formats the description the bar shows for u.
func (u ProgressUpdate) Describe() string {
	s := fmt.Sprintf("loss %s | %s tok/s", fmtLoss(u.Loss), fmtRate(u.TokensPerSec))
	if u.LR > 0 {
		s += fmt.Sprintf(" | lr %.2e", u.LR)
	}
	if u.GradNorm != 0 {
		s += fmt.Sprintf(" | grad norm %.3g", u.GradNorm)
	}
	if u.LossScale > 0 && u.LossScale != 1 {
		s += fmt.Sprintf(" | scale %g", u.LossScale)
	}
	return s
}

func fmtLoss(l float64) string {
	if math.IsNaN(l) || math.IsInf(l, 0) {
		return fmt.Sprint(l)
	}
	return fmt.Sprintf("%.4f", l)
}

func fmtRate(r float64) string {
	switch {
	case r >= 1e4:
		return fmt.Sprintf("%.0f", r)
	default:
		return fmt.Sprintf("%.1f", r)
	}
}

// Update records a finished optimizer step and redraws (throttled).
func (p *Progress) Update(u ProgressUpdate) {
	p.last = u
	if p.quiet {
		return
	}
	if p.plain {
		if u.Step%p.every == 0 || u.Step == p.total || u.Step == 1 {
			p.line(u)
		}
		return
	}
	p.bar.Describe(u.Describe())
	_ = p.bar.Set(u.Step)
}

// line prints one plain progress line: step/total, the description, elapsed time.
func (p *Progress) line(u ProgressUpdate) {
	p.printed = u.Step
	step := fmt.Sprint(u.Step)
	if p.total > 0 {
		step += fmt.Sprintf("/%d", p.total)
	}
	fmt.Fprintf(p.w, "training step %s | %s | %s\n", step, u.Describe(), time.Since(p.start).Round(time.Second))
}

// flush prints the last update's plain line unless it is already printed.
func (p *Progress) flush() {
	if p.last.Step > p.printed {
		p.line(p.last)
	}
}

// Last returns the most recent update.
func (p *Progress) Last() ProgressUpdate { return p.last }

// Println prints a message (e.g. an eval result) on its own line without
// tearing the bar.
func (p *Progress) Println(msg string) {
	if p.quiet {
		return
	}
	if p.plain {
		fmt.Fprintln(p.w, msg)
		return
	}
	_ = p.bar.Clear()
	fmt.Fprintln(p.w, msg)
	_ = p.bar.RenderBlank()
}

// Stop ends the display where it is (an interrupted run: the bar keeps its step instead
// of jumping to 100 %).
func (p *Progress) Stop() {
	if p.quiet {
		return
	}
	if p.plain {
		p.flush()
		return
	}
	_ = p.bar.Exit()
}

// Finish completes the bar (a no-op when quiet).
func (p *Progress) Finish() {
	if p.quiet {
		return
	}
	if p.plain {
		p.flush()
		return
	}
	_ = p.bar.Finish()
}
