package gpumem

import "testing"

func TestVisibleDevice(t *testing.T) {
	for _, c := range []struct {
		env  string
		id   int
		want string
	}{
		{"", 0, "0"},
		{"  ", 2, "2"},
		{"3,1", 0, "3"},
		{"3, 1", 1, "1"},
		{"GPU-abc,GPU-def", 1, "GPU-def"},
		{"3", 4, "4"}, // beyond the list: CUDA would fail to open it; NVML's own index
	} {
		if got := visibleDevice(c.env, c.id); got != c.want {
			t.Errorf("visibleDevice(%q, %d) = %q, want %q", c.env, c.id, got, c.want)
		}
	}
}

// TestOpenCPU: the CPU has no NVML device and is not an error; a bad device string is.
func TestOpenCPU(t *testing.T) {
	for _, c := range []struct {
		device string
		err    bool
	}{{"cpu", false}, {"", false}, {"tpu", true}} {
		d, err := Open(c.device)
		if d != nil || (err != nil) != c.err {
			t.Errorf("Open(%q) = %v, %v; want nil device, error %v", c.device, d, err, c.err)
		}
		if c.device == "cpu" && Sampler(c.device) != nil {
			t.Errorf("Sampler(cpu) is not nil")
		}
	}
}
