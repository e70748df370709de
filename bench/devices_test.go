package bench

import (
	"math"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestDevices: device lists parse, GPUs named twice and CPU–GPU mixes are refused naming
// --device.
func TestDevices(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		err  string
	}{
		{"", "cpu", ""},
		{"cuda", "cuda", ""},
		{"cuda:0, cuda:1", "cuda:0,cuda:1", ""},
		{"cpu,cpu", "cpu,cpu", ""},
		{"cuda:0,cuda", "", "cuda:0 is named twice"},
		{"cpu,cuda:1", "", "mixes the CPU and GPUs"},
		{"tpu", "", "--device"},
	} {
		got, err := devices(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("%q: %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}

// TestRunTwoCPUDevices: a point over two CPU sessions standing in for two GPUs runs one
// micro-batch per device per step (twice the tokens per step), with the host step and with
// the device-resident step, and its first step's loss is the mean over both micro-batches.
func TestRunTwoCPUDevices(t *testing.T) {
	ortruntest.Lib(t)
	cfg := DefaultConfig()
	cfg.Model = defaultModel(t)
	cfg.Device, cfg.Recompute = "cpu,cpu", "layer"
	cfg.SeqLen, cfg.MicroBatch, cfg.Warmup, cfg.Steps = 32, 1, 1, 2
	cfg.Sweep = []Axis{{Name: "step", Values: []string{"host", "device"}}}
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 2 {
		t.Fatalf("%d points, want 2", len(res.Points))
	}
	for _, p := range res.Points {
		if p.Device != "cpu,cpu" || p.TokensPerStep != 2*32 || p.StepTime.Count != 2 || len(p.Losses) != 3 {
			t.Errorf("point %s: device %q, %d tokens/step, %d step times, %d losses", p.Label, p.Device, p.TokensPerStep, p.StepTime.Count, len(p.Losses))
		}
	}
	h, d := res.Points[0].Losses, res.Points[1].Losses
	for i := range h {
		if r := math.Abs(float64(h[i]-d[i])) / math.Abs(float64(h[i])); !(r <= 2e-6) {
			t.Errorf("step %d: loss %v with the host step, %v with the device step", i+1, h[i], d[i])
		}
	}
}
