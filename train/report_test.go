package train

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func sampleReport() *Report {
	type lora struct {
		R       int      `json:"r"`
		Alpha   float64  `json:"alpha"`
		Targets []string `json:"targets"`
	}
	cfg := struct {
		Artifacts string  `json:"artifacts"`
		LR        float64 `json:"lr"`
		MaxSeqLen int     `json:"max_seq_len"`
		Schedule  string  `json:"schedule"`
		LoRA      lora    `json:"lora"`
		Note      string  `json:"note"`
	}{"out/tiny", 2e-4, 512, "cosine", lora{8, 32, []string{"q_proj", "v_proj"}}, "a|b"}
	st,
		_ := SummarizeDurations([]time.Duration{100 * time.Millisecond, 110 * time.Millisecond, 120 * time.Millisecond, 130 * time.Millisecond,
		400 * time.Millisecond})
	return &Report{
		Config:          cfg,
		StartedAt:       time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		WallTime:        83*time.Second + 400*time.Millisecond,
		OptimizerSteps:  120,
		SkippedSteps:    2,
		Epochs:          3,
		TrainTokens:     245760,
		Baseline:        NewEvalResult(0, 3.5*4096, 4096),
		Final:           NewEvalResult(120, 2.25*4096, 4096),
		EvalHistory:     []EvalResult{NewEvalResult(50, 2.75*4096, 4096), NewEvalResult(100, 2.3*4096, 4096)},
		TokensPerSecond: 2961.4,
		StepTime:        st,
		PeakRSSBytes:    3 << 29,
		GradNorm:        SummarizeGradNorms([]Float{2.5, Float(math.Inf(1)), 0.75, 1.25}, 1),
		Notes:           []string{"fp16 overflow at step 7: step skipped"},
	}
}

func TestReportMarkdownGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report *Report
	}{
		{"report.golden.md", sampleReport()},
		{"report_diverged.golden.md", &Report{
			Baseline: NewEvalResult(0, 10, 5),
			Final:    NewEvalResult(3, math.NaN(), 5),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.report.Markdown()
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name)
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./train -run Golden -update)", err)
			}
			if got != string(want) {
				t.Errorf("Markdown differs from %s (rerun with -update if intended):\n%s", golden, got)
			}
		})
	}
}

func TestReportFiles(t *testing.T) {
	dir := t.TempDir()
	r := sampleReport()
	r.Final = NewEvalResult(120, math.NaN(), 0) // must still encode
	if err := r.WriteJSON(filepath.Join(dir, "report.json")); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteMarkdown(filepath.Join(dir, "report.md")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Baseline.Loss != 3.5 || back.OptimizerSteps != 120 || back.PeakRSSBytes != 3<<29 || back.StepTime.P50MS != 120 {
		t.Errorf("JSON round trip: %+v", back)
	}
	if !math.IsNaN(float64(back.Final.Loss)) || !strings.Contains(string(b), `"loss": null`) {
		t.Errorf("NaN loss should encode as null: %s", b)
	}
}

func TestSummarizeDurations(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	st, err := SummarizeDurations(ds)
	if err != nil {
		t.Fatal(err)
	}
	// Linear interpolation between closest ranks (NumPy default):
	// p50 of 1..100 = 50.5, p95 = 95.05.
	want := DurationStats{Count: 100, MeanMS: 50.5, P50MS: 50.5, P95MS: 95.05, MinMS: 1, MaxMS: 100}
	if math.Abs(float64(st.P95MS-want.P95MS)) > 1e-9 {
		t.Errorf("p95 %v, want %v", st.P95MS, want.P95MS)
	}
	st.P95MS = want.P95MS
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if _, err := SummarizeDurations(nil); err == nil {
		t.Error("empty durations accepted")
	}
}

func TestNewEvalResult(t *testing.T) {
	e := NewEvalResult(7, 2*math.Ln2*10, 10)
	if math.Abs(float64(e.Perplexity)-4) > 1e-12 || e.Step != 7 || e.Tokens != 10 {
		t.Errorf("%+v", e)
	}
	if e := NewEvalResult(0, 1, 0); !math.IsNaN(float64(e.Loss)) {
		t.Errorf("no tokens: %+v", e)
	}
}

// TestSummarizeGradNorms: non-finite norms (skipped steps) are left out; a step counts as
// clipped when its norm exceeds the threshold, and no threshold clips none.
func TestSummarizeGradNorms(t *testing.T) {
	inf, nan := Float(math.Inf(1)), Float(math.NaN())
	for _, c := range []struct {
		norms   []Float
		max     float64
		want    GradNormStats
		wantNil bool
	}{
		{norms: []Float{2.5, inf, 0.75, 1.25}, max: 1, want: GradNormStats{Steps: 3, Last: 1.25, Mean: 1.5, Max: 2.5, MaxGradNorm: 1, Clipped: 2}},
		{norms: []Float{2.5, 0.5}, max: 0, want: GradNormStats{Steps: 2, Last: 0.5, Mean: 1.5, Max: 2.5}},
		{norms: []Float{1, 1}, max: 1, want: GradNormStats{Steps: 2, Last: 1, Mean: 1, Max: 1, MaxGradNorm: 1}},
		{norms: []Float{nan, inf}, max: 1, wantNil: true},
		{norms: nil, max: 1, wantNil: true},
	} {
		got := SummarizeGradNorms(c.norms, c.max)
		if (got == nil) != c.wantNil || got != nil && *got != c.want {
			t.Errorf("SummarizeGradNorms(%v, %g) = %+v, want %+v (nil %v)", c.norms, c.max, got, c.want, c.wantNil)
		}
	}
}
