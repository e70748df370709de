package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeArtifacts writes a minimal artifacts directory: manifest.json (recording
// weights.bin's size and hash unless old) and a weights.bin of 10,000 bytes.
func writeArtifacts(t *testing.T, old bool) (string, *Manifest) {
	t.Helper()
	dir := t.TempDir()
	w := make([]byte, 10000)
	for i := range w {
		w[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, WeightsFile), w, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(w)
	m := &Manifest{Format: FormatVersion, Weights: WeightsFile}
	if !old {
		m.DataFiles = []DataFile{{File: WeightsFile, Size: int64(len(w)), SHA256: hex.EncodeToString(sum[:])}}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

// flip inverts one byte of dir/weights.bin in place (same size, same inode).
func flip(t *testing.T, dir string, at int64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, WeightsFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, at)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestDataFileChecks (issue 13 item 7): ReadManifest refuses a weights.bin whose size
// differs from the manifest's, naming it; VerifyHashes refuses a flipped byte; manifests
// written before sizes and hashes were recorded still load.
func TestDataFileChecks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		old        bool
		damage     func(t *testing.T, dir string)
		readErr    []string // ReadManifest's error must hold these ("" none: it loads)
		verifyErr  []string // VerifyHashes' error
		noDataFile bool
	}{
		{name: "intact"},
		{name: "flipped byte", damage: func(t *testing.T, dir string) { flip(t, dir, 4321) },
			verifyErr: []string{"weights.bin is damaged", "SHA-256", "ortq prepare --force"}},
		{name: "truncated", damage: func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, WeightsFile), 6000) },
			readErr: []string{"weights.bin is 6000 bytes, manifest.json records 10000", "ortq prepare --force"}},
		{name: "extended", damage: func(t *testing.T, dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, WeightsFile), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{1})
			f.Close()
		}, readErr: []string{"weights.bin is 10001 bytes, manifest.json records 10000"}},
		{name: "missing", damage: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, WeightsFile)) },
			readErr: []string{"weights.bin", "no such file", "ortq prepare --force"}},
		{name: "old manifest", old: true, noDataFile: true},
		{name: "old manifest, truncated file (nothing recorded to check)", old: true, noDataFile: true,
			damage: func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, WeightsFile), 6000) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := writeArtifacts(t, tc.old)
			if tc.damage != nil {
				tc.damage(t, dir)
			}
			m, err := ReadManifest(dir)
			if len(tc.readErr) > 0 {
				if err == nil {
					t.Fatal("ReadManifest accepted it")
				}
				for _, w := range tc.readErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("ReadManifest error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadManifest: %v", err)
			}
			if got := len(m.DataFiles) == 0; got != tc.noDataFile {
				t.Errorf("no data files recorded: %v, want %v", got, tc.noDataFile)
			}
			err = m.VerifyHashes(dir)
			if len(tc.verifyErr) == 0 {
				if err != nil {
					t.Fatalf("VerifyHashes: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("VerifyHashes accepted it")
			}
			for _, w := range tc.verifyErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("VerifyHashes error %q lacks %q", err, w)
				}
			}
			if _, err := m.VerifyHashesOnce(dir); err == nil {
				t.Error("VerifyHashesOnce accepted it")
			}
		})
	}
}

// TestVerifiedStateSkipsHash (issue 13 item 7): once verified, weights.bin is not read
// again while its size, mtime and inode are unchanged — shown by damage that keeps them
// (a byte flipped in place, mtime restored) going unnoticed — and a write that moves the
// mtime is hashed again and refused.
func TestVerifiedStateSkipsHash(t *testing.T) {
	dir, m := writeArtifacts(t, false)
	p := filepath.Join(dir, WeightsFile)
	for i, want := range []bool{true, false, false} {
		hashed, err := m.VerifyHashesOnce(dir)
		if err != nil || hashed != want {
			t.Fatalf("run %d: hashed %v, %v; want hashed %v", i+1, hashed, err, want)
		}
	}
	st, _ := os.Stat(p)
	flip(t, dir, 10)
	os.Chtimes(p, st.ModTime(), st.ModTime())
	if hashed, err := m.VerifyHashesOnce(dir); hashed || err != nil {
		t.Fatalf("unchanged identity: hashed %v, %v; want skipped", hashed, err)
	}
	os.Chtimes(p, st.ModTime().Add(time.Second), st.ModTime().Add(time.Second))
	hashed, err := m.VerifyHashesOnce(dir)
	if !hashed || err == nil || !strings.Contains(err.Error(), "weights.bin is damaged") {
		t.Fatalf("after a change: hashed %v, %v; want the damage found", hashed, err)
	}
	// A damaged file is never recorded as verified: the next run hashes again.
	if hashed, err := m.VerifyHashesOnce(dir); !hashed || err == nil {
		t.Fatalf("second run after the damage: hashed %v, %v", hashed, err)
	}
	// A copy keeps size and mtime but is another inode: hashed again.
	flip(t, dir, 10) // undo
	if _, err := m.VerifyHashesOnce(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ = os.Stat(p)
	os.WriteFile(p+".new", b, 0o644) // while the old file exists, so not its inode
	os.Chtimes(p+".new", st.ModTime(), st.ModTime())
	os.Rename(p+".new", p)
	if hashed, err := m.VerifyHashesOnce(dir); !hashed || err != nil {
		t.Fatalf("a copy: hashed %v, %v; want hashed and accepted", hashed, err)
	}
}

// TestDataFileNameStaysInside: a manifest naming a data file outside its directory is
// refused.
func TestDataFileNameStaysInside(t *testing.T) {
	dir := t.TempDir()
	m := &Manifest{DataFiles: []DataFile{{File: "../weights.bin", Size: 1}}}
	if err := m.CheckSizes(dir); err == nil || !strings.Contains(err.Error(), "../weights.bin") {
		t.Errorf("CheckSizes: %v", err)
	}
}
