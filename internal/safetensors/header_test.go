package safetensors

import (
	"bytes"
	"encoding/binary"
	"io"
	"reflect"
	"strings"
	"testing"
)

// TestReadHeader: the one validator every reader uses. Dtypes of the format that ortq
// does not decode are accepted in a header (a checkpoint may hold tensors that are never
// read) and their byte length checked all the same; the tensors must tile the data section.
func TestReadHeader(t *testing.T) {
	for _, c := range []struct {
		name   string
		header string
		data   int
		want   []Entry // nil: an error is expected
		errs   []string
	}{
		{name: "one tensor", header: `{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`, data: 16,
			want: []Entry{{Name: "w", DType: F32, Shape: []int64{2, 2}, Begin: 0, End: 16}}},
		{name: "offset order and other dtypes",
			header: `{"__metadata__":{"format":"pt"},"b":{"dtype":"I32","shape":[1],"data_offsets":[2,6]},"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},` +
				`"c":{"dtype":"U8","shape":[0],"data_offsets":[6,6]}}`,
			data: 6,
			want: []Entry{{Name: "a", DType: BF16, Shape: []int64{}, Begin: 0, End: 2}, {Name: "b", DType: "I32", Shape: []int64{1}, Begin: 2, End: 6},
				{Name: "c", DType: "U8", Shape: []int64{0}, Begin: 6, End: 6}}},
		{name: "I32 length checked", header: `{"i":{"dtype":"I32","shape":[2],"data_offsets":[0,4]}}`, data: 4, errs: []string{`tensor "i"`, "needs 8"}},
		{name: "unknown dtype", header: `{"q":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}}`, data: 1, errs: []string{`tensor "q"`, `unknown dtype "Q4"`}},
		{name: "overlap", header: `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, data: 16,
			errs: []string{`tensor "b"`, "gap or overlap"}},
		{name: "partial overlap", header: `{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[6,10]}}`,
			data: 10, errs: []string{`tensor "b"`, "start at 6, expected 8"}},
		{name: "gap", header: `{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data: 8, errs: []string{`tensor "a"`, "gap or overlap"}},
		{name: "trailing bytes", header: `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, data: 8, errs: []string{"cover 4", "has 8"}},
		{name: "byte size overflows int64", header: `{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}`, data: 8,
			errs: []string{`tensor "a"`, "overflows"}},
		{name: "shape overflows int64", header: `{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, data: 8,
			errs: []string{`tensor "a"`, "overflows"}},
		{name: "offset beyond the data", header: `{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551615,4]}}`, data: 4,
			errs: []string{`tensor "a"`, "outside"}},
		{name: "missing shape", header: `{"a":{"dtype":"F32","data_offsets":[0,4]}}`, data: 4, errs: []string{`tensor "a"`, "missing shape"}},
		{name: "three offsets", header: `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}`, data: 4, errs: []string{`tensor "a"`, "[begin, end]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := binary.LittleEndian.AppendUint64(nil, uint64(len(c.header)))
			b = append(append(b, c.header...), make([]byte, c.data)...)
			h, err := ReadHeader(bytes.NewReader(b), int64(len(b)))
			if c.want == nil {
				if err == nil {
					t.Fatalf("accepted: %+v", h)
				}
				for _, w := range c.errs {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h.Entries, c.want) || h.DataStart != int64(8+len(c.header)) {
				t.Errorf("entries %+v at %d, want %+v at %d", h.Entries, h.DataStart, c.want, 8+len(c.header))
			}
		})
	}
}

// TestSection: an entry's section reader reads exactly its bytes from the file.
func TestSection(t *testing.T) {
	header := `{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}`
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(append(b, header...), 1, 2, 3, 4, 5)
	r := bytes.NewReader(b)
	h, err := ReadHeader(r, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{{1, 2, 3}, {4, 5}} {
		got, err := io.ReadAll(h.Section(r, h.Entries[i]))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("tensor %q: %v %v, want %v", h.Entries[i].Name, got, err, want)
		}
	}
}
