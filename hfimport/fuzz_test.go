package hfimport

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func stBytes(header string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

// FuzzParseHeader feeds arbitrary files to the checkpoint safetensors reader: no panic,
// no allocation sized by a length field beyond the file, and every accepted tensor lies
// inside the file. `go test` runs the seeds; scripts/fuzz.sh runs the fuzzer.
func FuzzParseHeader(f *testing.F) {
	f.Add(stBytes(`{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}`, 16))
	f.Add(stBytes(`{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"F16","shape":[],"data_offsets":[6,8]}}`, 8))
	f.Add(stBytes(`{"i":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, 4))
	f.Add(stBytes(`{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}`, 16))
	f.Add(stBytes(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551615,4]}}`, 4))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, '{', '}'})
	f.Add([]byte{1, 2, 3})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "model.safetensors")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		sf, err := parseHeader(p, fh)
		if err != nil {
			return
		}
		for _, st := range sf.tensors {
			if st.off < 8 || st.size < 0 || st.off+st.size > int64(len(b)) {
				t.Fatalf("tensor %q at [%d, +%d) outside the %d-byte file", st.name, st.off, st.size, len(b))
			}
			if st.checkFloat() != nil {
				continue
			}
			n := min(st.size/int64(st.dtype.Size()), 1024)
			if _, err := st.readRange(0, n, nil, make([]float32, n)); err != nil {
				t.Fatalf("tensor %q: %v", st.name, err)
			}
		}
	})
}

// TestPickleNeverLoaded: a directory with only PyTorch pickles (*.bin, *.pt, *.pth) is
// refused with advice to convert, and a shard index naming a pickle is read as
// safetensors (so rejected as such), never unpickled.
func TestPickleNeverLoaded(t *testing.T) {
	// A pickle whose loading would run os.system: refusing it must not depend on its
	// contents, so these bytes are never parsed.
	evil := []byte("\x80\x04\x95cos\nsystem\n(S'touch /tmp/ortq-pwned'\ntR.")
	for _, name := range []string{"pytorch_model.bin", "model.pt", "weights.pth"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, name), evil, 0o644)
			_, err := openCheckpoint(dir)
			if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "never loads") || !strings.Contains(err.Error(), "safetensors") {
				t.Fatalf("error %v", err)
			}
		})
	}
	t.Run("index naming a pickle", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), evil, 0o644)
		os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":{"w":"pytorch_model.bin"}}`), 0o644)
		_, err := openCheckpoint(dir)
		if err == nil || !strings.Contains(err.Error(), "header") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("index leaving the directory", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":{"w":"../model.safetensors"}}`), 0o644)
		_, err := openCheckpoint(dir)
		if err == nil || !strings.Contains(err.Error(), "plain file names") {
			t.Fatalf("error %v", err)
		}
	})
}
