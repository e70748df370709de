package devname

import "testing"

// TestParse (formerly ortrun's TestParseDevice): names, case and spaces, and the refusals.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in       string
		provider string
		id       int
		bad      bool
	}{
		{"", "cpu", 0, false}, {"cpu", "cpu", 0, false}, {"CUDA", "cuda", 0, false}, {"gpu", "cuda", 0, false},
		{" cuda:3 ", "cuda", 3, false}, {"cuda:-1", "", 0, true}, {"cuda:x", "", 0, true}, {"rocm", "", 0, true},
	} {
		p, id, err := Parse(tc.in)
		if (err != nil) != tc.bad || p != tc.provider || id != tc.id {
			t.Errorf("Parse(%q) = %q, %d, %v", tc.in, p, id, err)
		}
	}
}
