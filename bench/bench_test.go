package bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
)

var update = flag.Bool("update", false, "rewrite testdata goldens")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden (go test ./bench -run %s -update to accept):\n--- got\n%s", name, t.Name(), got)
	}
}

func recorded(t *testing.T) *Result {
	t.Helper()
	r, err := ReadResult(filepath.Join("testdata", "recorded.json"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestGoldenReports renders a recorded CPU run (the default model, micro-batch × recompute
// sweep) with a peer fixture.
func TestGoldenReports(t *testing.T) {
	r := recorded(t)
	peer, err := ReadResult(filepath.Join("testdata", "peer_fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	md, err := Markdown(r, MarkdownOptions{Peers: Peers{peer}, Figures: []string{"throughput.png", "memory.png"}})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "report.golden.md", []byte(md))
	js, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "report.golden.json", js)
	// The JSON survives a round trip unchanged (null figures included).
	var back Result
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	js2, _ := back.JSON()
	if !bytes.Equal(js, js2) {
		t.Error("JSON round trip changed the result")
	}
	if !strings.Contains(md, "| mb=2 seq=64 bits=4 recompute=layer targets=q_proj,v_proj | peer (fixture): mb=2 seq=64 bits=16 recompute=layer") {
		t.Error("the peer was not matched to the mb=2 recompute=layer point")
	}
}

// TestArenaTable: the arena section appears only for points with ONNX Runtime's figures, with
// NVML's peak beside them.
func TestArenaTable(t *testing.T) {
	for _, tc := range []struct {
		name      string
		arena     *ortrun.ArenaStats
		want      []string
		wantNoSec bool
	}{
		{"none (recorded before the fork, or peers)", nil, nil, true},
		{"cuda", &ortrun.ArenaStats{Device: "cuda:0", InUse: 3 << 30, PeakInUse: 6 << 30, Reserved: 7 << 30, NumAllocs: 12345, NumArenaExtensions: 9,
			MaxAllocSize: 1 << 30},
			[]string{"## ONNX Runtime's arena", "| cuda:0 | 3.00 GiB | 6.00 GiB | 7.00 GiB | 8.00 GiB (nvml-process) | 12345 | 9 | 1.00 GiB |",
				"- ONNX Runtime's arena: AllocatorGetStats"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := recorded(t)
			for i := range r.Points {
				r.Points[i].ORTArena = tc.arena
				r.Points[i].PeakGPUBytes, r.Points[i].GPUSource = 8<<30, "nvml-process"
			}
			md, err := Markdown(r, MarkdownOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantNoSec && strings.Contains(md, "ONNX Runtime's arena") {
				t.Errorf("arena section without figures:\n%s", md)
			}
			for _, w := range tc.want {
				if !strings.Contains(md, w) {
					t.Errorf("markdown lacks %q:\n%s", w, md)
				}
			}
			js, err := r.JSON()
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Contains(js, []byte(`"ort_arena"`)); got != (tc.arena != nil) {
				t.Errorf("report.json has ort_arena: %v, want %v", got, tc.arena != nil)
			}
		})
	}
}

func TestRatios(t *testing.T) {
	ours := &Result{Tool: "ortq", Points: []Point{
		{Label: "a", Params: Params{MicroBatch: 7, SeqLen: 512, Bits: 4, Recompute: "layer"}, TokensPerSec: 12000, PeakGPUBytes: 5 << 30, GPUSource: "nvml-process"},
		{Label: "b", Params: Params{MicroBatch: 7, SeqLen: 512, Bits: 4, Recompute: "none"}, TokensPerSec: 16000, PeakGPUBytes: 8 << 30, GPUSource: "nvml-process"},
		{Label: "c", Params: Params{MicroBatch: 1, SeqLen: 512, Bits: 4, Recompute: "layer"}, TokensPerSec: 2000},
	}}
	peer := &Result{Tool: "torch+peft", Points: []Point{
		{Label: "p-layer", Params: Params{MicroBatch: 7, SeqLen: 512, Bits: 16, Recompute: "layer"}, TokensPerSec: 16000, PeakGPUReservedBytes: 15 << 30,
			PeakGPUAllocatedBytes: 13 << 30},
		{Label: "p-none", Params: Params{MicroBatch: 7, SeqLen: 512, Bits: 16, Recompute: "none"}, TokensPerSec: 20000, PeakGPUBytes: 16 << 30,
			GPUSource: "nvml-process"},
	}}
	rs := Ratios(ours, Peers{peer})
	if len(rs) != 2 {
		t.Fatalf("%d ratios, want 2 (no peer point for micro-batch 1): %+v", len(rs), rs)
	}
	want := []struct {
		peer      string
		tps, mem  float64
		basisPart string
	}{{"p-layer", 0.75, 1.0 / 3, "torch reserved"}, {"p-none", 0.8, 0.5, "nvml-process vs nvml-process"}}
	for i, w := range want {
		x := rs[i]
		if x.Peer != w.peer || math.Abs(float64(x.Throughput)-w.tps) > 1e-9 || math.Abs(float64(x.Memory)-w.mem) > 1e-9 || !strings.Contains(x.MemoryBasis,
			w.basisPart) {
			t.Errorf("ratio %d = %+v, want peer %s tps %.3f mem %.3f (%s)", i, x, w.peer, w.tps, w.mem, w.basisPart)
		}
	}
}

func TestCompareGate(t *testing.T) {
	base := recorded(t)
	th := DefaultThresholds()
	c, err := Compare(base, base, th)
	if err != nil || !c.OK() {
		t.Fatalf("a result against itself must pass: %v\n%s", err, c.Text())
	}
	clone := func(edit func(p *Point, r *Result)) *Result {
		b, _ := json.Marshal(base)
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		for i := range r.Points {
			edit(&r.Points[i], &r)
		}
		return &r
	}
	cases := []struct {
		name string
		edit func(p *Point, r *Result)
		fail string // "" = must pass
	}{
		{"half the tokens/s", func(p *Point, r *Result) { p.TokensPerSec /= 2 }, "throughput (normalised by reference_ms) fell by 50.0 %"},
		{"half the tokens/s on a machine twice as slow", func(p *Point, r *Result) { p.TokensPerSec /= 2; r.ReferenceMS = base.ReferenceMS * 2 }, ""},
		{"10 % slower", func(p *Point, r *Result) { p.TokensPerSec *= 0.9 }, ""},
		{"memory +50 %", func(p *Point, r *Result) { p.PeakRSSBytes = p.PeakRSSBytes * 3 / 2 }, "peak host RSS grew by 50.0 %"},
		{"perplexity +10 %", func(p *Point, r *Result) { p.Eval.After.Perplexity *= 1.1 }, "final perplexity rose by 10.00 %"},
		{"perplexity NaN", func(p *Point, r *Result) { p.Eval.After.Perplexity = Float(math.NaN()) }, "not finite"},
		{"point renamed", func(p *Point, r *Result) { p.Label += " x" }, "not in the new one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compare(base, clone(tc.edit), th)
			if err != nil {
				t.Fatal(err)
			}
			text := c.Text()
			if tc.fail == "" {
				if !c.OK() {
					t.Fatalf("want pass:\n%s", text)
				}
				return
			}
			if c.OK() || !strings.Contains(text, tc.fail) {
				t.Fatalf("want a failure containing %q:\n%s", tc.fail, text)
			}
		})
	}
	// Not normalised on request: the slow machine's halved throughput is a regression.
	th.Normalize = "off"
	c, _ = Compare(base, clone(func(p *Point, r *Result) { p.TokensPerSec /= 2; r.ReferenceMS *= 2 }), th)
	if c.OK() {
		t.Errorf("--normalize off must see the halved throughput:\n%s", c.Text())
	}
	// The planted regression as files, through ReadResult, as CI runs it.
	dir := t.TempDir()
	slow := clone(func(p *Point, r *Result) { p.TokensPerSec /= 2 })
	if err := slow.WriteJSON(filepath.Join(dir, "slow.json")); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResult(filepath.Join(dir, "slow.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := Compare(base, got, DefaultThresholds()); c.OK() {
		t.Error("planted regression (half the tokens/s) passed the gate")
	}
}

func TestParseSweep(t *testing.T) {
	cases := []struct {
		in   []string
		want string // JSON of the axes, or "error: substring"
	}{
		{[]string{"micro-batch=1,7,14"}, `[{"name":"micro-batch","values":["1","7","14"]}]`},
		// viper reads a string array back split at commas
		{[]string{"micro-batch=1", "7", "14", "recompute=none", "layer"},
			`[{"name":"micro-batch","values":["1","7","14"]},{"name":"recompute","values":["none","layer"]}]`},
		{[]string{"bits=4,16", "targets=q_proj+v_proj,all"}, `[{"name":"bits","values":["4","16"]},{"name":"targets","values":["q_proj+v_proj","all"]}]`},
		{[]string{"seq_len=128"}, `[{"name":"seq-len","values":["128"]}]`},
		{[]string{"bits=8"}, "error: bits are 4 or 16"},
		{[]string{"recompute=some"}, `error: recompute "some"`},
		{[]string{"lr=1,2"}, `error: unknown option "lr"`},
		{[]string{"7"}, "error: want OPTION=V1,V2"},
		{[]string{"micro-batch=0"}, "error: not a positive integer"},
		{[]string{"targets=q_proj+w_proj"}, `error: unknown target "w_proj"`},
		{[]string{"bits=4", "bits=16"}, "error: given twice"},
	}
	for _, tc := range cases {
		axes, err := ParseSweep(tc.in)
		if strings.HasPrefix(tc.want, "error: ") {
			if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(tc.want, "error: ")) {
				t.Errorf("ParseSweep(%q) error %v, want %q", tc.in, err, tc.want)
			}
			continue
		}
		b, _ := json.Marshal(axes)
		if err != nil || string(b) != tc.want {
			t.Errorf("ParseSweep(%q) = %s, %v; want %s", tc.in, b, err, tc.want)
		}
	}
}

func TestExpand(t *testing.T) {
	axes, err := ParseSweep([]string{"micro-batch=1,7,14", "recompute=none,layer", "bits=4,16"})
	if err != nil {
		t.Fatal(err)
	}
	pts, err := expand(Params{MicroBatch: 7, SeqLen: 512, Bits: 4, Recompute: "layer", Targets: []string{"q_proj", "v_proj"}}, axes)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 12 {
		t.Fatalf("%d points, want 12", len(pts))
	}
	first, last := pts[0].Label(), pts[11].Label()
	if first != "mb=1 seq=512 bits=4 recompute=none targets=q_proj,v_proj" || last != "mb=14 seq=512 bits=16 recompute=layer targets=q_proj,v_proj" {
		t.Errorf("first %q, last %q", first, last)
	}
	keys := map[string]bool{}
	for _, p := range pts {
		keys[p.graphKey()] = true
	}
	if len(keys) != 2 { // recompute and micro-batch need no new prepare; bits does
		t.Errorf("%d prepared graphs for the sweep, want 2: %v", len(keys), keys)
	}
}

func TestCountFLOPs(t *testing.T) {
	// Llama-3.2-3B: N = 28·(3072·3072·2 + 2·3072·1024 + 3·3072·8192) + 3072·128256.
	m := ModelShape{LinearParams: 28*(3072*3072*2+2*3072*1024+3*3072*8192) + 3072*128256, LMHeadParams: 3072 * 128256,
		LoRAParams: 28 * (8*3072 + 3072*8 + 8*3072 + 1024*8), Layers: 28, AttnWidth: 3072}
	f := CountFLOPs(m, 7, 512, true)
	T, S := 7.0*512, 512.0
	A := 2 * 28 * T * S * 3072
	wantModel := 4*float64(m.LinearParams)*T + 6*float64(m.LoRAParams)*T + 3*A
	wantHW := wantModel + 2*float64(m.LinearParams-m.LMHeadParams)*T + 2*float64(m.LoRAParams)*T + A
	if math.Abs(f.ModelPerStep/wantModel-1) > 1e-12 || math.Abs(f.HardwarePerStep/wantHW-1) > 1e-12 {
		t.Errorf("FLOPs %+v, want model %g hardware %g", f, wantModel, wantHW)
	}
	// bench/peer/torch_peft.py's flops() gives 4.705e13 / 6.759e13 for this shape.
	if math.Abs(f.ModelPerStep/4.705e13-1) > 1e-3 || math.Abs(f.HardwarePerStep/6.759e13-1) > 1e-3 {
		t.Errorf("FLOPs %g / %g disagree with the peer script's", f.ModelPerStep, f.HardwarePerStep)
	}
	if g := CountFLOPs(m, 7, 512, false); g.HardwarePerStep != g.ModelPerStep {
		t.Error("without recompute hardware FLOPs must equal model FLOPs")
	}
}

func TestPeakFLOPS(t *testing.T) {
	for name, want := range map[string]float64{
		"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H100 NVL": 835e12,
		"NVIDIA H200": 989e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA GeForce RTX 4090": 0,
	} {
		got, _, err := PeakFLOPS(name)
		if got != want || (want == 0) != (err != nil) {
			t.Errorf("PeakFLOPS(%q) = %g, %v; want %g", name, got, err, want)
		}
	}
}

type fakeGPU struct {
	proc   []uint64 // per call; 0 = not reported
	used   []uint64
	n      int
	procOK bool
}

func (f *fakeGPU) name() string { return "fake" }
func (f *fakeGPU) sample() (uint64, bool, uint64, uint64, error) {
	i := min(f.n, len(f.used)-1)
	f.n++
	return f.proc[i], f.procOK, f.used[i], 80 << 30, nil
}

// TestMonitorPeaks: per-process use when the driver reports it, else device used minus
// the baseline; evaluation phases do not count.
func TestMonitorPeaks(t *testing.T) {
	for _, procOK := range []bool{true, false} {
		g := &fakeGPU{procOK: procOK,
			// call 0: baseline; then begin(eval_before), eval spike, open, warmup, measure, end
			used: []uint64{1 << 30, 1 << 30, 9 << 30, 3 << 30, 4 << 30, 5 << 30, 2 << 30, 2 << 30},
			proc: []uint64{0, 0, 8 << 30, 2 << 30, 3 << 30, 4 << 30, 1 << 30, 1 << 30}}
		m := newMonitor(time.Now(), time.Hour, g) // no periodic samples: only the marks below
		m.rss = func() (uint64, uint64, error) { return 100, 0, nil }
		m.begin("p", "eval_before")
		m.mark("eval_before", 0) // the spike, not counted
		m.mark("open", 0)
		m.mark("warmup", 1)
		m.mark("measure", 2)
		p := m.end()
		want, src := uint64(5<<30-1<<30), "nvml-device-delta"
		if procOK {
			want, src = 4<<30, "nvml-process"
		}
		if p.bytes != want || p.source != src || p.device != 5<<30 {
			t.Errorf("procOK %v: peak %+v, want %d (%s)", procOK, p, want, src)
		}
		tl := m.timeline()
		if len(tl) != 6 || tl[0].Phase != "eval_before" || tl[len(tl)-1].Phase != "done" || tl[1].GPUUsed != 9<<30 {
			t.Errorf("timeline %+v", tl)
		}
	}
}

func TestSummarizeMatchesPeer(t *testing.T) {
	// torch_peft.py computes NumPy's linear percentile; ortq uses train.SummarizeDurations.
	ds := []time.Duration{1, 2, 3, 4, 10}
	for i := range ds {
		ds[i] *= time.Millisecond
	}
	s, err := train.SummarizeDurations(ds)
	if err != nil {
		t.Fatal(err)
	}
	if float64(s.P50MS) != 3 || math.Abs(float64(s.P95MS)-8.8) > 1e-9 {
		t.Errorf("p50 %v p95 %v; NumPy linear gives 3 and 8.8", s.P50MS, s.P95MS)
	}
}

func TestSynthetic(t *testing.T) {
	a := NewSynthetic(100, 1, 1).Batch(3, 50)
	b := NewSynthetic(100, 1, 1).Batch(3, 50)
	if a.Rows != 3 || a.SeqLen != 50 || a.Tokens != 3*49 || len(a.InputIDs) != 150 {
		t.Fatalf("batch %+v", a)
	}
	follows := 0
	s := NewSynthetic(100, 1, 1)
	for i := range a.InputIDs {
		if a.InputIDs[i] != b.InputIDs[i] || a.Labels[i] != a.InputIDs[i] || a.AttentionMask[i] != 1 || a.InputIDs[i] < 0 || a.InputIDs[i] >= 100 {
			t.Fatalf("position %d: ids %d/%d label %d mask %d", i, a.InputIDs[i], b.InputIDs[i], a.Labels[i], a.AttentionMask[i])
		}
		if i%50 > 0 && a.InputIDs[i] == s.succ[a.InputIDs[i-1]] {
			follows++
		}
	}
	if follows < 50 || follows > 100 { // about half of 147
		t.Errorf("%d of 147 tokens follow the successor table, want about half", follows)
	}
	if c := NewSynthetic(100, 1, 2).Batch(3, 50); bytes.Equal(i64bytes(c.InputIDs), i64bytes(a.InputIDs)) {
		t.Error("train and eval streams are equal")
	}
}

func i64bytes(v []int64) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestReadResultErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"schema": `{"schema":"other/1","points":[{}]}`,
		"empty":  `{"schema":"ortq-bench/1","points":[]}`,
		"json":   `{`,
	} {
		p := filepath.Join(dir, name+".json")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := ReadResult(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v should name the file", name, err)
		}
	}
}

func TestReference(t *testing.T) {
	if ReferenceWork() != ReferenceWork() {
		t.Error("ReferenceWork is not deterministic")
	}
	if ms := MeasureReference(2); !(ms > 0) {
		t.Errorf("reference %v ms", ms)
	}
}
