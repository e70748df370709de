package data

import (
	"io"
	"strings"
	"testing"
)

// zeros is an endless stream of NUL bytes (what /dev/zero gives) that counts what was read.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	clear(p)
	z.n += int64(len(p))
	return len(p), nil
}

// TestBinaryInputRefusedAtOnce (issue 13 item 4): an endless NUL stream is refused after
// one bounded read, in both formats, naming the file; before, the text reader buffered up
// to the 4 GiB limit.
func TestBinaryInputRefusedAtOnce(t *testing.T) {
	for _, name := range []string{"/dev/zero", "zero.jsonl"} {
		z := &zeros{}
		_, err := ParseDocuments(io.LimitReader(z, 1<<40), name, ReadOptions{})
		if err == nil || !strings.Contains(err.Error(), "NUL byte") || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
		if z.n > 1<<20 {
			t.Errorf("%s: read %d bytes before refusing", name, z.n)
		}
	}
}
