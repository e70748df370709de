package hfimport

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/safetensors"
)

// Checkpoint reading. safetensors.ReadFile reads a whole file into memory, which is right
// for adapters but not for a 5 GB shard: here only the header is read and validated
// (safetensors.ReadHeader: bounded and checked before any allocation, the tensors tiling
// the data section), and tensors are read later one at a time with ReadAt, so at most one
// tensor of the checkpoint is in memory.

// stTensor is one tensor of a shard: where its bytes are and what they hold.
type stTensor struct {
	file  *stFile
	name  string
	dtype safetensors.DType
	shape []int64
	off   int64 // absolute file offset
	size  int64
}

type stFile struct {
	path    string
	f       *os.File
	tensors map[string]*stTensor
}

// checkpoint is an opened set of shards.
type checkpoint struct {
	dir     string
	files   []*stFile
	tensors map[string]*stTensor
}

func (c *checkpoint) Close() {
	for _, f := range c.files {
		f.f.Close()
	}
}

// IndexFile is the name transformers gives the shard index.
const IndexFile = "model.safetensors.index.json"

// openCheckpoint finds and opens the safetensors of a checkpoint directory: the shards
// named by model.safetensors.index.json, else model.safetensors, else the directory's only
// *.safetensors. PyTorch pickles are refused (loading one runs arbitrary code).
func openCheckpoint(dir string) (*checkpoint, error) {
	var names []string
	idxPath := filepath.Join(dir, IndexFile)
	if b, err := fsutil.ReadBounded(idxPath, 64<<20); err == nil {
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("shard index %q: not valid JSON: %v", idxPath, err)
		}
		if len(idx.WeightMap) == 0 {
			return nil, fmt.Errorf("shard index %q: empty weight_map", idxPath)
		}
		seen := map[string]bool{}
		for tensor, shard := range idx.WeightMap {
			if shard == "" || filepath.Base(shard) != shard || shard == ".." {
				return nil, fmt.Errorf("shard index %q: tensor %q maps to %q: shards must be plain file names beside the index", idxPath, tensor, shard)
			}
			if !seen[shard] {
				seen[shard] = true
				names = append(names, shard)
			}
		}
		sort.Strings(names)
		for _, shard := range names {
			if _, err := os.Stat(filepath.Join(dir, shard)); errors.Is(err, os.ErrNotExist) {
				var held []string
				for tensor, s := range idx.WeightMap {
					if s == shard {
						held = append(held, tensor)
					}
				}
				sort.Strings(held)
				return nil, fmt.Errorf("shard %q is missing: %s lists tensor %q and %d more in it", filepath.Join(dir, shard), IndexFile, held[0], len(held)-1)
			}
		}
		c, err := openShards(dir, names)
		if err != nil {
			return nil, err
		}
		// Every tensor the index promises must be in the shard it names.
		for tensor, shard := range idx.WeightMap {
			t := c.tensors[tensor]
			if t == nil || filepath.Base(t.file.path) != shard {
				c.Close()
				return nil, fmt.Errorf("shard %q: tensor %q listed in %s is missing from it", filepath.Join(dir, shard), tensor, IndexFile)
			}
		}
		return c, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("shard index %q: %w", idxPath, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		names = []string{"model.safetensors"}
	} else {
		all, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
		var pickles []string
		for _, pat := range []string{"*.bin", "*.pt", "*.pth"} {
			m, _ := filepath.Glob(filepath.Join(dir, pat))
			pickles = append(pickles, m...)
		}
		switch {
		case len(all) == 1:
			names = []string{filepath.Base(all[0])}
		case len(all) > 1:
			return nil, fmt.Errorf("checkpoint %q has %d *.safetensors files but no %s: cannot tell which tensors belong to the model", dir, len(all), IndexFile)
		case len(pickles) > 0:
			return nil,
				fmt.Errorf("checkpoint %q has only PyTorch pickle weights (%s), which ortq never loads (unpickling runs code): convert them to safetensors first, "+
					"e.g. model.save_pretrained(dir, safe_serialization=True) or the convert-to-safetensors tool on the Hub",
					dir, filepath.Base(pickles[0]))
		default:
			return nil, fmt.Errorf("checkpoint %q: no model.safetensors, %s or *.safetensors found", dir, IndexFile)
		}
	}
	return openShards(dir, names)
}

func openShards(dir string, names []string) (*checkpoint, error) {
	c := &checkpoint{dir: dir, tensors: map[string]*stTensor{}}
	for _, n := range names {
		sf, err := openSafetensors(filepath.Join(dir, n))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.files = append(c.files, sf)
		for name, t := range sf.tensors {
			if prev := c.tensors[name]; prev != nil {
				c.Close()
				return nil, fmt.Errorf("tensor %q is in both %q and %q", name, prev.file.path, sf.path)
			}
			c.tensors[name] = t
		}
	}
	return c, nil
}

// openSafetensors reads and validates one file's header, keeping the file open.
func openSafetensors(path string) (*stFile, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("shard %q is missing", path)
		}
		return nil, fmt.Errorf("shard %q: %w", path, err)
	}
	sf, err := parseHeader(path, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors %q: %w", path, err)
	}
	return sf, nil
}

func parseHeader(path string, f *os.File) (*stFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h, err := safetensors.ReadHeader(f, st.Size())
	if err != nil {
		return nil, err
	}
	sf := &stFile{path: path, f: f, tensors: map[string]*stTensor{}}
	for _, e := range h.Entries {
		sf.tensors[e.Name] = &stTensor{file: sf, name: e.Name, dtype: e.DType, shape: e.Shape, off: h.DataStart + e.Begin, size: e.End - e.Begin}
	}
	return sf, nil
}

// where names a tensor for error messages: file and tensor.
func (t *stTensor) where() string {
	return fmt.Sprintf("%s: tensor %q", t.file.path, t.name)
}

// checkFloat refuses dtypes the converter cannot read.
func (t *stTensor) checkFloat() error {
	switch t.dtype {
	case safetensors.F32, safetensors.F16, safetensors.BF16:
		return nil
	}
	return fmt.Errorf("%s has dtype %s: only F32, F16 and BF16 weights are supported", t.where(), strings.ToUpper(string(t.dtype)))
}

// readRange reads elements [from, from+n) of the tensor as float32.
func (t *stTensor) readRange(from, n int64, buf []byte, out []float32) ([]byte, error) {
	es := int64(t.dtype.Size())
	need := n * es
	if int64(cap(buf)) < need {
		buf = make([]byte, need)
	}
	buf = buf[:need]
	if _, err := t.file.f.ReadAt(buf, t.off+from*es); err != nil {
		return buf, fmt.Errorf("%s: read: %w", t.where(), err)
	}
	safetensors.DecodeFloat32s(t.dtype, buf, out[:n])
	return buf, nil
}
