package train

import (
	"fmt"
	"strings"
	"time"

	"github.com/ortq/ortq/internal/runreport"
)

// Sample is one greedy completion of a sample prompt (`ortq train --sample-prompt`) under
// the LoRA values after a step.
type Sample struct {
	Step       int    `json:"step"`
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
	// IDs are the completion's token ids, with the EOS that ended it (as `ortq generate
	// --ids` prints them).
	IDs []int64 `json:"ids"`
}

// A Sampler completes the run's sample prompts (Config.SamplePrompts) greedily with the
// LoRA values given (PEFT names). It must leave them unchanged; the loop calls it between
// optimizer steps, never inside one, so that nothing a step reads (data position, dropout
// seeds, optimizer state, a captured CUDA graph) sees it.
type Sampler interface {
	Sample(params map[string][]float32) ([]Sample, error)
}

// sampleDue reports whether loop step `step` ends with a round of samples: every
// SampleEvery steps, but not at the last step, whose round finish draws after the final
// evaluation (as evaluations go).
func (l *run) sampleDue(step int) bool {
	return l.cfg.Sampler != nil && l.cfg.SampleEvery > 0 && step%l.cfg.SampleEvery == 0 && step != l.total
}

// sample draws a round of samples with the Stepper's current LoRA values after `step`,
// prints them, appends them to the run log and keeps them as the report's last samples.
// Samples are diagnostics, as the run log is: a round that fails is reported (the first
// failure also in the report's notes) and the run goes on. Only a failure to read the
// Stepper's values, which the next checkpoint needs too, stops it.
func (l *run) sample(step int) error {
	if l.cfg.Sampler == nil {
		return nil
	}
	values, err := l.stepper.Params()
	if err != nil {
		return err
	}
	samples, err := l.cfg.Sampler.Sample(values)
	if err != nil {
		msg := fmt.Sprintf("warning: samples after step %d failed, training goes on: %v", step, err)
		l.logf("%s", msg)
		if !l.sampleFailed {
			l.rep.Notes = append(l.rep.Notes, msg)
		}
		l.sampleFailed = true
		return nil
	}
	for i := range samples {
		s := &samples[i]
		s.Step = step
		l.logf("sample @ step %d: %q → %q", step, s.Prompt, s.Completion)
		l.rlog.sample(*s)
	}
	l.rep.Samples = samples
	return nil
}

// SampleRecord is a run.jsonl line of event "sample": one greedy completion.
type SampleRecord struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"` // "sample"
	Sample
}

// sample appends a sample line (every one, whatever LogEvery).
func (l *runLog) sample(s Sample) {
	if l == nil {
		return
	}
	_ = l.enc.Encode(SampleRecord{Time: time.Now().UTC(), Event: "sample", Sample: s}) // diagnostic, as record
}

// samplesMarkdown is the report's section of the last samples ("" without any).
func samplesMarkdown(samples []Sample) string {
	if len(samples) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Samples\n\nGreedy completions after step %d.\n\n| prompt | completion |\n|---|---|\n", samples[0].Step)
	for _, s := range samples {
		fmt.Fprintf(&b, "| %s | %s |\n", runreport.MarkdownEscape(s.Prompt), runreport.MarkdownEscape(s.Completion))
	}
	return b.String()
}
