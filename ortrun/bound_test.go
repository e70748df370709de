package ortrun

import (
	"strings"
	"testing"
)

// TestBoundPingPong runs y = (x + x)·w three times on buffers that swap roles, as the device
// step swaps its state, and checks each result against a plain Run; the Copier moves the
// data in and out. On the CPU the same calls run as on CUDA (buffers in host memory).
func TestBoundPingPong(t *testing.T) {
	deviceTestLib(t)
	s := mustSession(t, doubleModel(t), Options{IntraOpThreads: 1})
	cp := NewCopier(Options{})
	defer cp.Close()
	var bufs [2]*Buffer
	for i := range bufs {
		b, err := s.NewBuffer(Float32, []int64{2, 3})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		bufs[i] = b
	}
	x := f32([]int64{2, 3}, 1, 2, 3, -4, 0.25, 6)
	if err := cp.Upload(bufs[0], x); err != nil {
		t.Fatal(err)
	}
	var binds [2]*Binding
	for i := range binds {
		b, err := s.Bind(map[string]*Buffer{"x": bufs[i]}, map[string]*Buffer{"y": bufs[1-i]}, i+1)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		binds[i] = b
	}
	want := x
	for k := 0; k < 3; k++ {
		want = mustRun(t, s, map[string]*Tensor{"x": want})["y"]
		if err := binds[k%2].Run(); err != nil {
			t.Fatalf("run %d: %v", k, err)
		}
		got, err := cp.Download(bufs[1-k%2])
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want.Data.([]float32) {
			if g := got.Data.([]float32)[i]; g != w {
				t.Fatalf("run %d: y[%d] = %g bound, %g with Run", k, i, g, w)
			}
		}
	}
}

// TestBindErrors: every graph input and output needs a buffer, and only those.
func TestBindErrors(t *testing.T) {
	deviceTestLib(t)
	s := mustSession(t, doubleModel(t), Options{IntraOpThreads: 1})
	b, err := s.NewBuffer(Float32, []int64{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cp := NewCopier(Options{})
	defer cp.Close()
	for _, c := range []struct {
		name    string
		in, out map[string]*Buffer
		want    string
	}{
		{"missing output", map[string]*Buffer{"x": b}, nil, `graph output "y" has no buffer`},
		{"unknown input", map[string]*Buffer{"x": b, "z": b}, map[string]*Buffer{"y": b}, `no input "z"`},
	} {
		if _, err := s.Bind(c.in, c.out, 1); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	if err := cp.Upload(b, f32([]int64{3, 2}, 1, 2, 3, 4, 5, 6)); err == nil || !strings.Contains(err.Error(), "buffer") {
		t.Errorf("upload of the wrong shape: %v", err)
	}
}
